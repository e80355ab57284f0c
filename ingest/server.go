// Package ingest is pushlog's HTTP push API (RFC 8030 sending side, RFC 8292
// VAPID): it authenticates a push, validates its headers and appends a
// MessageAccepted event to Kafka, answering 201 only once the event is
// durable. It also serves DELETE /m/{id} and the health endpoints.
//
// Everything a sender controls is bounded before it is stored: the body,
// the crypto headers together, the VAPID token and its sub, and the encoded
// record, whose worst case New checks against MaxEvent (below Kafka's
// default max.message.bytes). Kafka failures open a breaker that probes
// every OpenTimeout (breaker.go); a push whose append outlives
// ProduceTimeout answers 503 but may be written later, so a retry of it
// (same subscription, byte-identical body) is answered with the original's
// Location from a bounded, per-process index (dedup.go).
package ingest

import (
	"cmp"
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

	// DefaultMaxCryptoHeaders bounds Encryption + Crypto-Key (+
	// Encryption-Key) together, in bytes as received. Real aesgcm senders
	// need about 300 (salt, rs, keyid, dh and a p256ecdsa key).
	DefaultMaxCryptoHeaders = 1024
	// DefaultMaxVAPIDSub bounds the VAPID sub claim, stored in every event.
	DefaultMaxVAPIDSub = 256
	// DefaultMaxVAPIDToken bounds the VAPID JWT; real ones are 250-500
	// bytes. Longer tokens are refused before any parsing.
	DefaultMaxVAPIDToken = 4096
	// DefaultVAPIDCacheBytes bounds the verified-JWT cache.
	DefaultVAPIDCacheBytes = 16 << 20
	// DefaultMaxEvent bounds an encoded MessageAccepted record (key, value,
	// headers). The worst case of the other limits must fit in it (checked
	// by New), and every record is checked before it is produced.
	DefaultMaxEvent = 64 << 10
	// MaxEventLimit is the largest MaxEvent: Kafka's default
	// max.message.bytes is 1048588 and kgo's default ProducerBatchMaxBytes
	// 1000012; a record must fit in one batch with room to spare.
	MaxEventLimit = 1_000_000
	// eventOverhead bounds everything in a MessageAccepted record but the
	// body, the crypto headers and the sub: key, ids, channel, topic, key
	// hash, TTL, urgency, encoding name, protobuf tags and record headers.
	eventOverhead = 1024
	// DefaultDedupEntries bounds the retry index (about 128 bytes each:
	// 12.8 MB).
	DefaultDedupEntries = 100_000
	// DefaultBreakerProbeInterval is how often an open breaker lets a
	// produce through to probe Kafka; also the Retry-After while open.
	DefaultBreakerProbeInterval = 500 * time.Millisecond
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
	// OpenTimeout is the probe interval: while open, one produce is let
	// through every OpenTimeout to probe Kafka, and the first success
	// closes the breaker. Retry-After while open is OpenTimeout rounded up
	// to whole seconds (default 500ms: Retry-After 1).
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes may be in flight at once
	// (default 4): a probe stuck on a dead broker for the produce timeout
	// does not hold the next ones back.
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
	// encrypted, so incompressible). kgo.RecordDeliveryTimeout at
	// ProduceTimeout fails unsent records on time. Each breaker probe
	// forces a metadata refresh, so the producer finds a partition's new
	// leader without waiting out kgo's MetadataMinAge (5s by default).
	Producer *kgo.Client
	// Partitions is the partition count of the topics (schema.Partition).
	Partitions int32
	// Gone may be nil: nothing is gone.
	Gone GoneChecker
	// Bridges enables autopush's mobile registration API (bridge_api.go).
	Bridges BridgeConfig
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
	// Roles, when set, is shown as "roles" in the heartbeat: the process's
	// other roles (restarts, last error), informational only: they do not
	// change the heartbeat's status.
	Roles func() any
	// Readiness checks are shown as "readiness" in the heartbeat ("OK" or
	// the error), informational only: ingest serves while they fail (the
	// gone set catching up: pushes are accepted meanwhile).
	Readiness map[string]func(ctx context.Context) error
	Version   VersionInfo
	// VAPIDCacheBytes bounds the verified-JWT cache in bytes, tokens
	// included (default 16 MiB).
	VAPIDCacheBytes int64
	// MaxVAPIDToken bounds the JWT in bytes (default 4096): longer is 401
	// errno 109 before any parsing.
	MaxVAPIDToken int
	// MaxVAPIDSub bounds the VAPID sub claim in bytes (default 256): longer
	// is 401 errno 109, never stored.
	MaxVAPIDSub int
	// MaxCryptoHeaders bounds the Encryption, Crypto-Key and
	// Encryption-Key headers together in bytes (default 1024): larger is
	// 413 errno 104, as autopush answers a message whose data and crypto
	// headers exceed its limit.
	MaxCryptoHeaders int
	// MaxEvent bounds an encoded message record in bytes (default 64 KiB,
	// at most MaxEventLimit); New refuses limits whose worst case does not
	// fit, and a record beyond it is 413 errno 104, never produced.
	MaxEvent int
	// DedupEntries bounds the index that recognises a retried push
	// (default 100000 entries, about 128 bytes each).
	DedupEntries    int
	ShutdownTimeout time.Duration // graceful shutdown in Run (default 10s)
	Logger          *slog.Logger
	// Now is the clock (nil = time.Now); tests freeze it.
	Now func() time.Time
	// Metrics registers the push API's series (requests by status and
	// errno, produce latency); nil: no metrics. The breaker's state is
	// BreakerState, reported where the process's registry is built.
	Metrics prometheus.Registerer
	// MetricsHandler, when set, is served at GET /metrics (promhttp).
	MetricsHandler http.Handler
	// Admin configures the admin API (broadcasts; admin.go).
	Admin AdminConfig
	// AutopushKeys, when set, also opens endpoint tokens minted by Mozilla
	// autopush with these keys (a migration: autopush.go).
	AutopushKeys *AutopushKeys
	// Quota configures the per-sender token buckets (quota.go).
	Quota QuotaConfig
	// Receipts configures RFC 8030 push receipts (receipts.go).
	Receipts ReceiptsConfig
	// Status answers GET /m/{id} (status.go); nil: 503.
	Status StatusSource
	// Report configures GET /v1/report (report.go).
	Report ReportConfig
}

// Server is the ingest HTTP API.
type Server struct {
	cfg      Config
	base     string // PublicURL without a trailing slash
	log      *slog.Logger
	now      func() time.Time
	vapid    *vapidVerifier
	breaker  *breaker
	dedup    *dedupIndex
	openSecs int // Retry-After while the breaker is open
	bodyPool sync.Pool
	waiters  sync.Pool // *produceWaiter (push.go)
	echo     *echo.Echo
	met      *ingestMetrics // nil without Config.Metrics
	autopush autopushCounts // pushes with autopush tokens (autopush.go)
	quota    *quotas        // per-sender token buckets (quota.go)
	receipts *receipts      // RFC 8030 push receipts (receipts.go)
	senders  *senderMetrics // status and report series (status.go)
	bridges  *bridgeAPI     // mobile registration API; nil when off (bridge_api.go)

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
	s := &Server{
		cfg:  cfg,
		base: strings.TrimRight(cfg.PublicURL, "/"),
		log:  cfg.Logger,
		now:  cfg.Now,
	}
	s.vapid = newVAPIDVerifier(audiences(cfg.PublicURL), s.now, cfg.VAPIDCacheBytes, cfg.MaxVAPIDSub)
	s.dedup = newDedupIndex(cfg.DedupEntries, s.now)
	s.openSecs = int((cfg.Breaker.OpenTimeout + time.Second - 1) / time.Second)
	s.breaker = newBreaker(int(cfg.Breaker.FailureThreshold), cfg.Breaker.OpenTimeout, int(cfg.Breaker.HalfOpenRequests), s.now,
		func(from, to gobreaker.State) {
			// Probes flip open <-> half-open every interval while Kafka
			// is down: only closing and opening are news.
			log := s.log.Debug
			if from == gobreaker.StateClosed || to == gobreaker.StateClosed {
				log = s.log.Warn
			}
			log("circuit breaker state change", "breaker", "kafka-produce", "from", from.String(), "to", to.String())
		})
	s.quota = newQuotas(cfg.Quota)
	rcpt, err := newReceipts(cfg.Receipts, cfg.Metrics, s.now)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	s.receipts = rcpt
	s.senders = newSenderMetrics()
	if s.bridges, err = newBridgeAPI(cfg.Bridges, cfg.Metrics); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	met, err := newIngestMetrics(cfg.Metrics, append(append(append(s.gauges(), s.autopush.collectors()...), s.quota.collectors()...), s.senders.collectors()...))
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
	c.withDefaults()
	if c.MaxTTL < time.Second {
		return fmt.Errorf("MaxTTL must be at least 1s, got %s", c.MaxTTL)
	}
	if c.MaxBody < MinMaxBody {
		return fmt.Errorf("MaxBody must be at least %d bytes (RFC 8030), got %d", MinMaxBody, c.MaxBody)
	}
	if c.ProduceTimeout < 0 {
		return fmt.Errorf("ProduceTimeout must be positive, got %s", c.ProduceTimeout)
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("MaxInFlight must be positive, got %d", c.MaxInFlight)
	}
	if c.Breaker.OpenTimeout < 0 {
		return fmt.Errorf("Breaker.OpenTimeout must be positive, got %s", c.Breaker.OpenTimeout)
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if err := c.Quota.validate(); err != nil {
		return err
	}
	for name, check := range c.Health {
		if check == nil {
			return fmt.Errorf("health check %q is nil", name)
		}
	}
	for name, check := range c.Readiness {
		if check == nil {
			return fmt.Errorf("readiness check %q is nil", name)
		}
	}
	return nil
}

// withDefaults fills every unset setting (zero; a non-positive health or
// shutdown timeout) with its default.
func (c *Config) withDefaults() {
	c.MaxTTL = cmp.Or(c.MaxTTL, DefaultMaxTTL)
	c.MaxBody = cmp.Or(c.MaxBody, DefaultMaxBody)
	c.ProduceTimeout = cmp.Or(c.ProduceTimeout, DefaultProduceTimeout)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.Breaker.FailureThreshold = cmp.Or(c.Breaker.FailureThreshold, 5)
	c.Breaker.OpenTimeout = cmp.Or(c.Breaker.OpenTimeout, DefaultBreakerProbeInterval)
	c.Breaker.HalfOpenRequests = cmp.Or(c.Breaker.HalfOpenRequests, 4)
	c.MaxCryptoHeaders = cmp.Or(c.MaxCryptoHeaders, DefaultMaxCryptoHeaders)
	c.MaxVAPIDSub = cmp.Or(c.MaxVAPIDSub, DefaultMaxVAPIDSub)
	c.MaxVAPIDToken = cmp.Or(c.MaxVAPIDToken, DefaultMaxVAPIDToken)
	c.MaxEvent = cmp.Or(c.MaxEvent, DefaultMaxEvent)
	c.DedupEntries = cmp.Or(c.DedupEntries, DefaultDedupEntries)
	c.VAPIDCacheBytes = cmp.Or(c.VAPIDCacheBytes, DefaultVAPIDCacheBytes)
	c.HealthTimeout = cmp.Or(max(c.HealthTimeout, 0), DefaultHealthTimeout)
	c.ShutdownTimeout = cmp.Or(max(c.ShutdownTimeout, 0), DefaultShutdownTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// validateLimits fills the size limits' defaults and checks that the
// largest message they allow fits in MaxEvent (issue 10 finding 3: sizes
// must not bypass the body limit).
func (c *Config) validateLimits() error {
	for name, v := range map[string]int64{"MaxCryptoHeaders": int64(c.MaxCryptoHeaders), "MaxVAPIDSub": int64(c.MaxVAPIDSub),
		"MaxVAPIDToken": int64(c.MaxVAPIDToken), "MaxEvent": int64(c.MaxEvent), "DedupEntries": int64(c.DedupEntries),
		"VAPIDCacheBytes": c.VAPIDCacheBytes} {
		if v < 0 {
			return fmt.Errorf("%s must be positive, got %d", name, v)
		}
	}
	if c.MaxEvent > MaxEventLimit {
		return fmt.Errorf("MaxEvent %d is above %d bytes (Kafka's default max.message.bytes less batch overhead)", c.MaxEvent, MaxEventLimit)
	}
	if worst := c.MaxBody + c.MaxCryptoHeaders + c.MaxVAPIDSub + eventOverhead; worst > c.MaxEvent {
		return fmt.Errorf("MaxBody %d + MaxCryptoHeaders %d + MaxVAPIDSub %d + %d bytes of metadata = %d exceed MaxEvent %d",
			c.MaxBody, c.MaxCryptoHeaders, c.MaxVAPIDSub, eventOverhead, worst, c.MaxEvent)
	}
	return nil
}

// audiences returns the VAPID aud values accepted for publicURL: its origin
// as browsers and Node serialise it (lowercase, default port dropped) and,
// when it differs, scheme://host[:port] exactly as written, which is what
// senders that echo the endpoint's netloc (Python's urlparse) send. Never
// with a trailing slash (PROTOCOL.md §2).
func audiences(publicURL string) []string {
	u, _ := url.Parse(publicURL) // validated
	origin, _ := originOf(u)
	out := []string{origin}
	if literal := u.Scheme + "://" + u.Host; literal != origin {
		out = append(out, literal)
	}
	return out
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.receiptPushes(s.echo) }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.recoverMiddleware)
	e.POST("/wpush/v1/:token", s.counted(s.handlePush(1)))
	e.POST("/wpush/v2/:token", s.counted(s.handlePush(2)))
	e.POST("/wpush/:token", s.counted(s.handlePush(autopushLegacyVersion)))
	e.DELETE("/m/:id", s.counted(s.handleDelete))
	e.POST("/receipts", s.counted(s.handleCreateReceipts)) // receipts.go
	e.GET("/r/:token", s.handleReceipts)
	s.adminRoutes(e)
	s.senderRoutes(e)
	s.bridgeRoutes(e) // bridge_api.go
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
	// HTTP/2 on TLS (ALPN h2) and, without TLS, cleartext with prior
	// knowledge (h2c): RFC 8030 receipts use its server push
	// (receipts_stream.go), which net/http's HTTP/2 server implements
	// (http.Pusher).
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	if tlsCfg != nil {
		srv.TLSConfig = tlsCfg.Clone()
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	if s.receipts.enabled {
		go s.receipts.fold.sweepEvery(ctx, time.Minute) // the feed folds; this forgets
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
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
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
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
