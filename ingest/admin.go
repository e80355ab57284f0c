package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/broadcasts"
)

// The admin API changes broadcasts ("megaphone") on the push listener,
// shaped like Megaphone's own API so its tooling works against pushlog:
//
//	PUT  /v1/broadcasts/<id>   body: the version as text (Megaphone: PUT
//	                           /v1/broadcasts/<broadcaster>/<channel>)
//	POST /v1/broadcasts        body: {"broadcasts":{"<id>":"<version>",...}}
//
// Both need "Authorization: Bearer <AdminConfig.Token>" (compared in
// constant time); without a configured token they answer 403. A change is
// written to <namespace>.broadcasts (source admin) and answered 200 once
// durable; every connector node then tells its subscribed clients.

// Defaults of AdminConfig.
const (
	DefaultAdminMaxBody = 64 << 10
	adminWriteTimeout   = 10 * time.Second
)

// AdminConfig configures the admin API.
type AdminConfig struct {
	// Token is the bearer token of the admin API; "" turns it off (403).
	Token string
	// MaxBody bounds a request body in bytes (default 64 KiB).
	MaxBody int64
}

// Results of pushlog_ingest_admin_requests_total.
var adminResults = []string{"ok", "off", "unauthorized", "invalid", "too_large", "error"}

type adminAPI struct {
	s       *Server
	token   [32]byte // SHA-256 of the token: equal lengths for the constant-time compare
	on      bool
	maxBody int64
	results map[string]prometheus.Counter
}

// adminRoutes mounts the admin API on e (called once, from routes).
func (s *Server) adminRoutes(e *echo.Echo) {
	a := &adminAPI{s: s, token: sha256.Sum256([]byte(s.cfg.Admin.Token)), on: s.cfg.Admin.Token != "", maxBody: s.cfg.Admin.MaxBody}
	if a.maxBody <= 0 {
		a.maxBody = DefaultAdminMaxBody
	}
	a.registerMetrics(s.cfg.Metrics)
	e.PUT("/v1/broadcasts/*", a.guard(a.put))
	e.POST("/v1/broadcasts", a.guard(a.post))
}

func (a *adminAPI) registerMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_ingest_admin_requests_total",
		Help: "Requests to the admin API (broadcasts), by result (ok, off: no admin token configured, unauthorized, invalid, too_large, error: not written).",
	}, []string{"result"})
	if err := reg.Register(vec); err != nil {
		a.s.log.Warn("admin API metrics not registered", "err", err)
		return
	}
	a.results = make(map[string]prometheus.Counter, len(adminResults))
	for _, r := range adminResults {
		a.results[r] = vec.WithLabelValues(r)
	}
}

func (a *adminAPI) count(result string) {
	if c, ok := a.results[result]; ok {
		c.Inc()
	}
}

// guard checks the bearer token, bounds the body and counts the result.
func (a *adminAPI) guard(next func(echo.Context, []byte) (map[string]string, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		res, err := a.serve(c, next)
		a.count(res)
		return err
	}
}

func (a *adminAPI) serve(c echo.Context, next func(echo.Context, []byte) (map[string]string, error)) (string, error) {
	if !a.on {
		return "off", newError(http.StatusForbidden, errnoInvalidAuth, "The admin API is off: no admin token is configured")
	}
	if !a.authorized(c.Request().Header.Get(echo.HeaderAuthorization)) {
		c.Response().Header().Set("WWW-Authenticate", "Bearer")
		return "unauthorized", unauthorized("Missing or wrong admin bearer token")
	}
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, a.maxBody+1))
	if err != nil {
		return "invalid", badRequest(errnoUnknown, "Could not read the body")
	}
	if int64(len(body)) > a.maxBody {
		return "too_large", newError(http.StatusRequestEntityTooLarge, errnoPayloadTooLarge, "Body too large")
	}
	set, err := next(c, body)
	if err != nil {
		return "invalid", badRequest(errnoUnknown, err.Error())
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), adminWriteTimeout)
	defer cancel()
	if err := broadcasts.Write(ctx, a.s.cfg.Producer, a.s.cfg.Names, set, "admin"); err != nil {
		a.s.log.Warn("admin: broadcasts not written", "err", err)
		return "error", unavailable("Broadcasts not written; retry", 5)
	}
	a.s.log.Info("admin: broadcasts written", "ids", len(set))
	return "ok", c.JSON(http.StatusOK, map[string]any{"code": http.StatusOK, "broadcasts": set})
}

// authorized compares the bearer token in constant time.
func (a *adminAPI) authorized(header string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1
}

// put is Megaphone's PUT: the id is the rest of the path, the body the
// version.
func (a *adminAPI) put(c echo.Context, body []byte) (map[string]string, error) {
	id := c.Param("*")
	version := strings.TrimSpace(string(body))
	if err := schema.ValidBroadcastID(id); err != nil {
		return nil, err
	}
	if err := schema.ValidBroadcastVersion(version); err != nil {
		return nil, err
	}
	return map[string]string{id: version}, nil
}

// post sets several broadcasts at once (all or none).
func (a *adminAPI) post(_ echo.Context, body []byte) (map[string]string, error) {
	set, err := parseAdminBroadcasts(body)
	if err != nil {
		return nil, err
	}
	return set, nil
}

// parseAdminBroadcasts decodes {"broadcasts":{"id":"version",...}} and
// checks every entry and the number of ids.
func parseAdminBroadcasts(body []byte) (map[string]string, error) {
	var req struct {
		Broadcasts map[string]string `json:"broadcasts"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errors.New(`want {"broadcasts":{"<id>":"<version>",...}}`)
	}
	if len(req.Broadcasts) == 0 {
		return nil, errors.New(`"broadcasts" is missing or empty`)
	}
	if len(req.Broadcasts) > schema.MaxBroadcasts {
		return nil, errors.New("too many broadcasts in one request")
	}
	for id, v := range req.Broadcasts {
		if err := schema.ValidBroadcastID(id); err != nil {
			return nil, err
		}
		if err := schema.ValidBroadcastVersion(v); err != nil {
			return nil, err
		}
	}
	return req.Broadcasts, nil
}
