// Package console is pushlog's built-in, read-only web console: an
// overview of the cluster (what `pushlog status` shows), live charts of
// this process's series and, when ClickHouse is configured, delivery
// analytics with a page per sender. Its pages, script and chart library
// (uPlot, vendored under assets/vendor) are embedded in the binary: it
// needs no network beyond its own listener.
//
// Every client is assumed hostile: the console only reads; ranges,
// sender strings and result rows are bounded; the expensive ClickHouse
// queries are cached, rate-limited and time-limited; a token guards it
// wherever it is not bound to loopback, compared in constant time.
package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/cmd/ops"
)

//go:embed assets
var assetFiles embed.FS

// MinTokenBytes is the shortest accepted token.
const MinTokenBytes = 16

// Config configures a console.
type Config struct {
	// Token, when set, is required on every request: as a bearer token
	// (Authorization: Bearer TOKEN) or as the password of HTTP basic auth
	// (any user name), which a browser asks for by itself.
	Token string
	// Gatherer is this process's registry: the live charts sample it.
	Gatherer prometheus.Gatherer
	// Metrics registers the console's own series (nil: none).
	Metrics prometheus.Registerer
	// Status returns the cluster status (ops.GetStatus with this
	// process's Kafka admin client).
	Status func(context.Context) (*ops.Status, error)
	// ClickHouseAddr and ClickHouseDB enable the analytics pages; an empty
	// address shows how to turn analytics on.
	ClickHouseAddr string
	ClickHouseDB   string
	// Analytics runs the dashboard queries (default: ClickHouse at
	// ClickHouseAddr); tests replace it.
	Analytics AnalyticsSource
	// Version is shown in the page header.
	Version string
	// SampleInterval is how often the live charts sample the registry
	// (default 2s); History how many samples they keep (default 300).
	SampleInterval time.Duration
	History        int
	// StatusTTL is how long one status answer is reused (default 3s):
	// any number of open pages costs Kafka one status per StatusTTL.
	StatusTTL time.Duration
	// MaxRange is the longest analytics range (default 31 days);
	// AnalyticsRate the analytics queries per second all clients together
	// may start (default 0.5, burst 10); answers are cached AnalyticsTTL
	// (default 10s); QueryTimeout bounds one page's queries (default 15s).
	MaxRange      time.Duration
	AnalyticsRate float64
	AnalyticsTTL  time.Duration
	QueryTimeout  time.Duration
	Logger        *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.SampleInterval <= 0 {
		c.SampleInterval = 2 * time.Second
	}
	if c.History <= 1 {
		c.History = 300
	}
	if c.StatusTTL <= 0 {
		c.StatusTTL = 3 * time.Second
	}
	if c.MaxRange <= 0 {
		c.MaxRange = 31 * 24 * time.Hour
	}
	if c.AnalyticsRate <= 0 {
		c.AnalyticsRate = 0.5
	}
	if c.AnalyticsTTL <= 0 {
		c.AnalyticsTTL = 10 * time.Second
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Console serves the pages and their JSON API.
type Console struct {
	cfg       Config
	tokenSum  [32]byte
	met       *consoleMetrics
	sampler   *sampler
	status    *cache[*ops.Status]
	analytics *analyticsService
	handler   http.Handler
}

// New builds a console; Run serves it.
func New(cfg Config) (*Console, error) {
	cfg = cfg.withDefaults()
	if cfg.Token != "" && len(cfg.Token) < MinTokenBytes {
		return nil, fmt.Errorf("console token: at least %d bytes", MinTokenBytes)
	}
	if cfg.Gatherer == nil || cfg.Status == nil {
		return nil, errors.New("console: Gatherer and Status are required")
	}
	met, err := newConsoleMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, met: met, tokenSum: sha256.Sum256([]byte(cfg.Token))}
	c.sampler = newSampler(cfg.Gatherer, cfg.History)
	c.status = newCache(cfg.StatusTTL, 10*time.Second, cfg.Status)
	c.analytics = newAnalyticsService(cfg, met)
	c.handler = c.routes()
	return c, nil
}

// Handler is the console's HTTP handler (auth included).
func (c *Console) Handler() http.Handler { return c.handler }

// Run samples the registry and serves ln until ctx ends.
func (c *Console) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           c.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      c.cfg.QueryTimeout + 10*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(c.cfg.Logger.Handler(), slog.LevelDebug),
	}
	go c.sampler.run(ctx, c.cfg.SampleInterval)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		c.analytics.close()
	}()
	c.cfg.Logger.Info("console listener", "addr", ln.Addr().String(), "auth", c.cfg.Token != "")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// NeedsToken reports whether a console bound to addr must have a token:
// everywhere but on a loopback address (127.0.0.0/8, ::1, localhost).
func NeedsToken(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// pages are the HTML pages by path; each loads app.js, which fills it
// from the JSON API.
var pages = map[string]string{
	"/":          "assets/index.html",
	"/live":      "assets/live.html",
	"/analytics": "assets/analytics.html",
	"/sender":    "assets/sender.html",
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	for path, file := range pages {
		pattern := "GET " + path
		if path == "/" {
			pattern = "GET /{$}"
		}
		mux.Handle(pattern, c.page(path, file))
	}
	static, _ := fs.Sub(assetFiles, "assets")
	mux.Handle("GET /assets/", c.count("assets", http.StripPrefix("/assets/", http.FileServerFS(static))))
	mux.Handle("GET /api/overview", c.count("api_overview", http.HandlerFunc(c.serveOverview)))
	mux.Handle("GET /api/live", c.count("api_live", http.HandlerFunc(c.serveLive)))
	mux.Handle("GET /api/analytics", c.count("api_analytics", http.HandlerFunc(c.serveAnalytics)))
	return c.secure(mux)
}

// page serves one embedded HTML page.
func (c *Console) page(name, file string) http.Handler {
	body, err := fs.ReadFile(assetFiles, file)
	if err != nil {
		panic(fmt.Sprintf("console: embedded page %s: %v", file, err)) // a build error, not input
	}
	body = bytes.Replace(body, []byte(`<span id="version"></span>`),
		[]byte(`<span id="version">`+html.EscapeString(c.cfg.Version)+`</span>`), 1)
	return c.count("page"+strings.ReplaceAll(name, "/", "_"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(body)
	}))
}

// secure checks the token and sets the headers every answer carries: the
// pages load only their own script and style, cannot be framed, and
// nothing is cached by a proxy.
func (c *Console) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if !c.authorized(r) {
			c.met.refusals.WithLabelValues("auth").Inc()
			h.Set("WWW-Authenticate", `Basic realm="pushlog console", charset="UTF-8"`)
			http.Error(w, "pushlog console: a token is required (Authorization: Bearer TOKEN, or basic auth with the token as password)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorized compares the request's token with the configured one in
// constant time (over fixed-size digests, so not even the length leaks).
func (c *Console) authorized(r *http.Request) bool {
	if c.cfg.Token == "" {
		return true
	}
	got, ok := requestToken(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], c.tokenSum[:]) == 1
}

// requestToken extracts the bearer token or basic-auth password.
func requestToken(header string) (string, bool) {
	const maxHeader = 1024
	if header == "" || len(header) > maxHeader {
		return "", false
	}
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	switch strings.ToLower(scheme) {
	case "bearer":
		return rest, rest != ""
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", false
		}
		_, pass, ok := strings.Cut(string(raw), ":")
		return pass, ok && pass != ""
	}
	return "", false
}

// count counts answers by handler and status code.
func (c *Console) count(name string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		c.met.requests.WithLabelValues(name, fmt.Sprint(sw.code)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// apiError is the JSON body of every refused API request.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// refuse answers a bad request with a JSON error and counts it.
func (c *Console) refuse(w http.ResponseWriter, code int, reason, msg string) {
	c.met.refusals.WithLabelValues(reason).Inc()
	writeJSON(w, code, apiError{Error: msg})
}

type consoleMetrics struct {
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec
	queries  *prometheus.CounterVec
}

func newConsoleMetrics(reg prometheus.Registerer) (*consoleMetrics, error) {
	m := &consoleMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_console_requests_total",
			Help: "Console requests answered, by handler and HTTP status code.",
		}, []string{"handler", "code"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_console_refusals_total",
			Help: "Console requests refused, by reason (auth, range, sender, rate, busy).",
		}, []string{"reason"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_console_analytics_queries_total",
			Help: "Analytics query sets the console ran on ClickHouse (cache misses), by result (ok, error).",
		}, []string{"result"}),
	}
	for _, r := range []string{"auth", "range", "sender", "rate", "busy"} {
		m.refusals.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.requests, m.refusals, m.queries} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("console metrics: %w", err)
		}
	}
	return m, nil
}
