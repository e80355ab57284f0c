package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthCmd(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"OK","checks":{}}`)) })
	failing := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(503)
		_, _ = w.Write([]byte(`{"status":"ERROR","checks":{"kafka":"ERROR: down"}}`))
	})
	plain, tlsSrv, bad := httptest.NewServer(ok), httptest.NewTLSServer(ok), httptest.NewServer(failing)
	defer plain.Close()
	defer tlsSrv.Close()
	defer bad.Close()
	tests := []struct {
		name string
		cmd  healthCmd
		err  string
	}{
		{"healthy, host:port", healthCmd{URL: strings.TrimPrefix(plain.URL, "http://"), Timeout: 2 * time.Second, Quiet: true}, ""},
		{"failing check", healthCmd{URL: bad.URL, Timeout: 2 * time.Second}, "kafka: ERROR: down"},
		{"self-signed without --insecure", healthCmd{URL: tlsSrv.URL, Timeout: 2 * time.Second}, "certificate"},
		{"self-signed with --insecure", healthCmd{URL: tlsSrv.URL, Timeout: 2 * time.Second, Insecure: true, Quiet: true}, ""},
		{"bad URL", healthCmd{URL: "ftp://x", Timeout: time.Second}, "http(s)"},
		{"bad timeout", healthCmd{URL: plain.URL, Timeout: 0}, "--timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd.Run(t.Context())
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("err %v, want %q", err, tt.err)
			}
		})
	}
}
