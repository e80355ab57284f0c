// Package ingest is pushlog's HTTP push API (RFC 8030 sending side, RFC 8292
// VAPID): it authenticates a push, validates its headers and appends a
// MessageAccepted event to Kafka, answering 201 only once the event is
// durable. It also serves DELETE /m/{id} and the health endpoints.
package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxTTL          = 30 * 24 * time.Hour
	DefaultMaxBody         = 5630 // autopush's limit
	MinMaxBody             = 4096 // RFC 8030 §7.2: at least 4096 bytes
	DefaultProduceTimeout  = 5 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultHealthTimeout   = 3 * time.Second
	DefaultMaxInFlight     = 10000
)

// GoneChecker answers 410 Gone from a local projection of registrations.
type GoneChecker interface {
	// Gone reports whether the channel was unregistered (410 errno 106) or its
	// UAID reset (410 errno 103).
	Gone(uaid, channelID string) (channelGone, uaidReset bool)
}

// BreakerConfig tunes the circuit breaker around Kafka produces.
type BreakerConfig struct {
	// FailureThreshold is the number of consecutive failed produces that
	// opens the breaker (default 5).
	FailureThreshold uint32
	// OpenTimeout is how long the breaker stays open before letting a probe
	// through (half-open); also the Retry-After given while open (default 10s).
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes may run while half-open (default 1).
	HalfOpenRequests uint32
}

// VersionInfo is the body of /__version__ (Dockerflow).
type VersionInfo struct {
	Source  string `json:"source"`
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Build   string `json:"build"`
}

// Config configures a Server.
type Config struct {
	// Names are the topic names (namespace); zero means schema.DefaultNames().
	Names schema.Names
	// PublicURL is the endpoint base, e.g. "https://push.example.com":
	// Location is PublicURL+"/m/"+id and the VAPID aud must equal its origin.
	PublicURL string
	Sealer    *schema.Sealer
	// Producer is an acks=all idempotent producer with kgo's default
	// partitioner (keyed records: murmur2, like schema.Partition), already
	// connected. Recommended: kgo.ProducerLinger(0) (concurrent requests
	// batch anyway; the 10ms default adds latency to every push) and
	// kgo.ProducerBatchCompression(kgo.NoCompression()) (bodies are
	// encrypted, so incompressible).
	Producer *kgo.Client
	// Partitions is the partition count of the topics (schema.Partition).
	Partitions int32
	// Gone may be nil: nothing is gone.
	Gone GoneChecker
	// MaxTTL clamps the TTL header (default 30 days).
	MaxTTL time.Duration
	// MaxBody is the largest accepted body in bytes (default 5630, >= 4096).
	MaxBody int
	// ProduceTimeout bounds the wait for Kafka per request (default 5s).
	ProduceTimeout time.Duration
	// MaxInFlight bounds the requests waiting on Kafka at once (default
	// 10000); beyond it requests get 503 at once, which keeps the records
	// buffered in the producer bounded.
	MaxInFlight int
	Breaker     BreakerConfig
	// Health checks are run by /__heartbeat__ and /health: 200 when all
	// pass, 503 otherwise.
	Health        map[string]func(ctx context.Context) error
	HealthTimeout time.Duration // per heartbeat (default 3s)
	Version       VersionInfo
	// VAPIDCacheSize bounds the verified-JWT cache (default 10000 entries).
	VAPIDCacheSize  int
	ShutdownTimeout time.Duration // graceful shutdown in Run (default 10s)
	Logger          *slog.Logger
	// Now is the clock (nil = time.Now); tests freeze it.
	Now func() time.Time
	// Metrics registers the push API's series (requests by status and
	// errno, produce latency, breaker state); nil: no metrics.
	Metrics prometheus.Registerer
	// MetricsHandler, when set, is served at GET /metrics (promhttp).
	MetricsHandler http.Handler
}

// Server is the ingest HTTP API.
type Server struct {
	cfg      Config
	base     string // PublicURL without a trailing slash
	log      *slog.Logger
	now      func() time.Time
	vapid    *vapidVerifier
	breaker  *gobreaker.CircuitBreaker[struct{}]
	openSecs int // Retry-After while the breaker is open
	bodyPool sync.Pool
	echo     *echo.Echo
	met      *ingestMetrics // nil without Config.Metrics

	// produceCalls counts produce attempts that reached Kafka (tests check
	// that an open breaker does not wait on Kafka).
	produceCalls atomic.Int64
	inFlight     atomic.Int64 // requests in produce (MaxInFlight)
}

// New validates cfg, fills defaults and builds the server.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("ingest config: %w", err)
	}
	if cfg.Names.Messages == "" {
		cfg.Names = schema.DefaultNames()
	}
	u, _ := url.Parse(cfg.PublicURL) // validated
	origin, _ := originOf(u)
	s := &Server{
		cfg:  cfg,
		base: strings.TrimRight(cfg.PublicURL, "/"),
		log:  cfg.Logger,
		now:  cfg.Now,
	}
	s.vapid = newVAPIDVerifier(origin, s.now, cfg.VAPIDCacheSize)
	s.openSecs = int((cfg.Breaker.OpenTimeout + time.Second - 1) / time.Second)
	s.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "kafka-produce",
		MaxRequests: cfg.Breaker.HalfOpenRequests,
		Timeout:     cfg.Breaker.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.Breaker.FailureThreshold
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errClientGone) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			s.log.Warn("circuit breaker state change", "breaker", name, "from", from.String(), "to", to.String())
		},
	})
	met, err := newIngestMetrics(cfg.Metrics, s.breaker.State)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	s.met = met
	size := cfg.MaxBody + 1
	s.bodyPool.New = func() any { b := make([]byte, size); return &b }
	s.echo = s.routes()
	return s, nil
}

func (c *Config) validate() error {
	if c.PublicURL == "" {
		return errors.New("missing PublicURL")
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil {
		return fmt.Errorf("PublicURL %q: %w", c.PublicURL, err)
	}
	if _, ok := originOf(u); !ok || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("PublicURL %q: want http(s)://host[:port][/path] without query, fragment or user info", c.PublicURL)
	}
	if c.Sealer == nil {
		return errors.New("missing Sealer")
	}
	if c.Producer == nil {
		return errors.New("missing Producer")
	}
	if c.Partitions <= 0 {
		return fmt.Errorf("partition count (Partitions) must be positive, got %d", c.Partitions)
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.MaxTTL < time.Second {
		return fmt.Errorf("MaxTTL must be at least 1s, got %s", c.MaxTTL)
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxBody < MinMaxBody {
		return fmt.Errorf("MaxBody must be at least %d bytes (RFC 8030), got %d", MinMaxBody, c.MaxBody)
	}
	if c.ProduceTimeout == 0 {
		c.ProduceTimeout = DefaultProduceTimeout
	}
	if c.ProduceTimeout < 0 {
		return fmt.Errorf("ProduceTimeout must be positive, got %s", c.ProduceTimeout)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("MaxInFlight must be positive, got %d", c.MaxInFlight)
	}
	if c.Breaker.FailureThreshold == 0 {
		c.Breaker.FailureThreshold = 5
	}
	if c.Breaker.OpenTimeout == 0 {
		c.Breaker.OpenTimeout = 10 * time.Second
	}
	if c.Breaker.OpenTimeout < 0 {
		return fmt.Errorf("Breaker.OpenTimeout must be positive, got %s", c.Breaker.OpenTimeout)
	}
	if c.Breaker.HalfOpenRequests == 0 {
		c.Breaker.HalfOpenRequests = 1
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	for name, check := range c.Health {
		if check == nil {
			return fmt.Errorf("health check %q is nil", name)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.echo }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.recoverMiddleware)
	e.POST("/wpush/v1/:token", s.counted(s.handlePush(1)))
	e.POST("/wpush/v2/:token", s.counted(s.handlePush(2)))
	e.DELETE("/m/:id", s.counted(s.handleDelete))
	get := []string{http.MethodGet, http.MethodHead}
	e.Match(get, "/__heartbeat__", s.handleHeartbeat)
	e.Match(get, "/health", s.handleHeartbeat)
	e.Match(get, "/__lbheartbeat__", s.handleLBHeartbeat)
	e.Match(get, "/__version__", s.handleVersion)
	if s.cfg.MetricsHandler != nil {
		e.Match(get, "/metrics", echo.WrapHandler(s.cfg.MetricsHandler))
	}
	return e
}

// recoverMiddleware turns a handler panic into a 500 in the JSON shape.
func (s *Server) recoverMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic in ingest handler", "path", c.Request().URL.Path, "panic", r)
				err = newError(http.StatusInternalServerError, errnoUnknown, "Internal server error")
			}
		}()
		return next(c)
	}
}

// Run serves on ln until ctx is done, then shuts down gracefully. tlsCfg nil
// means plain HTTP.
func (s *Server) Run(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			srv.TLSConfig = tlsCfg.Clone()
			errc <- srv.ServeTLS(ln, "", "") // certificates come from TLSConfig; enables h2
			return
		}
		errc <- srv.Serve(ln)
	}()
	s.log.Info("ingest listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil, "public_url", s.base)
	select {
	case err := <-errc:
		return fmt.Errorf("ingest serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shCtx)
	if serveErr := <-errc; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("ingest shutdown: %w", err)
	}
	return nil
}

// LoadTLS loads a PEM certificate/key file pair into a server *tls.Config
// (npm web-push only speaks HTTPS).
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair %s, %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}
