package ingest

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestLBHeartbeatRunsNoChecks (issue 11 finding 8): /__lbheartbeat__ says
// only that the process answers; it runs no dependency check, so a failing
// or slow dependency never takes ingest out of a load balancer's rotation.
func TestLBHeartbeatRunsNoChecks(t *testing.T) {
	var calls atomic.Int64
	e := newEnv(t, func(c *Config) {
		c.Health = map[string]func(context.Context) error{
			"kafka": func(context.Context) error { calls.Add(1); return errors.New("down") },
		}
	})
	for range 3 {
		if rr := e.do(http.MethodGet, "/__lbheartbeat__", nil, nil); rr.Code != http.StatusOK || rr.Body.String() != "{}" {
			t.Fatalf("lbheartbeat: %d %q", rr.Code, rr.Body)
		}
	}
	if calls.Load() != 0 {
		t.Fatalf("lbheartbeat ran %d checks", calls.Load())
	}
	if rr := e.do(http.MethodGet, "/__heartbeat__", nil, nil); rr.Code != http.StatusServiceUnavailable || calls.Load() != 1 {
		t.Fatalf("heartbeat: %d after %d checks", rr.Code, calls.Load())
	}
}
