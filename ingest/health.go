package ingest

import (
	"context"
	"net/http"
	"sort"

	"github.com/labstack/echo/v4"
)

// heartbeatBody is the JSON of /__heartbeat__ and /health.
type heartbeatBody struct {
	Status         string            `json:"status"` // "OK" or "ERROR"
	Version        string            `json:"version"`
	Checks         map[string]string `json:"checks"` // name -> "OK" or the error
	CircuitBreaker string            `json:"circuit_breaker"`
	Roles          any               `json:"roles,omitempty"`
	Readiness      map[string]string `json:"readiness,omitempty"` // name -> "OK" or why not yet
}

// handleHeartbeat runs every configured check: 200 when all pass, else 503.
func (s *Server) handleHeartbeat(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.HealthTimeout)
	defer cancel()
	body := heartbeatBody{
		Status:         "OK",
		Version:        s.cfg.Version.Version,
		Checks:         make(map[string]string, len(s.cfg.Health)),
		CircuitBreaker: s.breaker.State().String(),
	}
	if s.cfg.Roles != nil {
		body.Roles = s.cfg.Roles()
	}
	names := make([]string, 0, len(s.cfg.Health))
	for name := range s.cfg.Health {
		names = append(names, name)
	}
	sort.Strings(names)
	status := http.StatusOK
	for _, name := range names {
		if err := s.cfg.Health[name](ctx); err != nil {
			body.Checks[name] = "ERROR: " + err.Error()
			body.Status = "ERROR"
			status = http.StatusServiceUnavailable
			continue
		}
		body.Checks[name] = "OK"
	}
	for name, check := range s.cfg.Readiness {
		if body.Readiness == nil {
			body.Readiness = make(map[string]string, len(s.cfg.Readiness))
		}
		body.Readiness[name] = "OK"
		if err := check(ctx); err != nil {
			body.Readiness[name] = "NOT READY: " + err.Error()
		}
	}
	if status != http.StatusOK {
		s.log.Warn("heartbeat failing", "checks", body.Checks)
	}
	return c.JSON(status, body)
}

// handleLBHeartbeat answers load balancers: the process is up.
func (s *Server) handleLBHeartbeat(c echo.Context) error {
	return c.JSONBlob(http.StatusOK, []byte("{}"))
}

func (s *Server) handleVersion(c echo.Context) error {
	return c.JSON(http.StatusOK, s.cfg.Version)
}
