package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errb); code != 0 {
		t.Errorf("help: exit %d, want 0", code)
	}
	if !strings.Contains(out.String(), "serve") {
		t.Errorf("help does not list serve:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), `unknown command "frobnicate"`) || !strings.Contains(errb.String(), "serve") {
		t.Errorf("unknown command: stderr lacks the error or the list:\n%s", errb.String())
	}
	if code := run(context.Background(), nil, io.Discard, io.Discard); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	errb.Reset()
	if code := run(context.Background(), []string{"help", "serve"}, io.Discard, &errb); code != 0 || !strings.Contains(errb.String(), "--http") && !strings.Contains(errb.String(), "-http") {
		t.Errorf("help serve: exit %d, output:\n%s", code, errb.String())
	}
}

func TestEnvName(t *testing.T) {
	for name, want := range map[string]string{"http": "FLOODGATE_HTTP", "log-level": "FLOODGATE_LOG_LEVEL", "shutdown-timeout": "FLOODGATE_SHUTDOWN_TIMEOUT"} {
		if got := envName(name); got != want {
			t.Errorf("envName(%q) = %q, want %q", name, got, want)
		}
	}
}

// defaultAdmin is what the admin flags give by default.
var defaultAdmin = adminConfig{addr: "127.0.0.1:8082"}

func TestParseServe(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want serveConfig
		err  bool
	}{
		{"defaults", nil, nil, serveConfig{http: "127.0.0.1:8080", grpc: "127.0.0.1:8081", logFormat: "text", logLevel: slog.LevelInfo, shutdownTimeout: 10 * time.Second, admin: defaultAdmin, stack: defaultStack}, false},
		{"environment", nil, map[string]string{"FLOODGATE_HTTP": ":9000", "FLOODGATE_LOG_LEVEL": "debug", "FLOODGATE_LOG_FORMAT": "json", "FLOODGATE_SHUTDOWN_TIMEOUT": "3s"},
			serveConfig{http: ":9000", grpc: "127.0.0.1:8081", logFormat: "json", logLevel: slog.LevelDebug, shutdownTimeout: 3 * time.Second, admin: defaultAdmin, stack: defaultStack}, false},
		{"flag wins", []string{"--http", "127.0.0.1:0", "--log-level", "warn"}, map[string]string{"FLOODGATE_HTTP": ":9000", "FLOODGATE_LOG_LEVEL": "debug"},
			serveConfig{http: "127.0.0.1:0", grpc: "127.0.0.1:8081", logFormat: "text", logLevel: slog.LevelWarn, shutdownTimeout: 10 * time.Second, admin: defaultAdmin, stack: defaultStack}, false},
		{"bad env level", nil, map[string]string{"FLOODGATE_LOG_LEVEL": "loud"}, serveConfig{}, true},
		{"bad format", []string{"--log-format", "xml"}, nil, serveConfig{}, true},
		{"bad timeout", []string{"--shutdown-timeout", "0s"}, nil, serveConfig{}, true},
		{"stray argument", []string{"now"}, nil, serveConfig{}, true},
		{"unknown flag", []string{"--grpcc", "x"}, nil, serveConfig{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errb bytes.Buffer
			got, err := parseServe(tt.args, &errb, env(tt.env))
			if tt.err {
				if err == nil || errb.Len() == 0 {
					t.Errorf("err %v, stderr %q: want an error reported", err, errb.String())
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestOpenStore(t *testing.T) {
	st, err := openStore(context.Background(), "memory")
	if err != nil {
		t.Fatalf("memory: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("closing memory store: %v", err)
	}
	for _, url := range []string{"nosuch://x", "", "memory://somewhere"} {
		if st, err := openStore(context.Background(), url); err == nil {
			st.Close()
			t.Errorf("openStore(%q): no error", url)
		}
	}
}
