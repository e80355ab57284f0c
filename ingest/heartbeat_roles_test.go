package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestHeartbeatRoles: the process's other roles are shown in the heartbeat
// for information; a failing one does not change its status.
func TestHeartbeatRoles(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Roles = func() any {
			return map[string]any{"channel-projector": map[string]any{"running": false, "restarts": 3}}
		}
	})
	rr := e.do(http.MethodGet, "/__heartbeat__", nil, nil)
	if rr.Code != http.StatusOK {
		t.Fatalf("heartbeat %d: %s", rr.Code, rr.Body)
	}
	var m struct {
		Status string                    `json:"status"`
		Roles  map[string]map[string]any `json:"roles"`
	}
	if err := json.Unmarshal(rr.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Status != "OK" || m.Roles["channel-projector"]["restarts"] != float64(3) {
		t.Fatalf("heartbeat: %s", rr.Body)
	}
}

// TestHeartbeatReadiness: readiness (the gone set catching up) is shown in
// the heartbeat without changing its status, and pushes are served.
func TestHeartbeatReadiness(t *testing.T) {
	var ready atomic.Bool
	e := newEnv(t, func(c *Config) {
		c.Readiness = map[string]func(context.Context) error{"gone-set": func(context.Context) error {
			if !ready.Load() {
				return errors.New("catching up")
			}
			return nil
		}}
	})
	for _, tc := range []struct {
		ready bool
		want  string
	}{{false, "NOT READY: catching up"}, {true, "OK"}} {
		ready.Store(tc.ready)
		rr := e.do(http.MethodGet, "/__heartbeat__", nil, nil)
		var m struct {
			Status    string            `json:"status"`
			Readiness map[string]string `json:"readiness"`
		}
		if err := json.Unmarshal(rr.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if rr.Code != http.StatusOK || m.Status != "OK" || m.Readiness["gone-set"] != tc.want {
			t.Fatalf("ready %v: heartbeat %d %s", tc.ready, rr.Code, rr.Body)
		}
		path := e.endpoint(testUAID, testChannel, nil)
		if rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
			t.Fatalf("ready %v: push %d %s", tc.ready, rr.Code, rr.Body)
		}
	}
}
