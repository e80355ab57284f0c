package console

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLiveSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushlog_ingest_requests_total"}, []string{"status", "errno"})
	deliveries := prometheus.NewCounter(prometheus.CounterOpts{Name: "pushlog_connector_deliveries_total"})
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushlog_connector_acks_total"}, []string{"code"})
	conns := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pushlog_connector_connections"})
	produce := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pushlog_ingest_produce_seconds", Buckets: []float64{.001, .01, .1, 1}})
	reg.MustRegister(reqs, deliveries, acks, conns, produce)

	s := newSampler(reg, 3)
	t0 := time.Unix(1000, 0)
	s.sampleOnce(t0)
	reqs.WithLabelValues("201", "0").Add(20)
	reqs.WithLabelValues("410", "103").Add(2)
	deliveries.Add(10)
	acks.WithLabelValues("100").Add(6)
	acks.WithLabelValues("102").Add(4)
	conns.Set(3)
	for range 100 {
		produce.Observe(0.005) // in the (.001, .01] bucket
	}
	s.sampleOnce(t0.Add(2 * time.Second))
	s.sampleOnce(t0.Add(4 * time.Second)) // nothing happened

	ans := buildLive(s.snapshot(), 2*time.Second)
	if len(ans.T) != 2 || ans.T[0] != 1002 {
		t.Fatalf("t %v", ans.T)
	}
	rate := func(chart, label string, i int) *float64 {
		for _, sr := range ans.Charts[chart].Series {
			if sr.Label == label {
				return sr.Values[i]
			}
		}
		t.Fatalf("no series %s/%s in %+v", chart, label, ans.Charts[chart])
		return nil
	}
	for _, tc := range []struct {
		chart, label string
		i            int
		want         float64
	}{
		{"pushes", "201/0", 0, 10},
		{"pushes", "201/0", 1, 0},
		{"pushes", "410/103", 0, 1},
		{"deliveries", "deliveries", 0, 5},
		{"deliveries", "acks", 0, 5},
	} {
		if got := rate(tc.chart, tc.label, tc.i); got == nil || *got != tc.want {
			t.Errorf("%s %s [%d] = %v, want %v", tc.chart, tc.label, tc.i, got, tc.want)
		}
	}
	p50 := rate("latency", "produce p50", 0)
	if p50 == nil || math.Abs(*p50-5.5) > 0.01 { // linear in (1ms, 10ms]: 1 + 9*0.5
		t.Fatalf("produce p50 = %v ms, want 5.5", p50)
	}
	if v := rate("latency", "produce p99", 1); v != nil {
		t.Fatalf("p99 without observations = %v, want null", *v)
	}
	if ans.Totals["pushes"]["201/0"] != 20 || ans.Totals["deliveries"]["acks"] != 10 || ans.Gauges["connections"] != 3 {
		t.Fatalf("totals %v gauges %v", ans.Totals, ans.Gauges)
	}
	if _, err := json.Marshal(ans); err != nil {
		t.Fatalf("not JSON-encodable (NaN?): %v", err)
	}
	// History is bounded.
	s.sampleOnce(t0.Add(6 * time.Second))
	if n := len(s.snapshot()); n != 3 {
		t.Fatalf("%d samples kept, want 3", n)
	}
}

func TestQuantile(t *testing.T) {
	upper := []float64{1, 2, 4, math.Inf(1)}
	snap := func(cum ...uint64) histSnap { return histSnap{upper: upper, cum: cum, count: cum[len(cum)-1]} }
	zero := snap(0, 0, 0, 0)
	for _, tc := range []struct {
		name string
		q    float64
		prev histSnap
		cur  histSnap
		want float64
		ok   bool
	}{
		{"no observations", 0.5, zero, zero, 0, false},
		{"all in first bucket", 0.5, zero, snap(10, 10, 10, 10), 0.5, true},
		{"second bucket", 0.5, zero, snap(0, 10, 10, 10), 1.5, true},
		{"delta only", 0.5, snap(10, 10, 10, 10), snap(10, 20, 20, 20), 1.5, true},
		{"in +Inf bucket", 0.99, zero, snap(0, 0, 0, 5), 4, true},
		{"mismatched buckets", 0.5, histSnap{}, snap(1, 1, 1, 1), 0, false},
	} {
		got, ok := quantile(tc.q, tc.prev, tc.cur)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: %v %v, want %v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
