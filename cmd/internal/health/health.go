// Package health serves the Dockerflow endpoints (/__heartbeat__,
// /__lbheartbeat__, /__version__) on listeners of roles that have no HTTP
// API of their own: the WebSocket listener of a connector and the
// --metrics-addr listener of a projector. The checks are built in cmd
// from what each role needs, so no role imports another.
package health

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"time"
)

// Paths are the Dockerflow endpoints Handler answers.
var Paths = []string{"/__heartbeat__", "/__lbheartbeat__", "/__version__"}

// DefaultTimeout bounds one heartbeat's checks together.
const DefaultTimeout = 3 * time.Second

// Check is nil when the part it checks works.
type Check func(ctx context.Context) error

// Config says what a listener's heartbeat covers.
type Config struct {
	// Checks must all pass for /__heartbeat__ to answer 200 (else 503):
	// what the roles behind this listener cannot work without.
	Checks map[string]Check
	// Readiness is shown ("OK" or why not) but never fails the heartbeat:
	// parts the role waits for without being broken (ClickHouse for the
	// analytics projector, which catches up once it answers).
	Readiness map[string]Check
	// Roles, when set, is shown as "roles" (the supervisor's view).
	Roles func() any
	// Version is the body of /__version__; VersionString its "version".
	Version       any
	VersionString string
	Timeout       time.Duration // default DefaultTimeout
	Logger        *slog.Logger  // default: discard
}

// Body is the JSON of /__heartbeat__ (the same fields as ingest's).
type Body struct {
	Status    string            `json:"status"` // "OK" or "ERROR"
	Version   string            `json:"version"`
	Checks    map[string]string `json:"checks"` // name -> "OK" or "ERROR: why"
	Roles     any               `json:"roles,omitempty"`
	Readiness map[string]string `json:"readiness,omitempty"` // name -> "OK" or "NOT READY: why"
}

// Handler answers the Dockerflow endpoints for GET and HEAD; any other
// path or method is 404/405.
func Handler(cfg Config) http.Handler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /__heartbeat__", func(w http.ResponseWriter, r *http.Request) {
		status, body := Run(r.Context(), cfg)
		if status != http.StatusOK {
			cfg.Logger.Warn("heartbeat failing", "checks", body.Checks)
		}
		writeJSON(w, status, body)
	})
	mux.HandleFunc("GET /__lbheartbeat__", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET /__version__", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, cfg.Version)
	})
	return mux
}

// Run runs every check within cfg.Timeout: 200 when all pass, else 503.
func Run(ctx context.Context, cfg Config) (int, Body) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body := Body{Status: "OK", Version: cfg.VersionString, Checks: make(map[string]string, len(cfg.Checks))}
	if cfg.Roles != nil {
		body.Roles = cfg.Roles()
	}
	status := http.StatusOK
	for _, name := range sortedKeys(cfg.Checks) {
		if err := cfg.Checks[name](ctx); err != nil {
			body.Checks[name] = "ERROR: " + err.Error()
			body.Status = "ERROR"
			status = http.StatusServiceUnavailable
			continue
		}
		body.Checks[name] = "OK"
	}
	for _, name := range sortedKeys(cfg.Readiness) {
		if body.Readiness == nil {
			body.Readiness = make(map[string]string, len(cfg.Readiness))
		}
		body.Readiness[name] = "OK"
		if err := cfg.Readiness[name](ctx); err != nil {
			body.Readiness[name] = "NOT READY: " + err.Error()
		}
	}
	return status, body
}

// IsPath reports whether path is one of the Dockerflow endpoints.
func IsPath(path string) bool {
	for _, p := range Paths {
		if p == path {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]Check) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
