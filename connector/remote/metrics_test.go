package remote

import (
	"errors"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// TestBreakerMetrics: each dialed peer's breaker is reported, open once
// the peer keeps refusing. (The process turns Breakers into
// pushlog_breaker_state{component="link",breaker=PEER}: 2 for open;
// cmd/internal/metrics tests that exposition.)
func TestBreakerMetrics(t *testing.T) {
	cn := startNode(t, "conn", "", func(c *Config) { c.BreakerOpen = time.Hour })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if n := len(cn.Breakers()); n != 0 {
		t.Fatalf("%d breaker series before any peer", n)
	}
	for range DefaultBreakerFailures {
		if _, err := cn.CheckUAID(ctx5(t), addr, testUAID); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	want := map[string]gobreaker.State{addr: gobreaker.StateOpen}
	if got := cn.Breakers(); !maps.Equal(got, want) {
		t.Fatalf("breakers %v, want %v", got, want)
	}
}
