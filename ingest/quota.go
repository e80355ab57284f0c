package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pushlog/pushlog/schema"
)

// Quotas (issue 15 point 3): token buckets per VAPID key, per subscription
// and per source address of pushes without VAPID, kept per ingest process.
// A sender spread over N ingest nodes gets at most N times its quota: the
// buckets are not shared, which keeps a push free of any round trip.
//
// Each kind's table is bounded (QuotaConfig.Entries, in shards). A key not
// in a full shard takes the place of the least recently used entry when
// that entry's bucket has refilled (it is then indistinguishable from a
// fresh one, so nothing is forgotten); otherwise the key is metered in the
// kind's shared overflow bucket. A client cycling fresh keys therefore
// never goes unmetered: past the table it shares one bucket with every
// other overflowing key, and a sender whose state is live is never evicted
// to reset its bucket.

// Defaults of QuotaConfig's fields.
const (
	DefaultQuotaVAPIDRate         = 1000
	DefaultQuotaVAPIDBurst        = 10000
	DefaultQuotaSubscriptionRate  = 10
	DefaultQuotaSubscriptionBurst = 500
	DefaultQuotaAddressRate       = 100
	DefaultQuotaAddressBurst      = 1000
	DefaultQuotaEntries           = 50000
	// quotaEntryBytes estimates one table entry: key, limiter, LRU
	// element and map slot.
	quotaEntryBytes = 256
	quotaShards     = 16
	// errnoTooManyRequests is pushlog's own (autopush-rs uses 101-114,
	// 201-202, 900-903 and 999): 429, the sender is over a quota.
	errnoTooManyRequests = 129
)

// Kinds of quota (the kind label of the quota series).
const (
	quotaVAPID        = "vapid"
	quotaSubscription = "subscription"
	quotaAddress      = "address"
)

var quotaKinds = []string{quotaVAPID, quotaSubscription, quotaAddress}

// QuotaConfig configures the push quotas. Rates are pushes per second,
// refilled continuously; a burst is the bucket's size (what an idle sender
// may send at once). Zero means the default; a negative rate turns that
// quota off.
type QuotaConfig struct {
	// VAPIDRate/VAPIDBurst: per verified VAPID public key (default 1000/s,
	// burst 10000). Only a verified key is charged: a forged token naming
	// someone's key cannot spend that key's quota.
	VAPIDRate  float64
	VAPIDBurst int
	// SubscriptionRate/SubscriptionBurst: per endpoint (UAID and channel),
	// whoever sends (default 10/s, burst 500).
	SubscriptionRate  float64
	SubscriptionBurst int
	// AddressRate/AddressBurst: per source address (an IPv6 client by its
	// /64) of pushes without VAPID (default 100/s, burst 1000).
	AddressRate  float64
	AddressBurst int
	// LimitPrivateAddresses also meters loopback, private and link-local
	// source addresses; by default they are exempt, as in the connector's
	// per-address limit: that is where a proxy in front of pushlog
	// connects from, carrying many senders.
	LimitPrivateAddresses bool
	// TrustedProxies: when the peer is in one of these prefixes, the source
	// address is the rightmost X-Forwarded-For address that is not (empty:
	// X-Forwarded-For is ignored).
	TrustedProxies []netip.Prefix
	// Entries bounds each kind's table (default 50000, about 256 bytes
	// each).
	Entries int
}

func (c *QuotaConfig) validate() error {
	fill := func(r *float64, b *int, defRate float64, defBurst int, name string) error {
		if *r == 0 {
			*r = defRate
		}
		if *b == 0 {
			*b = defBurst
		}
		if *b < 0 || math.IsNaN(*r) || math.IsInf(*r, 0) {
			return fmt.Errorf("quota %s: burst must be positive and rate finite, got %v/s burst %d", name, *r, *b)
		}
		return nil
	}
	if err := fill(&c.VAPIDRate, &c.VAPIDBurst, DefaultQuotaVAPIDRate, DefaultQuotaVAPIDBurst, quotaVAPID); err != nil {
		return err
	}
	if err := fill(&c.SubscriptionRate, &c.SubscriptionBurst, DefaultQuotaSubscriptionRate, DefaultQuotaSubscriptionBurst, quotaSubscription); err != nil {
		return err
	}
	if err := fill(&c.AddressRate, &c.AddressBurst, DefaultQuotaAddressRate, DefaultQuotaAddressBurst, quotaAddress); err != nil {
		return err
	}
	if c.Entries == 0 {
		c.Entries = DefaultQuotaEntries
	}
	if c.Entries < quotaShards {
		return fmt.Errorf("quota entries must be at least %d, got %d", quotaShards, c.Entries)
	}
	return nil
}

// quotaKey identifies a bucket: a SHA-256 (of the VAPID key, of the
// endpoint) or an address in 16 bytes.
type quotaKey [sha256.Size]byte

// quotaTable is one kind's bounded set of buckets.
type quotaTable struct {
	kind     string
	limit    rate.Limit
	burst    int
	shards   [quotaShards]quotaShard
	overflow *rate.Limiter // shared by keys a full table could not admit

	entries    atomic.Int64
	evictions  atomic.Int64 // refilled entries replaced by a new key
	overflowed atomic.Int64 // pushes metered in the overflow bucket
}

type quotaShard struct {
	mu  sync.Mutex
	cap int
	lru *simplelru.LRU[quotaKey, *rate.Limiter]
}

// newQuotaTable returns nil when the quota is off (negative rate).
func newQuotaTable(kind string, perSecond float64, burst, entries int) *quotaTable {
	if perSecond < 0 {
		return nil
	}
	t := &quotaTable{kind: kind, limit: rate.Limit(perSecond), burst: burst,
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst)}
	per := entries / quotaShards
	for i := range t.shards {
		lru, err := simplelru.NewLRU[quotaKey, *rate.Limiter](per, nil)
		if err != nil {
			panic(err) // per >= 1: validated
		}
		t.shards[i].lru, t.shards[i].cap = lru, per
	}
	return t
}

// reserve takes a token for key at now. ok false: the push must wait
// delay; the reservation is then already returned.
func (t *quotaTable) reserve(key quotaKey, now time.Time) (r *rate.Reservation, delay time.Duration) {
	sh := &t.shards[key[0]%quotaShards]
	sh.mu.Lock()
	lim := t.limiter(sh, key, now)
	r = lim.ReserveN(now, 1)
	sh.mu.Unlock()
	if !r.OK() { // burst 0: never
		return nil, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, d
	}
	return r, 0
}

// limiter finds or makes key's bucket; sh.mu is held.
func (t *quotaTable) limiter(sh *quotaShard, key quotaKey, now time.Time) *rate.Limiter {
	if lim, ok := sh.lru.Get(key); ok {
		return lim
	}
	if sh.lru.Len() >= sh.cap {
		_, oldest, _ := sh.lru.GetOldest()
		if oldest.TokensAt(now) < float64(t.burst) {
			t.overflowed.Add(1)
			return t.overflow
		}
		sh.lru.RemoveOldest()
		t.evictions.Add(1)
		t.entries.Add(-1)
	}
	lim := rate.NewLimiter(t.limit, t.burst)
	sh.lru.Add(key, lim)
	t.entries.Add(1)
	return lim
}

// quotaRefusal is a push over one of its quotas.
type quotaRefusal struct {
	kind  string
	key   quotaKey
	delay time.Duration
}

// quotas holds the three tables and their series.
type quotas struct {
	cfg      QuotaConfig
	tables   map[string]*quotaTable // nil entries: quota off
	refusals *prometheus.CounterVec // by kind
	senders  *prometheus.CounterVec // by kind and key-hash bucket
	byKind   map[string]prometheus.Counter
	// logs bounds the refusal log lines (which name the sender exactly,
	// where the metric only has a bucket) to one a second, a few at once.
	logs *rate.Limiter
}

func newQuotas(cfg QuotaConfig) *quotas {
	q := &quotas{cfg: cfg, logs: rate.NewLimiter(1, 5), tables: map[string]*quotaTable{
		quotaVAPID:        newQuotaTable(quotaVAPID, cfg.VAPIDRate, cfg.VAPIDBurst, cfg.Entries),
		quotaSubscription: newQuotaTable(quotaSubscription, cfg.SubscriptionRate, cfg.SubscriptionBurst, cfg.Entries),
		quotaAddress:      newQuotaTable(quotaAddress, cfg.AddressRate, cfg.AddressBurst, cfg.Entries),
	}}
	q.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_ingest_quota_refusals_total",
		Help: "Pushes answered 429 (errno 129) for a quota, by kind: vapid (per VAPID key), subscription (per endpoint), address (per source address of pushes without VAPID).",
	}, []string{"kind"})
	q.senders = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_ingest_quota_sender_refusals_total",
		Help: "Quota refusals by kind and sender bucket: the first two hex digits of the SHA-256 of the VAPID key (as in the events' vapid_key_hash), of uaid/channel, or of the address (at most 256 series per kind).",
	}, []string{"kind", "sender"})
	q.byKind = map[string]prometheus.Counter{}
	for _, k := range quotaKinds {
		q.byKind[k] = q.refusals.WithLabelValues(k)
	}
	return q
}

// collectors are the quota series, registered with the ingest metrics.
func (q *quotas) collectors() []prometheus.Collector {
	out := []prometheus.Collector{q.refusals, q.senders}
	for _, kind := range quotaKinds {
		t := q.tables[kind]
		if t == nil {
			continue
		}
		labels := prometheus.Labels{"kind": kind}
		out = append(out,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushlog_ingest_quota_entries", ConstLabels: labels,
				Help: "Buckets held per quota kind (bounded by --push-quota-entries; about 256 bytes each)."},
				func() float64 { return float64(t.entries.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushlog_ingest_quota_evictions_total", ConstLabels: labels,
				Help: "Refilled buckets replaced by a new key in a full quota table (nothing is forgotten: a refilled bucket equals a fresh one)."},
				func() float64 { return float64(t.evictions.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushlog_ingest_quota_overflow_total", ConstLabels: labels,
				Help: "Pushes of keys a full quota table could not admit, metered together in the kind's shared overflow bucket (a flood of fresh keys: senders, addresses or endpoints)."},
				func() float64 { return float64(t.overflowed.Load()) }),
		)
	}
	return out
}

// pushQuota is what one push is charged to.
type pushQuota struct {
	vapid   *quotaKey // verified VAPID key hash, or nil
	address netip.Addr
	hasAddr bool // address metered (no VAPID, not exempt)
	sub     quotaKey
}

// check takes a token from every bucket of p; when one is empty it returns
// the tokens already taken (a refused push costs nothing) and the refusal
// whose wait is longest: when every bucket has a token again.
func (q *quotas) check(p pushQuota, now time.Time) *quotaRefusal {
	var (
		taken [3]*rate.Reservation
		n     int
		worst *quotaRefusal
	)
	try := func(kind string, key quotaKey) {
		t := q.tables[kind]
		if t == nil {
			return
		}
		r, d := t.reserve(key, now)
		if r != nil {
			taken[n] = r
			n++
			return
		}
		if worst == nil || d > worst.delay {
			worst = &quotaRefusal{kind: kind, key: key, delay: d}
		}
	}
	if p.vapid != nil {
		try(quotaVAPID, *p.vapid)
	}
	if p.hasAddr {
		try(quotaAddress, addrKey(p.address))
	}
	try(quotaSubscription, p.sub)
	if worst != nil {
		for _, r := range taken[:n] {
			r.CancelAt(now)
		}
	}
	return worst
}

// refused counts a refusal and renders it.
func (q *quotas) refused(r *quotaRefusal) *apiError {
	q.byKind[r.kind].Inc()
	bucket := r.key
	if r.kind == quotaAddress {
		bucket = sha256.Sum256(r.key[:])
	}
	q.senders.WithLabelValues(r.kind, hex.EncodeToString(bucket[:1])).Inc()
	e := newError(http.StatusTooManyRequests, errnoTooManyRequests,
		fmt.Sprintf("Too many messages: over the %s quota; retry after the Retry-After delay", quotaNoun[r.kind]))
	e.retryAfter = retryAfterSecs(r.delay)
	return e
}

var quotaNoun = map[string]string{
	quotaVAPID:        "VAPID key's",
	quotaSubscription: "subscription's",
	quotaAddress:      "source address's",
}

// retryAfterSecs is a wait in whole seconds, rounded up, at least 1 (a
// Retry-After of 0 would invite an immediate, refused, retry).
func retryAfterSecs(d time.Duration) int {
	if d >= time.Duration(math.MaxInt32)*time.Second {
		return math.MaxInt32
	}
	return max(1, int((d+time.Second-1)/time.Second))
}

// subKey is the bucket key of an endpoint.
func subKey(ep schema.Endpoint) quotaKey {
	// One Sum256 over a stack buffer: sha256.New allocated per push.
	var buf [128]byte
	return sha256.Sum256(append(append(append(buf[:0], ep.UAID...), 0), ep.ChannelID...))
}

// addrKey is the bucket key of an address: IPv4, or the /64 of an IPv6
// one (one host usually holds the whole prefix).
func addrKey(a netip.Addr) quotaKey {
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			a = p.Addr()
		}
	}
	var k quotaKey
	b := a.As16()
	copy(k[:], b[:])
	// Shard by a byte that varies between clients (the first bytes of
	// IPv4-mapped addresses are all zero).
	k[0] = b[15] ^ b[7]
	k[sha256.Size-1] = 1
	return k
}

// privateAddr reports addresses a proxy in front of pushlog would use.
func privateAddr(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast()
}

// sourceAddr is the sender's address: the peer, or, when the peer is a
// trusted proxy, the rightmost X-Forwarded-For address that is not one.
// ok false: no address could be read (never from net/http's server).
func sourceAddr(remoteAddr string, xff []string, trusted []netip.Prefix) (netip.Addr, bool) {
	a, ok := parseAddr(remoteAddr)
	if !ok || len(trusted) == 0 || !inPrefixes(a, trusted) {
		return a, ok
	}
	// Rightmost first: entries left of the last trusted proxy's are
	// whatever the client wrote.
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			h, ok := parseAddr(strings.TrimSpace(parts[j]))
			if !ok {
				return a, true // garbage: the proxy itself is the source
			}
			if !inPrefixes(h, trusted) {
				return h, true
			}
			a = h
		}
	}
	return a, true
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr reads "host:port", "[v6]:port" or a bare address.
func parseAddr(s string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// ParseTrustedProxies reads a comma-separated list of CIDR prefixes or
// addresses (the --trusted-proxies flag).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR prefix", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// checkQuota charges a push to its VAPID key (verified), its source
// address (pushes without VAPID) and its endpoint; nil when every bucket
// had a token.
func (s *Server) checkQuota(req *http.Request, ep schema.Endpoint, auth authResult) *apiError {
	p := pushQuota{sub: subKey(ep)}
	if auth.ok {
		k := quotaKey(auth.keyHash)
		p.vapid = &k
	} else if a, ok := sourceAddr(req.RemoteAddr, req.Header["X-Forwarded-For"], s.cfg.Quota.TrustedProxies); ok &&
		(s.cfg.Quota.LimitPrivateAddresses || !privateAddr(a)) {
		p.address, p.hasAddr = a, true
	}
	now := s.now()
	r := s.quota.check(p, now)
	if r == nil {
		return nil
	}
	e := s.quota.refused(r)
	if s.quota.logs.AllowN(now, 1) {
		// Who is refused: the VAPID key hash as in the events'
		// vapid_key_hash (and its sub), the endpoint or the address.
		args := []any{"kind", r.kind, "retry_after", e.retryAfter}
		switch r.kind {
		case quotaVAPID:
			args = append(args, "vapid_key_hash", hex.EncodeToString(auth.keyHash[:]), "sub", auth.sub)
		case quotaSubscription:
			args = append(args, "uaid", ep.UAID, "channel", ep.ChannelID)
		case quotaAddress:
			args = append(args, "addr", p.address.String())
		}
		s.log.Info("push over its quota: 429 (at most one such line a second)", args...)
	}
	return e
}
