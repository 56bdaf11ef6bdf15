package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
)

// readCheck reads a /v1/check body. It decodes field by field so that every
// problem names the field by its full path ("limits[1].window"), unknown
// fields included. On failure it returns the problem and its status: 413
// for a body over MaxBodyBytes, 400 otherwise.
func readCheck(w http.ResponseWriter, r *http.Request) (CheckRequest, *Problem, int) {
	var req CheckRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, &Problem{Error: fmt.Sprintf("body: larger than %d bytes", mbe.Limit)}, http.StatusRequestEntityTooLarge
		}
		return req, &Problem{Error: fmt.Sprintf("body: %v", err)}, http.StatusBadRequest
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, &Problem{Error: "body: empty, want a JSON object"}, http.StatusBadRequest
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return req, &Problem{Error: fmt.Sprintf("body: malformed JSON at byte %d: %v", se.Offset, se)}, http.StatusBadRequest
		}
		return req, &Problem{Error: "body: truncated JSON"}, http.StatusBadRequest
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, &Problem{Error: "body: want one JSON object, found more after it"}, http.StatusBadRequest
	}
	p := object(raw, "", fields{
		"key":         str(&req.Key),
		"cost":        func(raw json.RawMessage, path string) *Problem { return optInt(&req.Cost, raw, path) },
		"lease":       str(&req.Lease),
		"release":     boolean(&req.Release),
		"consistency": str(&req.Consistency),
		"limit": func(raw json.RawMessage, path string) *Problem {
			if isNull(raw) {
				return nil
			}
			req.Limit = new(LimitSpec)
			return limitSpec(req.Limit, raw, path)
		},
		"limits": func(raw json.RawMessage, path string) *Problem {
			if isNull(raw) {
				return nil
			}
			var elems []json.RawMessage
			if err := json.Unmarshal(raw, &elems); err != nil {
				return typeProblem(path, "an array of limits")
			}
			if len(elems) > MaxLimits {
				return &Problem{Error: fmt.Sprintf("%s: %d limits: want 1 to %d", path, len(elems), MaxLimits), Field: path}
			}
			req.Limits = make([]LimitSpec, len(elems))
			for i, e := range elems {
				if p := limitSpec(&req.Limits[i], e, fmt.Sprintf("%s[%d]", path, i)); p != nil {
					return p
				}
			}
			return nil
		},
	})
	if p != nil {
		return req, p, http.StatusBadRequest
	}
	return req, nil, 0
}

// limitSpec decodes one limit object at path.
func limitSpec(s *LimitSpec, raw json.RawMessage, path string) *Problem {
	return object(raw, path, fields{
		"algorithm": str(&s.Algorithm),
		"quota":     integer(&s.Quota),
		"window":    str(&s.Window),
		"burst":     integer(&s.Burst),
	})
}

// fields maps each known field of an object to its decoder, which gets the
// field's raw value and full path.
type fields map[string]func(raw json.RawMessage, path string) *Problem

// object decodes the JSON object raw at path with one decoder per field, in
// field-name order so the first problem reported is deterministic.
func object(raw json.RawMessage, path string, known fields) *Problem {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		if path == "" {
			return &Problem{Error: "body: want a JSON object"}
		}
		return typeProblem(path, "an object")
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fp := join(path, name)
		dec, ok := known[name]
		if !ok {
			return &Problem{Error: fmt.Sprintf("%s: unknown field", fp), Field: fp}
		}
		if p := dec(m[name], fp); p != nil {
			return p
		}
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func typeProblem(path, want string) *Problem {
	return &Problem{Error: fmt.Sprintf("%s: want %s", path, want), Field: path}
}

func str(dst *string) func(json.RawMessage, string) *Problem {
	return func(raw json.RawMessage, path string) *Problem {
		if json.Unmarshal(raw, dst) != nil {
			return typeProblem(path, "a string")
		}
		return nil
	}
}

func integer(dst *int64) func(json.RawMessage, string) *Problem {
	return func(raw json.RawMessage, path string) *Problem {
		if json.Unmarshal(raw, dst) != nil {
			return &Problem{Error: fmt.Sprintf("%s: want an integer, got %s", path, clip(raw)), Field: path}
		}
		return nil
	}
}

func optInt(dst **int64, raw json.RawMessage, path string) *Problem {
	if isNull(raw) {
		return nil
	}
	var v int64
	if p := integer(&v)(raw, path); p != nil {
		return p
	}
	*dst = &v
	return nil
}

func boolean(dst *bool) func(json.RawMessage, string) *Problem {
	return func(raw json.RawMessage, path string) *Problem {
		if json.Unmarshal(raw, dst) != nil {
			return typeProblem(path, "true or false")
		}
		return nil
	}
}

// clip shortens a raw value for an error message.
func clip(raw json.RawMessage) string {
	const n = 40
	s := string(bytes.TrimSpace(raw))
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
