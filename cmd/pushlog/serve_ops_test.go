package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sony/gobreaker/v2"
)

func TestBanner(t *testing.T) {
	tests := []struct {
		name     string
		cfg      serveConfig
		embedded bool
		bound    map[string]string
		want     []string
		not      []string
	}{
		{"embedded, analytics off", serveConfig{Roles: []string{"ingest", "connector", "projector"}, DataDir: "/d", NodeID: "n1", PublicURL: "http://127.0.0.1:8082", KafkaBrokers: []string{"127.0.0.1:4444"}},
			true, map[string]string{listenerIngest: "127.0.0.1:8082", listenerWS: "127.0.0.1:8080"},
			[]string{"roles           ingest, connector, projector", "push API        http://127.0.0.1:8082", "websocket       ws://127.0.0.1:8080/", "data directory  /d",
				"embedded at 127.0.0.1:4444", "/d/serve.json", "analytics       off: start ClickHouse and pass --clickhouse-addr", "pushlog health 127.0.0.1:8082"},
			[]string{"metrics"}},
		{"external kafka, projector with analytics", serveConfig{Roles: []string{"projector"}, DataDir: "/d", NodeID: "n2", Namespace: "ns", KafkaBrokers: []string{"k:9092"}, ClickHouseAddr: "ch:9000", ClickHouseDB: "db"},
			false, map[string]string{listenerMetrics: "0.0.0.0:9100"},
			[]string{"metrics         http://0.0.0.0:9100/metrics", "kafka           k:9092 namespace ns", "analytics       on: ClickHouse ch:9000 database db", "pushlog health 0.0.0.0:9100"},
			[]string{"push API", "websocket", "serve.json"}},
		{"ingest with analytics elsewhere", serveConfig{Roles: []string{"ingest"}, DataDir: "/d", PublicURL: "https://push.example.com", TLSCert: "c", KafkaBrokers: []string{"k:1"}, ClickHouseAddr: "ch:9000"},
			false, map[string]string{listenerIngest: "[::]:443"},
			[]string{"push API        https://[::]:443  (public URL https://push.example.com)", "analytics       projected by the process with the projector role"},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newServeOps(&tt.cfg, nil, nil, slog.New(slog.DiscardHandler))
			for k, v := range tt.bound {
				o.listening(k, v)
			}
			var buf bytes.Buffer
			writeBanner(&buf, o.bannerLines(tt.embedded))
			for _, s := range tt.want {
				if !strings.Contains(buf.String(), s) {
					t.Errorf("banner lacks %q:\n%s", s, buf.String())
				}
			}
			for _, s := range tt.not {
				if strings.Contains(buf.String(), s) {
					t.Errorf("banner has %q:\n%s", s, buf.String())
				}
			}
			if n := strings.Count(buf.String(), "\n"); n > 12 {
				t.Errorf("banner has %d lines, want a short one", n)
			}
		})
	}
}

func TestAnnounceWritesRuntimeOnlyForEmbedded(t *testing.T) {
	for _, embedded := range []bool{true, false} {
		dir := t.TempDir()
		cfg := serveConfig{Roles: []string{"ingest"}, DataDir: dir, Namespace: "ns", KafkaBrokers: []string{"127.0.0.1:1"}, ClickHouseAddr: "ch:1", ClickHouseDB: "d"}
		o := newServeOps(&cfg, nil, nil, slog.New(slog.DiscardHandler))
		o.listening(listenerIngest, "127.0.0.1:2")
		remove := o.announce(embedded, io.Discard)
		info, err := findServe(dir)
		if embedded != (err == nil) {
			t.Fatalf("embedded %v: findServe %v", embedded, err)
		}
		if embedded && (info.Namespace != "ns" || info.HTTPAddr != "127.0.0.1:2" || info.ClickHouseAddr != "ch:1" || info.ClickHouseDB != "d" || !info.Embedded) {
			t.Errorf("runtime info %+v", info)
		}
		remove()
		if _, err := findServe(dir); err == nil {
			t.Error("file left after a clean stop")
		}
	}
}

func TestServeHealthHandler(t *testing.T) {
	sup, err := newSupervisor(nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sup.setRunning("connector", true)
	sup.setRunning("channel-projector", true)
	cfg := serveConfig{Roles: []string{"projector"}, ClickHouseAddr: "ch:9000"}
	o := newServeOps(&cfg, nil, sup, slog.New(slog.DiscardHandler))
	kafkaErr := error(nil)
	get := func(h http.Handler) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/__heartbeat__", nil))
		return rec.Code, rec.Body.String()
	}
	handler := func(roles ...string) http.Handler {
		h := o.healthHandlerWith(func(context.Context) error { return kafkaErr }, roles...)
		return h
	}
	if code, body := get(handler("connector")); code != 200 || !strings.Contains(body, `"roles":"OK"`) || !strings.Contains(body, "analytics projector has not started") {
		t.Errorf("healthy: %d %s", code, body)
	}
	ch := &fakeClickHouse{state: gobreaker.StateClosed}
	o.setClickHouse(ch)
	if code, body := get(handler("connector")); code != 200 || !strings.Contains(body, `"clickhouse":"OK"`) {
		t.Errorf("ClickHouse up: %d %s", code, body)
	}
	ch.failing = true // failing before the breaker opens
	if code, body := get(handler("connector")); code != 200 || !strings.Contains(body, "ClickHouse ch:9000 does not answer (circuit breaker closed)") {
		t.Errorf("ClickHouse failing must not fail the heartbeat: %d %s", code, body)
	}
	ch.state = gobreaker.StateOpen
	if code, body := get(handler("connector")); code != 200 || !strings.Contains(body, "circuit breaker open") {
		t.Errorf("ClickHouse down must not fail the heartbeat: %d %s", code, body)
	}
	kafkaErr = errors.New("no broker")
	if code, body := get(handler()); code != 503 || !strings.Contains(body, `"kafka":"ERROR: no broker"`) {
		t.Errorf("kafka down: %d %s", code, body)
	}
	kafkaErr = nil
	sup.failed("channel-projector", errors.New("bad record"))
	if code, body := get(handler(o.processRoles()...)); code != 503 || !strings.Contains(body, "channel-projector restarting") {
		t.Errorf("role down: %d %s", code, body)
	}
	if code, _ := get(handler("connector")); code != 200 {
		t.Errorf("another role's failure fails the connector's heartbeat: %d", code)
	}
	rec := httptest.NewRecorder()
	handler().ServeHTTP(rec, httptest.NewRequest("GET", "/__version__", nil))
	if !strings.Contains(rec.Body.String(), `"source":"https://github.com/pushlog/pushlog"`) {
		t.Errorf("version: %s", rec.Body.String())
	}
}

type fakeClickHouse struct {
	state   gobreaker.State
	failing bool
}

func (f *fakeClickHouse) BreakerState() gobreaker.State { return f.state }
func (f *fakeClickHouse) Failing() bool                 { return f.failing }
