package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sony/gobreaker/v2"
)

func TestBreakersShareOneSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	state := gobreaker.StateClosed
	err := Register(reg,
		BreakerGauge("ingest", "kafka", func() gobreaker.State { return state }),
		BreakerGauge("analytics", "clickhouse", func() gobreaker.State { return gobreaker.StateOpen }),
		Breakers("link", func() map[string]gobreaker.State {
			return map[string]gobreaker.State{"10.0.0.1:7000": gobreaker.StateHalfOpen}
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	state = gobreaker.StateOpen
	want := `
# HELP pushlog_breaker_state Circuit breaker state by breaker: 0 closed, 1 half-open, 2 open.
# TYPE pushlog_breaker_state gauge
pushlog_breaker_state{breaker="10.0.0.1:7000",component="link"} 1
pushlog_breaker_state{breaker="clickhouse",component="analytics"} 2
pushlog_breaker_state{breaker="kafka",component="ingest"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), BreakerStateName); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterNil(t *testing.T) {
	if err := Register(nil, BreakerGauge("c", "x", func() gobreaker.State { return 0 })); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterDuplicate(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := func() prometheus.Collector { return BreakerGauge("c", "x", func() gobreaker.State { return 0 }) }
	if err := Register(reg, g(), g()); err == nil {
		t.Fatal("duplicate registration accepted")
	}
}

func TestBreakerValue(t *testing.T) {
	for s, want := range map[gobreaker.State]float64{gobreaker.StateClosed: 0, gobreaker.StateHalfOpen: 1, gobreaker.StateOpen: 2} {
		if got := BreakerValue(s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}
