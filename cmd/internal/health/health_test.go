package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("no broker answers") }
	slow := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	tests := []struct {
		name       string
		cfg        Config
		path       string
		method     string
		wantStatus int
		wantBody   []string
	}{
		{"all checks pass", Config{Checks: map[string]Check{"kafka": ok}, VersionString: "v1"}, "/__heartbeat__", "GET", 200,
			[]string{`"status":"OK"`, `"kafka":"OK"`, `"version":"v1"`}},
		{"a failing check is 503", Config{Checks: map[string]Check{"kafka": down, "roles": ok}}, "/__heartbeat__", "GET", 503,
			[]string{`"status":"ERROR"`, `"kafka":"ERROR: no broker answers"`, `"roles":"OK"`}},
		{"a slow check times out", Config{Checks: map[string]Check{"kafka": slow}, Timeout: 20 * time.Millisecond}, "/__heartbeat__", "GET", 503,
			[]string{`deadline exceeded`}},
		{"readiness never fails it", Config{Checks: map[string]Check{"kafka": ok}, Readiness: map[string]Check{"clickhouse": down}}, "/__heartbeat__", "GET", 200,
			[]string{`"clickhouse":"NOT READY: no broker answers"`}},
		{"roles shown", Config{Roles: func() any { return map[string]bool{"connector": true} }}, "/__heartbeat__", "GET", 200,
			[]string{`"roles":{"connector":true}`}},
		{"lbheartbeat ignores checks", Config{Checks: map[string]Check{"kafka": down}}, "/__lbheartbeat__", "GET", 200, []string{`{}`}},
		{"version", Config{Version: map[string]string{"commit": "abc"}}, "/__version__", "GET", 200, []string{`"commit":"abc"`}},
		{"HEAD works", Config{}, "/__lbheartbeat__", "HEAD", 200, nil},
		{"POST is refused", Config{}, "/__heartbeat__", "POST", 405, nil},
		{"other paths 404", Config{}, "/__nope__", "GET", 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Handler(tt.cfg).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			for _, s := range tt.wantBody {
				if !strings.Contains(rec.Body.String(), s) {
					t.Errorf("body %s lacks %s", rec.Body, s)
				}
			}
		})
	}
}

func TestProbeURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"127.0.0.1:8082", "http://127.0.0.1:8082/__heartbeat__", ""},
		{"http://h:1", "http://h:1/__heartbeat__", ""},
		{"http://h:1/", "http://h:1/__heartbeat__", ""},
		{"https://h/__lbheartbeat__", "https://h/__lbheartbeat__", ""},
		{" http://h:1/__version__ ", "http://h:1/__version__", ""},
		{"", "", "no URL"},
		{"ftp://h/", "", "http(s)"},
		{"http://", "", "no host"},
		{"http://h:1/%zz", "", "invalid"},
	}
	for _, tt := range tests {
		got, err := ProbeURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func FuzzProbeURL(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8082", "http://h:1/x", "https://[::1]:9/", "::", "http://%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ProbeURL(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			t.Fatalf("%q -> %q", s, u)
		}
	})
}

func TestProbe(t *testing.T) {
	up := Config{Checks: map[string]Check{"kafka": func(context.Context) error { return nil }}}
	down := Config{Checks: map[string]Check{"kafka": func(context.Context) error { return errors.New("broker gone") }}}
	huge := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(200)
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	})
	tests := []struct {
		name    string
		h       http.Handler
		wantErr string
		want    string
	}{
		{"healthy", Handler(up), "", "200 OK OK"},
		{"unhealthy names the failing check", Handler(down), "kafka: ERROR: broker gone", ""},
		{"not JSON but 200", huge, "", "200 OK"},
		{"404", http.NotFoundHandler(), "404", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.h)
			defer srv.Close()
			line, err := Probe(t.Context(), srv.Client(), srv.URL+"/__heartbeat__")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(line, tt.want) {
				t.Fatalf("%q, %v; want %q", line, err, tt.want)
			}
		})
	}
	if _, err := Probe(t.Context(), http.DefaultClient, "http://127.0.0.1:1/__heartbeat__"); err == nil {
		t.Error("nothing listening: no error")
	}
}

func TestRunBodyJSON(t *testing.T) {
	status, body := Run(t.Context(), Config{Checks: map[string]Check{"b": func(context.Context) error { return nil }}})
	b, _ := json.Marshal(body)
	if status != 200 || !strings.Contains(string(b), `"checks":{"b":"OK"}`) {
		t.Errorf("%d %s", status, b)
	}
}
