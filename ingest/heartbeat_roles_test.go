package ingest

import (
	"encoding/json"
	"net/http"
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
