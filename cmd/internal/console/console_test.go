package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/cmd/ops"
)

const testToken = "0123456789abcdef-token"

func newTestConsole(t *testing.T, mod func(*Config)) (*Console, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Gatherer: reg,
		Metrics:  reg,
		Status: func(context.Context) (*ops.Status, error) {
			return &ops.Status{}, nil
		},
		Version: "test",
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

func get(t *testing.T, h http.Handler, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestAuth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token string
		auth  string
		want  int
	}{
		{"no token configured", "", "", http.StatusOK},
		{"no token configured ignores a header", "", "Bearer whatever", http.StatusOK},
		{"missing", testToken, "", http.StatusUnauthorized},
		{"bearer right", testToken, "Bearer " + testToken, http.StatusOK},
		{"bearer lower-case scheme", testToken, "bearer " + testToken, http.StatusOK},
		{"bearer wrong", testToken, "Bearer " + testToken + "x", http.StatusUnauthorized},
		{"bearer prefix", testToken, "Bearer " + testToken[:10], http.StatusUnauthorized},
		{"bearer empty", testToken, "Bearer ", http.StatusUnauthorized},
		{"basic right, any user", testToken, basic("ops", testToken), http.StatusOK},
		{"basic wrong password", testToken, basic(testToken, "nope"), http.StatusUnauthorized},
		{"basic not base64", testToken, "Basic !!!", http.StatusUnauthorized},
		{"basic without colon", testToken, "Basic " + base64.StdEncoding.EncodeToString([]byte(testToken)), http.StatusUnauthorized},
		{"unknown scheme", testToken, "Digest " + testToken, http.StatusUnauthorized},
		{"huge header", testToken, "Bearer " + strings.Repeat("a", 5000), http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestConsole(t, func(cfg *Config) { cfg.Token = tc.token })
			for _, path := range []string{"/", "/live", "/analytics", "/sender", "/api/overview", "/api/live", "/api/analytics", "/assets/app.js"} {
				rec := get(t, c.Handler(), path, map[string]string{"Authorization": tc.auth})
				if rec.Code != tc.want {
					t.Fatalf("%s: status %d, want %d: %s", path, rec.Code, tc.want, rec.Body)
				}
				if tc.want == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
					t.Fatalf("%s: 401 without a basic challenge: %v", path, rec.Header())
				}
			}
			wantRefusals := 0.0
			if tc.want == http.StatusUnauthorized {
				wantRefusals = 8
			}
			if got := testutil.ToFloat64(c.met.refusals.WithLabelValues("auth")); got != wantRefusals {
				t.Fatalf("auth refusals %v, want %v", got, wantRefusals)
			}
		})
	}
}

func TestNewRefusesShortToken(t *testing.T) {
	_, err := New(Config{Token: "short", Gatherer: prometheus.NewRegistry(), Status: func(context.Context) (*ops.Status, error) { return nil, nil }})
	if err == nil {
		t.Fatal("a 5-byte token was accepted")
	}
}

func TestNeedsToken(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8084": false,
		"127.0.0.2:1":    false,
		"[::1]:8084":     false,
		"localhost:8084": false,
		"LOCALHOST:1":    false,
		":8084":          true,
		"0.0.0.0:8084":   true,
		"[::]:8084":      true,
		"10.0.0.5:8084":  true,
		"example.com:80": true,
		"garbage":        true,
	} {
		if got := NeedsToken(addr); got != want {
			t.Errorf("NeedsToken(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestPagesAndHeaders(t *testing.T) {
	c, reg := newTestConsole(t, func(cfg *Config) { cfg.Version = "test <b>" })
	for _, tc := range []struct {
		path, wantType, wantBody string
		want                     int
	}{
		{"/", "text/html", `data-page="overview"`, 200},
		{"/live", "text/html", `<span id="version">test &lt;b&gt;</span>`, 200},
		{"/analytics", "text/html", `data-page="analytics"`, 200},
		{"/sender?sender=x", "text/html", `data-page="sender"`, 200},
		{"/assets/app.js", "javascript", "textContent", 200},
		{"/assets/style.css", "text/css", "", 200},
		{"/assets/vendor/uplot/uPlot.iife.min.js", "javascript", "uPlot", 200},
		{"/assets/vendor/uplot/LICENSE", "text/plain", "MIT", 200},
		{"/nope", "", "", 404},
		{"/api/nope", "", "", 404},
	} {
		rec := get(t, c.Handler(), tc.path, nil)
		if rec.Code != tc.want {
			t.Fatalf("%s: %d, want %d", tc.path, rec.Code, tc.want)
		}
		if !strings.Contains(rec.Header().Get("Content-Type"), tc.wantType) || !strings.Contains(rec.Body.String(), tc.wantBody) {
			t.Fatalf("%s: type %q, body %.200q", tc.path, rec.Header().Get("Content-Type"), rec.Body.String())
		}
		for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"} {
			if rec.Header().Get(h) == "" {
				t.Fatalf("%s: no %s header", tc.path, h)
			}
		}
	}
	// Read-only: no method but GET (and HEAD) is routed.
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec := httptest.NewRecorder()
		c.Handler().ServeHTTP(rec, httptest.NewRequest(m, "/api/overview", strings.NewReader("{}")))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("%s /api/overview: %d, want 405", m, rec.Code)
		}
	}
	if n := testutil.CollectAndCount(reg, "pushlog_console_requests_total"); n == 0 {
		t.Fatal("no pushlog_console_requests_total series")
	}
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("content type %q", rec.Header().Get("Content-Type"))
	}
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	return v
}

func f64(v float64) *float64 { return &v }

func TestOverview(t *testing.T) {
	st := &ops.Status{
		Nodes:  []ops.Node{{NodeID: "a", Partitions: []int32{0, 1}}, {NodeID: "b", Partitions: []int32{2}}},
		Owners: []ops.PartitionOwner{{Partition: 0, NodeID: "a"}, {Partition: 1, NodeID: "a"}, {Partition: 2, NodeID: "b"}},
		Groups: []ops.GroupLag{{Role: "connectors", Group: "pushlog-connectors", State: "Stable", Members: 2, Exists: true, Total: 7,
			Partitions: []ops.PartitionLag{{Topic: "t", Lag: 7}}}},
		Metrics: []ops.NodeMetrics{
			{URL: "http://a/metrics", NodeID: "a", Connections: f64(3), Pending: f64(5), Breakers: map[string]string{"ingest/kafka": "closed", "link/b": "half-open"}},
			{URL: "http://b/metrics", NodeID: "b", Connections: f64(4), Breakers: map[string]string{"ingest/kafka": "open", "link/b": "closed"}},
			{URL: "http://c/metrics", Error: "connection refused"},
		},
	}
	var fail atomic.Bool
	var calls atomic.Int32
	c, _ := newTestConsole(t, func(cfg *Config) {
		cfg.StatusTTL = time.Hour
		cfg.Status = func(context.Context) (*ops.Status, error) {
			calls.Add(1)
			if fail.Load() {
				return nil, errors.New("kafka: dial refused")
			}
			return st, nil
		}
	})
	ov := decode[overview](t, get(t, c.Handler(), "/api/overview", nil))
	if !ov.Kafka.OK || ov.Connections != 7 || ov.Pending != 5 || len(ov.Nodes) != 2 || len(ov.Owners) != 3 {
		t.Fatalf("overview %+v", ov)
	}
	if ov.Breakers["ingest/kafka"] != "open" || ov.Breakers["link/b"] != "half-open" {
		t.Fatalf("worst breaker states: %v", ov.Breakers)
	}
	if len(ov.Groups) != 1 || ov.Groups[0].Lag != 7 || ov.Groups[0].State != "Stable" {
		t.Fatalf("groups %+v", ov.Groups)
	}
	if ov.Process.OldestPendingAge != nil || len(ov.Process.HeadLag) != 0 {
		t.Fatalf("process figures without series: %+v", ov.Process)
	}
	if ov.ClickHouse.Configured || ov.ClickHouse.Hint == "" {
		t.Fatalf("clickhouse without an address: %+v", ov.ClickHouse)
	}
	// Cached: any number of pages costs one status per TTL.
	for range 5 {
		get(t, c.Handler(), "/api/overview", nil)
	}
	if calls.Load() != 1 {
		t.Fatalf("status fetched %d times, want 1", calls.Load())
	}

	c2, _ := newTestConsole(t, func(cfg *Config) {
		cfg.Status = func(context.Context) (*ops.Status, error) { return nil, errors.New("kafka: dial refused") }
	})
	ov = decode[overview](t, get(t, c2.Handler(), "/api/overview", nil))
	if ov.Kafka.OK || !strings.Contains(ov.Kafka.Error, "dial refused") {
		t.Fatalf("kafka down: %+v", ov.Kafka)
	}
}

// fakeAnalytics answers every query with fixed rows.
type fakeAnalytics struct {
	runs    atomic.Int32
	senders []string
	failing string
}

func (f *fakeAnalytics) Run(_ context.Context, q analytics.Query, o analytics.ReportOptions) (*analytics.Result, error) {
	f.runs.Add(1)
	f.senders = append(f.senders, o.Sender)
	if q.Name == f.failing {
		return nil, errors.New("boom")
	}
	switch q.Name {
	case "01_delivery_rate":
		return &analytics.Result{Query: q, Columns: []string{"sender", "accepted", "delivered", "redelivered", "acked", "nacked", "expired", "dropped", "deleted", "acked_pct"},
			Rows: [][]string{{"(all)", "6", "5", "0", "5", "0", "0", "1", "0", "83.3"}, {"mailto:a@example.com", "6", "5", "0", "5", "0", "0", "1", "0", "83.3"}}}, nil
	case "02_ack_latency":
		return &analytics.Result{Query: q, Columns: []string{"sender", "acks", "p50_ms", "p95_ms", "p99_ms", "avg_ms", "max_ms"},
			Rows: [][]string{{"(all)", "5", "12.5", "40", "41.2", "20", "42"}}}, nil
	}
	return &analytics.Result{Query: q, Columns: []string{"sender"}}, nil
}
func (f *fakeAnalytics) Ping(context.Context) error { return nil }
func (f *fakeAnalytics) Close() error               { return nil }

func TestOverviewProcessFigures(t *testing.T) {
	c, reg := newTestConsole(t, func(cfg *Config) {
		cfg.Status = func(context.Context) (*ops.Status, error) {
			return &ops.Status{Groups: []ops.GroupLag{{Role: "channels", Group: "ns-channels", Total: 9}, {Role: "analytics", Group: "ns-analytics"}}}, nil
		}
	})
	head := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pushlog_consumer_group_head_lag"}, []string{"group"})
	head.WithLabelValues("ns-channels").Set(4)
	oldest := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pushlog_owner_oldest_pending_age_seconds"})
	oldest.Set(12)
	delay := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pushlog_projector_delay_seconds", ConstLabels: prometheus.Labels{"projector": "analytics"}})
	delay.Set(1.5)
	reg.MustRegister(head, oldest, delay)
	c.sampler.sampleOnce(time.Now())
	ov := decode[overview](t, get(t, c.Handler(), "/api/overview", nil))
	if ov.Process.OldestPendingAge == nil || *ov.Process.OldestPendingAge != 12 || ov.Process.ProjectorDelay["analytics"] != 1.5 {
		t.Fatalf("process %+v", ov.Process)
	}
	if g := ov.Groups[0]; g.HeadLag == nil || *g.HeadLag != 4 || g.Lag != 9 {
		t.Fatalf("channels group %+v", g)
	}
	if ov.Groups[1].HeadLag != nil {
		t.Fatalf("analytics head lag without a series: %v", *ov.Groups[1].HeadLag)
	}
}

func TestAnalyticsNotConfigured(t *testing.T) {
	c, _ := newTestConsole(t, nil)
	ans := decode[analyticsAnswer](t, get(t, c.Handler(), "/api/analytics?range=1h", nil))
	if ans.Configured || !strings.Contains(ans.Hint, "--clickhouse-addr") {
		t.Fatalf("%+v", ans)
	}
}

func TestAnalytics(t *testing.T) {
	fake := &fakeAnalytics{}
	c, _ := newTestConsole(t, func(cfg *Config) { cfg.Analytics = fake })
	ans := decode[analyticsAnswer](t, get(t, c.Handler(), "/api/analytics?range=6h", nil))
	s := ans.Summary
	if !ans.Configured || s == nil || s.Accepted != 6 || s.Acked != 5 || s.AckedPct != 83.3 || s.Dropped != 1 || *s.P50ms != 12.5 || *s.P99ms != 41.2 {
		t.Fatalf("answer %+v summary %+v", ans, s)
	}
	if len(ans.Tables) != len(analyticsQueries) || ans.To.Sub(ans.From) != 6*time.Hour {
		t.Fatalf("tables %d, window %s", len(ans.Tables), ans.To.Sub(ans.From))
	}
	runs := fake.runs.Load()
	decode[analyticsAnswer](t, get(t, c.Handler(), "/api/analytics?range=6h", nil))
	if fake.runs.Load() != runs {
		t.Fatal("the same range ran the queries again within the cache TTL")
	}
	decode[analyticsAnswer](t, get(t, c.Handler(), "/api/analytics?range=7d&sender=mailto:a@example.com", nil))
	if last := fake.senders[len(fake.senders)-1]; last != "mailto:a@example.com" {
		t.Fatalf("sender filter %q", last)
	}
}

func TestAnalyticsOneQueryFails(t *testing.T) {
	fake := &fakeAnalytics{failing: "02_ack_latency"}
	c, reg := newTestConsole(t, func(cfg *Config) { cfg.Analytics = fake })
	ans := decode[analyticsAnswer](t, get(t, c.Handler(), "/api/analytics", nil))
	if ans.Summary.Accepted != 6 || ans.Summary.P50ms != nil || ans.Tables[1].Error == "" || ans.Tables[0].Error != "" {
		t.Fatalf("%+v", ans)
	}
	if got := testutil.ToFloat64(c.met.queries.WithLabelValues("error")); got != 1 {
		t.Fatalf("error queries %v", got)
	}
	_ = reg
}

func TestAnalyticsBounds(t *testing.T) {
	for _, tc := range []struct {
		name, query, reason string
		want                int
	}{
		{"range too long", "range=32d", "range", 400},
		{"range too short", "range=30s", "range", 400},
		{"range negative", "range=-1h", "range", 400},
		{"range garbage", "range=soon", "range", 400},
		{"range text too long", "range=" + strings.Repeat("1", 40) + "h", "range", 400},
		{"days garbage", "range=xd", "range", 400},
		{"sender too long", "sender=" + strings.Repeat("a", 257), "sender", 400},
		{"sender control char", "sender=a%0Ab", "sender", 400},
		{"sender not utf-8", "sender=%ff%fe", "sender", 400},
		{"ok days", "range=30d", "", 200},
		{"ok longest sender", "sender=" + strings.Repeat("a", 256), "", 200},
		{"ok quotes in sender", "sender=%27%3B%20DROP%20TABLE%20x", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestConsole(t, func(cfg *Config) { cfg.Analytics = &fakeAnalytics{} })
			rec := get(t, c.Handler(), "/api/analytics?"+tc.query, nil)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.reason != "" {
				if e := decode[apiError](t, rec); e.Error == "" {
					t.Fatal("no error text")
				}
				if got := testutil.ToFloat64(c.met.refusals.WithLabelValues(tc.reason)); got != 1 {
					t.Fatalf("%s refusals %v", tc.reason, got)
				}
			}
		})
	}
}

func TestAnalyticsRateLimit(t *testing.T) {
	fake := &fakeAnalytics{}
	c, _ := newTestConsole(t, func(cfg *Config) { cfg.Analytics = fake; cfg.AnalyticsRate = 0.001 })
	// Distinct senders miss the cache: the burst of 10 passes, then 429.
	codes := map[int]int{}
	for i := range 15 {
		rec := get(t, c.Handler(), "/api/analytics?sender=s"+string(rune('a'+i)), nil)
		codes[rec.Code]++
		if rec.Code == http.StatusTooManyRequests && rec.Header().Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[200] != 10 || codes[429] != 5 {
		t.Fatalf("codes %v, want 10×200 and 5×429", codes)
	}
	// A cached answer is served even while the limiter refuses.
	if rec := get(t, c.Handler(), "/api/analytics?sender=sa", nil); rec.Code != 200 {
		t.Fatalf("cached answer refused: %d", rec.Code)
	}
	if got := testutil.ToFloat64(c.met.refusals.WithLabelValues("rate")); got != 5 {
		t.Fatalf("rate refusals %v", got)
	}
}

func TestParseRange(t *testing.T) {
	max := 31 * 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1m", time.Minute, true},
		{"15m", 15 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"7d", 7 * 24 * time.Hour, true},
		{"31d", max, true},
		{"32d", 0, false},
		{"744h1s", 0, false},
		{"59s", 0, false},
		{"0d", 0, false},
		{"-5m", 0, false},
		{"d", 0, false},
		{"", 0, false},
		{"99999999999d", 0, false},
		{"1e3h", 0, false},
	} {
		got, err := parseRange(tc.in, max)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRange(%q) = %s, %v; want %s ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"1h", "7d", "-1d", "99999999999999999999d", "1.5h", "0x10d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseRange(s, 31*24*time.Hour)
		if err == nil && (d < minRange || d > 31*24*time.Hour) {
			t.Fatalf("parseRange(%q) = %s: out of bounds", s, d)
		}
	})
}

func FuzzRequestToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:p")), "Basic", "bearer  x ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := requestToken(h)
		if ok && tok == "" {
			t.Fatalf("requestToken(%q) accepted an empty token", h)
		}
		if len(h) > 1024 && ok {
			t.Fatal("oversized header accepted")
		}
	})
}

func FuzzCheckSender(f *testing.F) {
	for _, s := range []string{"mailto:a@example.com", "a\x00b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkSender(s) == nil && (len(s) > maxSenderBytes || strings.ContainsAny(s, "\x00\n\r")) {
			t.Fatalf("checkSender accepted %q", s)
		}
	})
}
