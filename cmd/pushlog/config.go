package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/cmd/internal/console"
	"github.com/pushlog/pushlog/cmd/internal/embedded"
	"github.com/pushlog/pushlog/schema"
)

// serveConfig is every setting of `pushlog serve`; each has a flag and a
// PUSHLOG_* (or the conventional KAFKA_BROKERS / CLICKHOUSE_ADDR) variable.
type serveConfig struct {
	Roles   []string `default:"ingest,connector,projector" env:"PUSHLOG_ROLES" help:"Roles to run: any of ingest, connector, projector."`
	DataDir string   `default:"./pushlog-data" env:"PUSHLOG_DATA_DIR" help:"Data directory (embedded Kafka log, generated keys)."`
	NodeID  string   `env:"PUSHLOG_NODE_ID" help:"Node id (default: kept in DATA_DIR/node-id, made from the hostname and a random suffix on the first start, so it survives restarts)."`

	Namespace      string        `default:"pushlog" env:"PUSHLOG_NAMESPACE" help:"Prefix of every topic and consumer group (several deployments can share a cluster)."`
	KafkaBrokers   []string      `env:"KAFKA_BROKERS" help:"Kafka bootstrap brokers; empty runs the embedded broker."`
	EmbeddedAddr   string        `name:"embedded-kafka-addr" default:"127.0.0.1:0" env:"PUSHLOG_EMBEDDED_KAFKA_ADDR" help:"Listen address of the embedded Kafka broker (port 0: any free port)."`
	Fsync          bool          `env:"PUSHLOG_FSYNC" help:"Embedded broker: fsync every batch (survives power loss, slower). Without it a process crash still loses nothing."`
	EmbRetain      time.Duration `name:"embedded-retain" default:"1h" env:"PUSHLOG_EMBEDDED_RETAIN" help:"Embedded broker: replay window; settled records older than this (and below every consumer group's commit) are deleted. Unsettled messages are kept whatever their age."`
	EmbSegBytes    int64         `name:"embedded-segment-bytes" default:"1048576" env:"PUSHLOG_EMBEDDED_SEGMENT_BYTES" help:"Embedded broker: segment file size; trimming frees disk and index memory a whole segment at a time."`
	EmbTrimEvery   time.Duration `name:"embedded-trim-interval" default:"1m" env:"PUSHLOG_EMBEDDED_TRIM_INTERVAL" help:"Embedded broker: how often settled prefixes of the log are deleted."`
	Partitions     int32         `default:"12" env:"PUSHLOG_PARTITIONS" help:"Partition count of every topic (co-partitioned)."`
	Replication    int16         `default:"-1" env:"PUSHLOG_REPLICATION" help:"Replication factor of created topics (-1: broker default)."`
	MinInsync      int16         `name:"min-insync-replicas" default:"0" env:"PUSHLOG_MIN_INSYNC_REPLICAS" help:"min.insync.replicas of created topics, verified by 'pushlog topics': 0 sets 2 where created topics get 3 or more replicas (--replication, or with -1 the brokers' default.replication.factor) and leaves the broker's default otherwise; -1 always leaves the broker's default."`
	ProduceTimeout time.Duration `default:"5s" env:"PUSHLOG_PRODUCE_TIMEOUT" help:"Longest wait for a durable append."`

	ConsoleAddr  string `name:"console-addr" default:"127.0.0.1:8084" env:"PUSHLOG_CONSOLE_ADDR" help:"Listen address of the read-only web console (overview, live charts, analytics); empty or off disables it. Anywhere but loopback it requires --console-token."`
	ConsoleToken string `name:"console-token" env:"PUSHLOG_CONSOLE_TOKEN" help:"Token the console requires (at least 16 bytes): Authorization: Bearer TOKEN, or HTTP basic auth with the token as password. Required when --console-addr is not a loopback address."`

	// Migration from Mozilla autopush (ingest/autopush.go).
	AutopushCryptoKeys string `name:"autopush-crypto-keys" env:"PUSHLOG_AUTOPUSH_CRYPTO_KEYS" help:"autopush's endpoint keys (its CRYPTO_KEY: Fernet keys, comma-separated or as autopush's [\"k1\",\"k2\"] list): endpoints autopush minted (/wpush/v1/, /wpush/v2/, /wpush/) keep working. Empty: off."`

	// Mobile bridges: registration API, FCM and APNs (cmd/pushlog/bridges.go, issue 14).
	bridgeFlags `embed:""`

	DebugAddr string `env:"PUSHLOG_DEBUG_ADDR" help:"Operator-only listener for /debug/pprof and /debug/gc (off when empty)."`

	// Go heap growth between collections (cmd/internal/gctune, issue 17).
	GCHeadroom int64 `name:"gc-headroom-bytes" default:"4194304" env:"PUSHLOG_GC_HEADROOM_BYTES" help:"The Go heap grows by at most this many bytes past its live size between collections (but by at least 25% and at most GOGC, 100 by default): a process holding many idle connections keeps about their live memory instead of twice it. 0: plain GOGC."`

	MetricsAddr string        `env:"PUSHLOG_METRICS_ADDR" help:"Extra listener for Prometheus /metrics (off when empty); the ingest and WebSocket listeners serve /metrics too. Projector-only processes need it."`
	LagInterval time.Duration `default:"15s" env:"PUSHLOG_LAG_INTERVAL" help:"How often consumer-group lag is computed for /metrics."`

	HTTPAddr  string `default:"127.0.0.1:8082" env:"PUSHLOG_HTTP_ADDR" help:"Ingest (push API) listen address."`
	WSAddr    string `default:"127.0.0.1:8080" env:"PUSHLOG_WS_ADDR" help:"WebSocket (user agent) listen address."`
	PublicURL string `env:"PUSHLOG_PUBLIC_URL" help:"Base URL of push endpoints (default: http(s)://HTTP_ADDR)."`
	TLSCert   string `env:"PUSHLOG_TLS_CERT" type:"existingfile" help:"Ingest TLS certificate file (PEM)."`
	TLSKey    string `env:"PUSHLOG_TLS_KEY" type:"existingfile" help:"Ingest TLS key file (PEM)."`

	CryptoKeys string        `env:"PUSHLOG_CRYPTO_KEYS" help:"Comma-separated base64url 32-byte keys sealing endpoints and message ids; the first seals, all open (rotation). Default: generated once into DATA_DIR/crypto-keys."`
	NewKeys    bool          `env:"PUSHLOG_NEW_KEYS" help:"Generate a new DATA_DIR/crypto-keys even though the log (embedded, or the namespace's messages, registrations or channels topics on --kafka-brokers) holds events sealed with a lost one (their endpoints stop working)."`
	MaxTTL     time.Duration `default:"720h" env:"PUSHLOG_MAX_TTL" help:"Largest TTL; longer ones are clamped."`
	MaxBody    int           `default:"5630" env:"PUSHLOG_MAX_BODY" help:"Largest push body in bytes (at least 4096)."`
	// Ingest bounds on what senders control besides the body (issue 10/11).
	MaxCryptoHeaders     int           `name:"max-crypto-headers" default:"1024" env:"PUSHLOG_MAX_CRYPTO_HEADERS" help:"Largest Encryption + Crypto-Key (+ Encryption-Key) headers together, in bytes; larger is 413 errno 104."`
	MaxVAPIDSub          int           `name:"max-vapid-sub" default:"256" env:"PUSHLOG_MAX_VAPID_SUB" help:"Largest VAPID sub claim in bytes (stored in every event); larger is 401 errno 109."`
	MaxVAPIDToken        int           `name:"max-vapid-token" default:"4096" env:"PUSHLOG_MAX_VAPID_TOKEN" help:"Largest VAPID JWT in bytes, refused (401 errno 109) before any parsing."`
	MaxEventBytes        int           `name:"max-event-bytes" default:"65536" env:"PUSHLOG_MAX_EVENT_BYTES" help:"Largest message record in bytes (at most 1000000, below Kafka's default max.message.bytes); max-body + max-crypto-headers + max-vapid-sub + 1024 must fit."`
	VAPIDCacheBytes      int64         `name:"vapid-cache-bytes" default:"16777216" env:"PUSHLOG_VAPID_CACHE_BYTES" help:"Byte budget of the verified-VAPID-token cache, tokens included."`
	DedupEntries         int           `name:"dedup-entries" default:"100000" env:"PUSHLOG_DEDUP_ENTRIES" help:"Pushes remembered (about 128 bytes each) so that a sender's retry of one is answered with the original's Location instead of a second append."`
	BreakerProbeInterval time.Duration `name:"breaker-probe-interval" default:"500ms" env:"PUSHLOG_BREAKER_PROBE_INTERVAL" help:"While Kafka is failing, how often ingest lets one push through to probe it (Retry-After is this rounded up to seconds)."`
	// Push quotas per ingest node (ingest/quota.go, issue 15): past one, 429 errno 129 with Retry-After.
	PushQuotaVAPIDRate         float64 `name:"push-quota-vapid-rate" default:"1000" env:"PUSHLOG_PUSH_QUOTA_VAPID_RATE" help:"Pushes per second per verified VAPID key, per ingest node (a sender spread over N nodes gets up to N times this); negative: off."`
	PushQuotaVAPIDBurst        int     `name:"push-quota-vapid-burst" default:"10000" env:"PUSHLOG_PUSH_QUOTA_VAPID_BURST" help:"Pushes a VAPID key may send at once before --push-quota-vapid-rate applies."`
	PushQuotaSubscriptionRate  float64 `name:"push-quota-subscription-rate" default:"10" env:"PUSHLOG_PUSH_QUOTA_SUBSCRIPTION_RATE" help:"Pushes per second per endpoint (UAID and channel), whoever sends; negative: off."`
	PushQuotaSubscriptionBurst int     `name:"push-quota-subscription-burst" default:"500" env:"PUSHLOG_PUSH_QUOTA_SUBSCRIPTION_BURST" help:"Pushes an endpoint may receive at once before --push-quota-subscription-rate applies."`
	PushQuotaAddressRate       float64 `name:"push-quota-address-rate" default:"100" env:"PUSHLOG_PUSH_QUOTA_ADDRESS_RATE" help:"Pushes per second per source address (IPv6: per /64) of pushes without VAPID; negative: off."`
	PushQuotaAddressBurst      int     `name:"push-quota-address-burst" default:"1000" env:"PUSHLOG_PUSH_QUOTA_ADDRESS_BURST" help:"Pushes without VAPID an address may send at once before --push-quota-address-rate applies."`
	PushQuotaPrivate           bool    `name:"push-quota-private" env:"PUSHLOG_PUSH_QUOTA_PRIVATE" help:"Also meter loopback, private and link-local source addresses (exempt by default: a proxy in front connects from them)."`
	PushQuotaEntries           int     `name:"push-quota-entries" default:"50000" env:"PUSHLOG_PUSH_QUOTA_ENTRIES" help:"Buckets kept per quota kind (about 256 bytes each); keys past a full table share one overflow bucket."`
	TrustedProxies             string  `name:"trusted-proxies" env:"PUSHLOG_TRUSTED_PROXIES" help:"Comma-separated CIDR prefixes of proxies in front of ingest: from them, the source address is the rightmost X-Forwarded-For address outside these prefixes. Empty: X-Forwarded-For is ignored."`

	// RFC 8030 push receipts (ingest/receipts.go, issue 15).
	Receipts             bool          `name:"receipts" default:"true" negatable:"" env:"PUSHLOG_RECEIPTS" help:"RFC 8030 push receipts (POST /receipts, Push-Receipt, Prefer: respond-async); they follow the node's status table (the one fold of the messages and acks topics), which then reads at least --receipt-retention back."`
	ReceiptRetention     time.Duration `name:"receipt-retention" default:"24h" env:"PUSHLOG_RECEIPT_RETENTION" help:"How long receipts are kept for a sender that reconnects, and how far back a starting node reads."`
	ReceiptBuffer        int           `name:"receipt-buffer" default:"1000" env:"PUSHLOG_RECEIPT_BUFFER" help:"Receipts kept per receipt subscription; past it the oldest are forgotten."`
	ReceiptSubsPerSender int           `name:"receipt-subscriptions-per-sender" default:"100" env:"PUSHLOG_RECEIPT_SUBSCRIPTIONS_PER_SENDER" help:"Receipt subscriptions one sender (VAPID key, else address) may create per --receipt-retention, per node; past it 429 errno 131."`
	ReceiptStreams       int           `name:"receipt-streams" default:"1000" env:"PUSHLOG_RECEIPT_STREAMS" help:"Concurrent GETs of receipt subscriptions per node; past it 503."`
	ReceiptIdle          time.Duration `name:"receipt-idle" default:"5m" env:"PUSHLOG_RECEIPT_IDLE" help:"A receipt GET ends after this long without a receipt."`

	// Sender APIs (issue 15): GET /m/{id} and GET /v1/report.
	StatusKeep        time.Duration `name:"status-keep" env:"PUSHLOG_STATUS_KEEP" help:"How long GET /m/{id} answers a settled message's status (then 404); 0: --max-ttl."`
	StatusEntries     int           `name:"status-entries" default:"1000000" env:"PUSHLOG_STATUS_ENTRIES" help:"Messages the status table of GET /m/{id} holds per ingest node (about 170 bytes each); past it the oldest are forgotten first."`
	ReportMaxWindow   time.Duration `name:"report-max-window" default:"744h" env:"PUSHLOG_REPORT_MAX_WINDOW" help:"Longest until-since of GET /v1/report (longer: 400 errno 130)."`
	ReportConcurrency int           `name:"report-concurrency" default:"4" env:"PUSHLOG_REPORT_CONCURRENCY" help:"GET /v1/report queries one ingest node runs at once; past it a report answers 503 with Retry-After."`

	PendingLimit  int               `default:"200" env:"PUSHLOG_PENDING_LIMIT" help:"Pending messages kept per UAID; past it the oldest is dropped."`
	UAIDExpiry    time.Duration     `name:"uaid-expiry" default:"1440h" env:"PUSHLOG_UAID_EXPIRY" help:"A UAID without a connection this long is reset (its endpoints answer 410 errno 103) and leaves memory and the log; gone-set entries age out after the same time (autopush-rs: 60 days)."`
	HelloTimeout  time.Duration     `default:"5s" env:"PUSHLOG_HELLO_TIMEOUT" help:"Time a new socket has to send hello."`
	PingInterval  time.Duration     `default:"300s" env:"PUSHLOG_PING_INTERVAL" help:"Idle time before the server pings a socket."`
	PongTimeout   time.Duration     `default:"30s" env:"PUSHLOG_PONG_TIMEOUT" help:"Time to wait for a pong before closing."`
	MinClientPing time.Duration     `default:"45s" env:"PUSHLOG_MIN_CLIENT_PING" help:"Clients pinging more often than this are closed."`
	Broadcasts    map[string]string `env:"PUSHLOG_BROADCASTS" mapsep:"," help:"Broadcast ids and versions to seed, e.g. remote-settings/monitor_changes=v1: written to the broadcasts topic for ids it does not hold yet (the topic's version wins); change them live with 'pushlog broadcast set', the admin API or --megaphone-url."`
	// Live broadcasts (connector/node/broadcasts.go, ingest/admin.go).
	AdminToken        string        `name:"admin-token" env:"PUSHLOG_ADMIN_TOKEN" help:"Bearer token of the admin API on the ingest listener (PUT /v1/broadcasts/ID, POST /v1/broadcasts; at least 16 bytes). Empty: the admin API answers 403."`
	MegaphoneURL      string        `name:"megaphone-url" env:"PUSHLOG_MEGAPHONE_URL" help:"Megaphone-compatible API polled by every connector node (GET, answered {\"broadcasts\":{...}}); versions that differ are written to the broadcasts topic. Empty: off."`
	MegaphoneToken    string        `name:"megaphone-token" env:"PUSHLOG_MEGAPHONE_TOKEN" help:"Bearer token sent to --megaphone-url."`
	MegaphoneInterval time.Duration `name:"megaphone-interval" default:"30s" env:"PUSHLOG_MEGAPHONE_INTERVAL" help:"How often --megaphone-url is polled (autopush-rs: 30s)."`
	// Connector bounds on what a client controls (issue 10).
	MaxChannels                  int `name:"max-channels" default:"1000" env:"PUSHLOG_MAX_CHANNELS" help:"Channels per UAID; registering a new channel past it is answered with status 413 (the socket stays open)."`
	MaxRegistrationsPerMinute    int `name:"max-registrations-per-minute" default:"120" env:"PUSHLOG_MAX_REGISTRATIONS_PER_MINUTE" help:"Registers and unregisters one socket may write per minute (all at once at most); past it the reply has status 429."`
	MaxClientMessagesPerMinute   int `name:"max-client-messages-per-minute" default:"1200" env:"PUSHLOG_MAX_CLIENT_MESSAGES_PER_MINUTE" help:"Messages per socket per minute (all at once at most; acks of notifications it was sent and pings are not counted); past it the socket is closed with 4774."`
	MaxConnectionsPerIPPerMinute int `name:"max-connections-per-ip-per-minute" default:"600" env:"PUSHLOG_MAX_CONNECTIONS_PER_IP_PER_MINUTE" help:"New WebSocket connections per client address (IPv6: per /64) per minute; past it 429. Loopback and private addresses (a proxy in front) are exempt; 0 disables."`

	// Cluster: connector nodes sharing the partitions (see validateCluster).
	LinkAddr            string        `env:"PUSHLOG_LINK_ADDR" help:"Node-link listen address of a connector node in a cluster (port 0: any free port); empty runs a single node."`
	LinkAdvertise       string        `env:"PUSHLOG_LINK_ADVERTISE" help:"Node-link address other nodes dial (default: the listen address; required when it is a wildcard)."`
	LinkSecret          string        `env:"PUSHLOG_LINK_SECRET" help:"Shared secret authenticating node links (at least 16 bytes; the same on every node). Required with --link-addr."`
	ShutdownTimeout     time.Duration `default:"20s" env:"PUSHLOG_SHUTDOWN_TIMEOUT" help:"Longest a graceful stop (SIGTERM) may take before the process exits anyway."`
	GroupSessionTimeout time.Duration `default:"10s" env:"PUSHLOG_GROUP_SESSION_TIMEOUT" help:"Connector group session timeout: how long the partitions of a crashed node wait before moving (at least the broker's group.min.session.timeout.ms)."`
	GroupHeartbeat      time.Duration `default:"3s" env:"PUSHLOG_GROUP_HEARTBEAT" help:"Connector group heartbeat interval (below the session timeout)."`
	DrainTimeout        time.Duration `default:"3s" env:"PUSHLOG_DRAIN_TIMEOUT" help:"On shutdown, how long a connector waits for its clients to ack what they were sent before closing their sockets."`

	ClickHouseAddr string `name:"clickhouse-addr" env:"CLICKHOUSE_ADDR" help:"ClickHouse native address; empty disables analytics."`
	ClickHouseDB   string `name:"clickhouse-db" default:"pushlog" env:"PUSHLOG_CLICKHOUSE_DB" help:"ClickHouse database."`
}

const (
	roleIngest    = "ingest"
	roleConnector = "connector"
	roleProjector = "projector"
)

func (c *serveConfig) has(role string) bool {
	for _, r := range c.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// validate checks every setting and fills derived defaults, with an error
// that names the setting.
func (c *serveConfig) validate() error {
	c.derive()
	errs := failed(c.checks())
	errs = append(errs, c.validateCluster()...)
	return errors.Join(errs...)
}

// derive fills the settings whose default depends on others or on the host.
func (c *serveConfig) derive() {
	if c.PublicURL == "" {
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		c.PublicURL = scheme + "://" + c.HTTPAddr
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.NodeID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.NodeID = fmt.Sprintf("%s-%x", host, b)
	}
	var brokers []string
	for _, b := range c.KafkaBrokers {
		for _, part := range strings.Split(b, ",") {
			if part = strings.TrimSpace(part); part != "" {
				brokers = append(brokers, part)
			}
		}
	}
	c.KafkaBrokers = brokers
}

// check is one rule of the settings: when bad, msg (which names the flag)
// is the error.
type check struct {
	bad bool
	msg string
}

// failed returns the errors of the checks that are bad.
func failed(checks []check) []error {
	var errs []error
	for _, ch := range checks {
		if ch.bad {
			errs = append(errs, errors.New(ch.msg))
		}
	}
	return errs
}

// unless drops the check where the setting does not apply.
func (ch check) unless(skip bool) check {
	ch.bad = ch.bad && !skip
	return ch
}

// addrCheck fails when addr is not host:port.
func addrCheck(flag, addr string) check {
	_, _, err := net.SplitHostPort(addr)
	return check{err != nil, fmt.Sprintf("%s: %q: %v", flag, addr, err)}
}

// checks are the rules of every setting but the cluster's, one per line.
func (c *serveConfig) checks() []check {
	f := fmt.Sprintf
	_, nsErr := schema.NamesFor(c.Namespace)
	checks := []check{
		{len(c.Roles) == 0, "--roles: at least one role is required"},
		{nsErr != nil, f("--namespace: %v", nsErr)},
		{c.Partitions < 1 || c.Partitions > 10000, f("--partitions: %d is out of range 1..10000", c.Partitions)},
		{c.Replication == 0 || c.Replication < -1, f("--replication: %d (want -1 or a positive count)", c.Replication)},
		{c.MinInsync < -1, f("--min-insync-replicas: %d (want -1, 0 or a positive count)", c.MinInsync)},
		{c.Replication > 0 && c.MinInsync > c.Replication, f("--min-insync-replicas: %d is more than --replication %d: every append would fail", c.MinInsync, c.Replication)},
		{c.MaxTTL < time.Second, f("--max-ttl: %s is below 1s", c.MaxTTL)},
		{c.MaxBody < 4096, f("--max-body: %d is below 4096 bytes (RFC 8030 requires at least 4096)", c.MaxBody)},
		{c.PendingLimit < 1, f("--pending-limit: %d (want at least 1)", c.PendingLimit)},
		// --uaid-expiry 0 is the roles' default; --metrics-addr "" is off.
		{c.UAIDExpiry != 0 && c.UAIDExpiry < time.Minute, f("--uaid-expiry: %s is below 1m", c.UAIDExpiry)},
		addrCheck("--metrics-addr", c.MetricsAddr).unless(c.MetricsAddr == ""),
		addrCheck("--console-addr", c.ConsoleAddr).unless(c.consoleOff()),
		{!c.consoleOff() && console.NeedsToken(c.ConsoleAddr) && c.ConsoleToken == "", f("--console-token: required when --console-addr %q is not a loopback address (anyone reaching it would see the cluster)", c.ConsoleAddr)},
		{c.ConsoleToken != "" && len(c.ConsoleToken) < console.MinTokenBytes, f("--console-token: at least %d bytes", console.MinTokenBytes)},
		addrCheck("--http-addr", c.HTTPAddr),
		addrCheck("--ws-addr", c.WSAddr),
		addrCheck("--embedded-kafka-addr", c.EmbeddedAddr),
		{(c.TLSCert == "") != (c.TLSKey == ""), "--tls-cert and --tls-key must be given together"},
		{!httpOrigin(c.PublicURL), f("--public-url: %q must be an http(s) origin such as https://push.example.com", c.PublicURL)},
	}
	checks = append(checks, c.broadcastChecks()...)
	for _, r := range c.Roles {
		checks = append(checks, check{r != roleIngest && r != roleConnector && r != roleProjector, f("--roles: unknown role %q (want ingest, connector, projector)", r)})
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--hello-timeout", c.HelloTimeout}, {"--ping-interval", c.PingInterval}, {"--pong-timeout", c.PongTimeout}, {"--produce-timeout", c.ProduceTimeout}, {"--shutdown-timeout", c.ShutdownTimeout}} {
		checks = append(checks, check{d.v <= 0, f("%s: %s must be positive", d.flag, d.v)})
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--min-client-ping", c.MinClientPing}, {"--lag-interval", c.LagInterval}} {
		checks = append(checks, check{d.v < 0, f("%s: %s is negative", d.flag, d.v)})
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"--max-channels", c.MaxChannels}, {"--max-registrations-per-minute", c.MaxRegistrationsPerMinute}, {"--max-client-messages-per-minute", c.MaxClientMessagesPerMinute}, {"--max-connections-per-ip-per-minute", c.MaxConnectionsPerIPPerMinute}} {
		checks = append(checks, check{n.v < 0, f("%s: %d is negative", n.flag, n.v)})
	}
	return checks
}

// httpOrigin reports whether s is an http(s) origin: scheme and host, no path.
func httpOrigin(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && (u.Path == "" || u.Path == "/")
}

// minLinkSecret is the shortest accepted --link-secret (remote.MinSecret).
const minLinkSecret = 16

// validateCluster checks the node-link and group settings. A node with a
// link address joins a cluster: the secret is then required, and the
// address others dial must be a concrete host.
func (c *serveConfig) validateCluster() []error {
	f := fmt.Sprintf
	c.GroupSessionTimeout = cmp.Or(c.GroupSessionTimeout, 10*time.Second)
	c.GroupHeartbeat = cmp.Or(c.GroupHeartbeat, 3*time.Second)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 3*time.Second)
	checks := []check{
		{c.GroupSessionTimeout < 0 || c.GroupHeartbeat < 0 || c.DrainTimeout < 0, "--group-session-timeout, --group-heartbeat and --drain-timeout must not be negative"},
		{c.GroupHeartbeat >= c.GroupSessionTimeout, f("--group-heartbeat: %s must be below --group-session-timeout %s", c.GroupHeartbeat, c.GroupSessionTimeout)},
		{c.LinkAddr == "" && c.LinkAdvertise != "", "--link-advertise needs --link-addr"},
	}
	if c.LinkAddr == "" {
		return failed(checks)
	}
	adv := cmp.Or(c.LinkAdvertise, c.LinkAddr)
	host, port, err := net.SplitHostPort(adv)
	wildcard := err == nil && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified())
	checks = append(checks,
		addrCheck("--link-addr", c.LinkAddr),
		check{len(c.LinkSecret) < minLinkSecret, f("--link-secret: required with --link-addr, at least %d bytes (the same on every node)", minLinkSecret)},
		check{err != nil, f("--link-advertise: %q: %v", adv, err)},
		check{wildcard, f("--link-advertise: required when --link-addr %q listens on every interface (other nodes need an address to dial)", c.LinkAddr)},
		check{err == nil && !wildcard && c.LinkAdvertise != "" && port == "0", f("--link-advertise: %q needs a concrete port", adv)},
	)
	return failed(checks)
}

// sealingKeys returns the configured keys, or the ones generated once into
// the data directory so endpoints survive a restart of the embedded service.
// A key is generated only when no log holds events sealed with a lost one
// (the embedded broker's files, or with --kafka-brokers the namespace's
// topics), unless --new-keys.
func (c *serveConfig) sealingKeys(ctx context.Context) ([][]byte, error) {
	if c.CryptoKeys != "" {
		keys, err := schema.ParseKeys(c.CryptoKeys)
		if err != nil {
			return nil, fmt.Errorf("--crypto-keys: %w", err)
		}
		return keys, nil
	}
	path := filepath.Join(c.DataDir, "crypto-keys")
	if b, err := os.ReadFile(path); err == nil {
		keys, err := schema.ParseKeys(strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", ","))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return keys, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !c.NewKeys {
		if err := c.refuseLostKeys(ctx, path); err != nil {
			return nil, err
		}
	}
	key := make([]byte, schema.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(base64.RawURLEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return [][]byte{key}, nil
}

// refuseLostKeys fails when the key file at path is missing but a log
// holds events sealed with it: a new key would make every existing endpoint
// and message id answer 404.
func (c *serveConfig) refuseLostKeys(ctx context.Context, path string) error {
	if len(c.KafkaBrokers) == 0 {
		if has, err := embedded.HasEvents(filepath.Join(c.DataDir, "kafka")); err != nil {
			return err
		} else if has {
			return embedded.MissingKeysError(path, c.DataDir)
		}
		return nil
	}
	names, err := schema.NamesFor(c.Namespace)
	if err != nil {
		return fmt.Errorf("--namespace: %w", err)
	}
	topics := []string{names.Messages, names.Registrations, names.Channels}
	held, err := topicsHoldRecords(ctx, c.KafkaBrokers, topics)
	if err != nil {
		return fmt.Errorf("%s is missing; checking whether Kafka holds events sealed with a lost key: %w", path, err)
	}
	if len(held) > 0 {
		return fmt.Errorf("%s is missing but Kafka topics %s hold events sealed with a key: a new key would make every "+
			"existing endpoint and message id answer 404. Pass the deployment's keys with --crypto-keys "+
			"(PUSHLOG_CRYPTO_KEYS) or restore the file; to start over deliberately pass --new-keys (existing "+
			"subscriptions stop working)", path, strings.Join(held, ", "))
	}
	return nil
}

// keyCheckTimeout bounds the look at the external Kafka before a key is
// generated.
const keyCheckTimeout = 30 * time.Second

// topicsHoldRecords returns those of topics with a partition whose end
// offset is past its start offset; missing topics hold nothing.
func topicsHoldRecords(ctx context.Context, brokers []string, topics []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, keyCheckTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("pushlog-keycheck"), kgo.DisableClientMetrics())
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	var held []string
	var errs []error
	for _, t := range topics {
		for _, end := range ends[t] {
			if errors.Is(end.Err, kerr.UnknownTopicOrPartition) {
				continue
			}
			start, ok := starts.Lookup(t, end.Partition)
			if end.Err == nil && ok && start.Err != nil {
				end.Err = start.Err
			}
			if end.Err != nil {
				errs = append(errs, fmt.Errorf("%s/%d: %w", t, end.Partition, end.Err))
				continue
			}
			if end.Offset > start.Offset {
				held = append(held, t)
				break
			}
		}
	}
	if len(held) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return held, nil
}

// connectionsPerIP maps --max-connections-per-ip-per-minute to the
// connector's setting, where 0 means the default and negative no limit.
func (c serveConfig) connectionsPerIP() int {
	if c.MaxConnectionsPerIPPerMinute == 0 {
		return -1
	}
	return c.MaxConnectionsPerIPPerMinute
}
