package admin

import (
	_ "embed"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Series is one metric series in a [StatsResponse]: a counter's or a
// gauge's value, or a histogram's (or summary's) count and sum.
type Series struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
	// Sum is set for histograms and summaries; Value is then their count.
	Sum *float64 `json:"sum,omitempty"`
}

// StatsResponse is the answer to GET /admin/v1/stats: every floodgate_*
// series of the metrics registry at one instant, for the dashboard, which
// turns counters into rates between two answers.
type StatsResponse struct {
	// Time is when the series were read, in Unix milliseconds.
	Time   int64    `json:"time"`
	Series []Series `json:"series"`
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	if h.gatherer == nil {
		writeError(w, http.StatusNotFound, "no metrics registry here")
		return
	}
	families, err := h.gatherer.Gather()
	if err != nil && len(families) == 0 {
		writeError(w, http.StatusInternalServerError, "reading the metrics: "+err.Error())
		return
	}
	if err != nil {
		h.logger.Warn("admin stats: some metrics could not be read", "err", err)
	}
	resp := StatsResponse{Time: h.now().UnixMilli(), Series: []Series{}}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "floodgate_") {
			continue
		}
		for _, m := range f.GetMetric() {
			s := Series{Name: name}
			if lp := m.GetLabel(); len(lp) > 0 {
				s.Labels = make(map[string]string, len(lp))
				for _, l := range lp {
					s.Labels[l.GetName()] = l.GetValue()
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				s.Value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.Value = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				sum := m.GetHistogram().GetSampleSum()
				s.Value, s.Sum = float64(m.GetHistogram().GetSampleCount()), &sum
			case dto.MetricType_SUMMARY:
				sum := m.GetSummary().GetSampleSum()
				s.Value, s.Sum = float64(m.GetSummary().GetSampleCount()), &sum
			default:
				s.Value = m.GetUntyped().GetValue()
			}
			resp.Series = append(resp.Series, s)
		}
	}
	sort.SliceStable(resp.Series, func(i, j int) bool { return resp.Series[i].Name < resp.Series[j].Name })
	writeJSON(w, http.StatusOK, resp)
}

//go:embed dashboard.html
var dashboardHTML []byte

// dashboard serves the dashboard's page. The page holds no data: it asks
// for the token and reads everything through the API with it, so it is the
// one path served without the token.
func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	http.ServeContent(w, r, "dashboard.html", time.Time{}, strings.NewReader(string(dashboardHTML)))
}
