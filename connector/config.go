package connector

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// Config configures a connection node.
type Config struct {
	Names     schema.Names   // topic names; zero means schema.DefaultNames()
	NodeID    string         // this node's id (presence events)
	LinkAddr  string         // where owners reach this node; "" in single node
	PublicURL string         // endpoint base: PublicURL + "/wpush/v1/" + token (v2 with a key)
	Sealer    *schema.Sealer // seals endpoint tokens, opens message ids
	Producer  *kgo.Client    // acks=all producer
	Link      link.Link      // the owner of every UAID's partition

	HelloTimeout   time.Duration // default 5s: the first message must be a hello within this
	PingInterval   time.Duration // default 300s: a WebSocket Ping on a socket idle this long
	PongTimeout    time.Duration // default 30s: close when the Pong (or any data) does not follow
	MinClientPing  time.Duration // default 45s: clients sending `{}` pings more often are closed
	ProduceTimeout time.Duration // default 5s: bound on a synchronous produce
	LinkTimeout    time.Duration // default 5s: bound on CheckUAID and Attach
	ReadTimeout    time.Duration // default 10s: a message must be complete this long after its first byte
	WriteTimeout   time.Duration // default 10s: bound on one socket write

	// SendQueue bounds the notifications waiting for one socket (default
	// 1024). Past it the socket is closed: the messages stay pending at the
	// owner and are sent again on reconnect.
	SendQueue int
	// MaxMessage bounds a client message in bytes (default 16 KiB).
	MaxMessage int64

	// MaxChannels bounds the channels of a UAID (default 1000): a register
	// of a new channel past it is answered with status 413; the socket
	// stays open.
	MaxChannels int
	// MaxRegistrationsPerMinute bounds the registers and unregisters a
	// socket writes (default 120, all of them at once at most): past it the
	// reply has status 429 and nothing is written. An unregister of a
	// channel the UAID does not have writes nothing and is not counted.
	MaxRegistrationsPerMinute int
	// MaxMessagesPerMinute bounds every client message after hello
	// (default 1200, all at once at most); acks of notifications this
	// socket delivered are free, pings have MinClientPing. Past it the
	// socket is closed with 4774 (autopush's "back off": Firefox does not
	// reconnect until the network changes).
	MaxMessagesPerMinute int
	// MaxConnectionsPerIPPerMinute bounds the new connections of one client
	// address (an IPv6 /64), all at once at most (default 600); past it the
	// upgrade is answered 429. Loopback and private addresses (a proxy in
	// front) are exempt. Negative: no limit.
	MaxConnectionsPerIPPerMinute int

	Broadcasts map[string]string // broadcast id -> version, from configuration
	Logger     *slog.Logger

	// Metrics registers the node's series (connections, deliveries, acks,
	// nacks); nil: no metrics.
	Metrics prometheus.Registerer
	// MetricsHandler, when set, is served at GET /metrics next to the
	// WebSocket upgrade at /.
	MetricsHandler http.Handler
	// HealthHandler, when set, answers the Dockerflow endpoints
	// (/__heartbeat__, /__lbheartbeat__, /__version__) on this listener:
	// a connector-only process has no other HTTP listener. Built in cmd.
	HealthHandler http.Handler
}

const (
	defaultHelloTimeout   = 5 * time.Second
	defaultPingInterval   = 300 * time.Second
	defaultPongTimeout    = 30 * time.Second
	defaultMinClientPing  = 45 * time.Second
	defaultProduceTimeout = 5 * time.Second
	defaultLinkTimeout    = 5 * time.Second
	defaultReadTimeout    = 10 * time.Second
	defaultWriteTimeout   = 10 * time.Second
	defaultSendQueue      = 1024
	defaultMaxMessage     = 16 << 10

	defaultMaxChannels                  = 1000
	defaultMaxRegistrationsPerMinute    = 120
	defaultMaxMessagesPerMinute         = 1200
	defaultMaxConnectionsPerIPPerMinute = 600
)

// withDefaults validates c and fills every zero field with its default.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Names.Messages == "" {
		c.Names = schema.DefaultNames()
	}
	if c.Sealer == nil {
		errs = append(errs, errors.New("missing Sealer"))
	}
	if c.Producer == nil {
		errs = append(errs, errors.New("missing Producer"))
	}
	if c.Link == nil {
		errs = append(errs, errors.New("missing Link"))
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("PublicURL %q: want an absolute http(s) URL", c.PublicURL))
	}
	c.HelloTimeout = orDefault(c.HelloTimeout, defaultHelloTimeout)
	c.PingInterval = orDefault(c.PingInterval, defaultPingInterval)
	c.PongTimeout = orDefault(c.PongTimeout, defaultPongTimeout)
	c.MinClientPing = orDefault(c.MinClientPing, defaultMinClientPing)
	c.ProduceTimeout = orDefault(c.ProduceTimeout, defaultProduceTimeout)
	c.LinkTimeout = orDefault(c.LinkTimeout, defaultLinkTimeout)
	c.ReadTimeout = orDefault(c.ReadTimeout, defaultReadTimeout)
	c.WriteTimeout = orDefault(c.WriteTimeout, defaultWriteTimeout)
	c.SendQueue = orDefault(c.SendQueue, defaultSendQueue)
	c.MaxMessage = orDefault(c.MaxMessage, defaultMaxMessage)
	c.MaxChannels = orDefault(c.MaxChannels, defaultMaxChannels)
	c.MaxRegistrationsPerMinute = orDefault(c.MaxRegistrationsPerMinute, defaultMaxRegistrationsPerMinute)
	c.MaxMessagesPerMinute = orDefault(c.MaxMessagesPerMinute, defaultMaxMessagesPerMinute)
	// Negative means no per-address limit, so only zero takes the default.
	c.MaxConnectionsPerIPPerMinute = cmp.Or(c.MaxConnectionsPerIPPerMinute, defaultMaxConnectionsPerIPPerMinute)
	for id := range c.Broadcasts {
		if id == "" || id == broadcastErrorsKey {
			errs = append(errs, fmt.Errorf("broadcast id %q is reserved", id))
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("connector config: %w", errors.Join(errs...))
	}
	return c, nil
}

// orDefault is v, or def when v is not positive (zero or negative both
// mean "unset" for these settings).
func orDefault[T int | int64 | time.Duration](v, def T) T {
	return cmp.Or(max(v, 0), def)
}
