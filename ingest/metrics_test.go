package ingest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sony/gobreaker/v2"
)

// TestMetrics: every push and delete answer is counted by status and
// errno, each durable produce is timed, and /metrics serves them.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e := newEnv(t, func(c *Config) {
		c.Metrics = reg
		c.MetricsHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	})
	const pushes = 3
	for range pushes {
		if rr := e.do(http.MethodPost, e.endpoint(testUAID, testChannel, nil), map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
			t.Fatalf("push: %d %s", rr.Code, rr.Body)
		}
	}
	if rr := e.do(http.MethodPost, e.endpoint(testUAID, testChannel, nil), nil, nil); rr.Code != http.StatusBadRequest {
		t.Fatalf("push without TTL: %d", rr.Code)
	}
	if rr := e.do(http.MethodPost, "/wpush/v1/garbage", map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusNotFound {
		t.Fatalf("bad token: %d", rr.Code)
	}
	want := `
# HELP pushlog_ingest_requests_total Push API requests (push and delete) by HTTP status and autopush errno (0 on success).
# TYPE pushlog_ingest_requests_total counter
pushlog_ingest_requests_total{errno="0",status="201"} 3
pushlog_ingest_requests_total{errno="0",status="204"} 0
pushlog_ingest_requests_total{errno="102",status="404"} 1
pushlog_ingest_requests_total{errno="111",status="400"} 1
pushlog_ingest_requests_total{errno="201",status="503"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_ingest_requests_total"); err != nil {
		t.Fatal(err)
	}
	// pushlog_breaker_state{breaker="kafka",component="ingest"} is built
	// from BreakerState by the process (cmd/internal/metrics tests its
	// exposition): 0, closed, here.
	if s := e.srv.BreakerState(); s != gobreaker.StateClosed {
		t.Fatalf("breaker state %s, want closed", s)
	}

	rr := e.do(http.MethodGet, "/metrics", nil, nil)
	if rr.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rr.Code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rr.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	h := families["pushlog_ingest_produce_seconds"]
	if h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() != pushes {
		t.Fatalf("produce histogram: %v", h)
	}
}

// TestNoMetrics: without a Registerer nothing is counted and /metrics is
// not a route.
func TestNoMetrics(t *testing.T) {
	e := newEnv(t)
	if e.srv.met != nil {
		t.Fatal("metrics without a Registerer")
	}
	if rr := e.do(http.MethodGet, "/metrics", nil, nil); rr.Code != http.StatusNotFound {
		t.Fatalf("/metrics without a handler: %d", rr.Code)
	}
}
