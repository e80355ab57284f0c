package remote

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBreakerMetrics: each dialed peer's breaker is a series, open (2)
// once the peer keeps refusing.
func TestBreakerMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cn := startNode(t, "conn", "", func(c *Config) { c.BreakerOpen = time.Hour; c.Metrics = reg })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if n, _ := testutil.GatherAndCount(reg, "pushlog_breaker_state"); n != 0 {
		t.Fatalf("%d breaker series before any peer", n)
	}
	for range DefaultBreakerFailures {
		if _, err := cn.CheckUAID(ctx5(t), addr, testUAID); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	want := `
# HELP pushlog_breaker_state Circuit breaker state by breaker: 0 closed, 1 half-open, 2 open.
# TYPE pushlog_breaker_state gauge
pushlog_breaker_state{breaker="` + addr + `",component="link"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_breaker_state"); err != nil {
		t.Fatal(err)
	}
}
