package proctest

import "testing"

func TestParseListening(t *testing.T) {
	tests := []struct {
		line, proto, addr string
		ok                bool
	}{
		{`time=2026-01-02T03:04:05.000Z level=INFO msg=listening protocol=http addr=127.0.0.1:40449`, "http", "127.0.0.1:40449", true},
		{`time=2026-01-02T03:04:05.000Z level=INFO msg=listening protocol=grpc addr=[::1]:81`, "grpc", "[::1]:81", true},
		{`time=x level=INFO msg=listening addr="127.0.0.1:1" protocol="http"`, "http", "127.0.0.1:1", true},
		{`{"time":"x","level":"INFO","msg":"listening","protocol":"http","addr":"127.0.0.1:5"}`, "http", "127.0.0.1:5", true},
		{`time=x level=INFO msg="store opened" store=memory`, "", "", false},
		{`time=x level=INFO msg="listening soon" protocol=http addr=1`, "", "", false},
		{`{"msg":"stopped","protocol":"http","addr":"x"}`, "", "", false},
		{`msg=listening protocol=http`, "", "", false},
		{``, "", "", false},
	}
	for _, tt := range tests {
		proto, addr, ok := parseListening([]byte(tt.line))
		if proto != tt.proto || addr != tt.addr || ok != tt.ok {
			t.Errorf("parseListening(%q) = %q, %q, %v; want %q, %q, %v", tt.line, proto, addr, ok, tt.proto, tt.addr, tt.ok)
		}
	}
}

func TestOutputSplitsLines(t *testing.T) {
	o := newOutput()
	line := "time=x level=INFO msg=listening protocol=http addr=127.0.0.1:9\n"
	_, ch := o.addr("http")
	for i := range len(line) {
		o.Write([]byte{line[i]})
	}
	select {
	case <-ch:
	default:
		t.Fatal("no change notified")
	}
	if a, _ := o.addr("http"); a != "127.0.0.1:9" {
		t.Errorf("addr %q, want 127.0.0.1:9", a)
	}
	if o.String() != line {
		t.Errorf("String() = %q, want %q", o.String(), line)
	}
}
