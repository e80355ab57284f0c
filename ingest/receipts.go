package ingest

// Push message receipts, RFC 8030 §5.1 and §6.2 (issue 15 point 2).
//
// A sender gets a receipt subscription either with POST {base}/receipts
// (201, Location and a Link rel="urn:ietf:params:push:receipt") or by
// pushing with "Prefer: respond-async" without one (the push answers 202
// with the Link of a subscription, as §5.1 says: for a VAPID sender always
// the same one, bound to its key; otherwise a new one). A push carrying
// "Push-Receipt: <receipt subscription URI>" (the header of the RFC's
// drafts, kept so a sender can reuse one subscription) or
// "Prefer: respond-async" answers 202 instead of 201: the service accepted
// the message for delivery with confirmation. The URI is a sealed token
// (schema.SealReceiptSub): a forged or foreign one opens nowhere (400
// errno 131), and one created by a VAPID sender is bound to its key.
//
// The receipt subscription id travels in MessageAccepted.receipt_sub; every
// ingest node's one fold of the messages and acks topics (the status
// table of GET /m/{id}, followed by receipts_fold.go) decides each
// message's outcome, and the node keeps the last receipts of each subscription for a bounded time, so any
// node serves GET of any subscription and a client that reconnects gets
// what it missed. A receipt exists only once the Acked (Expired, Dropped)
// event is in Kafka: the fold reads it from there.
//
// GET of the subscription (receipts_stream.go) delivers them as the RFC
// says — HTTP/2 server push of the message resource /m/{id} with a 410 —
// or, for clients that ignore server push, as Server-Sent Events or NDJSON
// (chosen by Accept).

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema"
)

// Receipt defaults (ReceiptsConfig fields left zero).
const (
	DefaultReceiptRetention      = 24 * time.Hour
	DefaultReceiptBuffer         = 1000
	DefaultReceiptSubsPerSender  = 100
	DefaultReceiptStreams        = 1000
	DefaultReceiptIdle           = 5 * time.Minute
	DefaultReceiptPending        = 1_000_000
	DefaultReceiptSubscriptions  = 100_000
	receiptRelation              = "urn:ietf:params:push:receipt"
	hdrPushReceipt               = "Push-Receipt"
	hdrPrefer                    = "Prefer"
	errnoInvalidReceipt          = 131 // 400: Push-Receipt is not a receipt subscription of this service
	maxReceiptHeader             = 512
	receiptSenderWindowEntries   = 100_000
	receiptStreamsPerSub         = 4
	receiptKeyBoundMismatchError = "Push-Receipt belongs to another VAPID key"
)

// ReceiptsConfig configures push receipts (RFC 8030 §5.1).
type ReceiptsConfig struct {
	// Feed is the node's status fold the receipts follow (the one that
	// answers GET /m/{id}; it must read at least Retention back: its
	// History); nil: receipts are off: POST /receipts and a push asking
	// for a receipt answer 501 errno 131.
	Feed StatusFeed
	// Retention is how long receipts are kept for a client that
	// reconnects, and how far back a starting node reads (default 24h).
	Retention time.Duration
	// Buffer bounds the receipts kept per subscription (default 1000):
	// past it the oldest are forgotten (counted).
	Buffer int
	// SubsPerSender bounds the receipt subscriptions one sender (VAPID
	// key, else source address) creates per Retention (default 100): past
	// it 429.
	SubsPerSender int
	// Subscriptions bounds the subscriptions with receipts held in memory
	// (default 100000): receipts for more are dropped (counted).
	Subscriptions int
	// MaxStreams bounds concurrent GETs of receipt subscriptions (default
	// 1000): past it 503.
	MaxStreams int
	// Idle ends a GET after this long without a receipt (default 5m).
	Idle time.Duration
	// MaxPending bounds messages awaiting their receipt in the fold
	// (default 1e6); past it the oldest are forgotten (counted).
	MaxPending int
}

func (c *ReceiptsConfig) withDefaults() {
	c.Retention = cmp.Or(max(c.Retention, 0), DefaultReceiptRetention)
	c.Buffer = cmp.Or(max(c.Buffer, 0), DefaultReceiptBuffer)
	c.SubsPerSender = cmp.Or(max(c.SubsPerSender, 0), DefaultReceiptSubsPerSender)
	c.Subscriptions = cmp.Or(max(c.Subscriptions, 0), DefaultReceiptSubscriptions)
	c.MaxStreams = cmp.Or(max(c.MaxStreams, 0), DefaultReceiptStreams)
	c.Idle = cmp.Or(max(c.Idle, 0), DefaultReceiptIdle)
	c.MaxPending = cmp.Or(max(c.MaxPending, 0), DefaultReceiptPending)
}

// receiptMetrics are the receipts' series; bounds each have a reason.
type receiptMetrics struct {
	created  prometheus.Counter
	refused  *prometheus.CounterVec // reason: forged, key_mismatch, senders_quota, streams, streams_per_subscription, disabled
	emitted  *prometheus.CounterVec // outcome: acked, expired, dropped
	lost     *prometheus.CounterVec // reason: buffer, subscriptions, pending
	streams  prometheus.Gauge
	pending  prometheus.GaugeFunc
	pushed   *prometheus.CounterVec // via: h2_push, sse, ndjson
	idleEnds prometheus.Counter
}

func newReceiptMetrics(reg prometheus.Registerer, pending func() float64) (*receiptMetrics, error) {
	m := &receiptMetrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushlog_ingest_receipt_subscriptions_created_total",
			Help: "Receipt subscriptions created (POST /receipts or Prefer: respond-async)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushlog_ingest_receipt_refused_total",
			Help: "Receipt requests refused, by reason."}, []string{"reason"}),
		emitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushlog_ingest_receipts_total",
			Help: "Receipts folded from the acks topic, by outcome."}, []string{"outcome"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushlog_ingest_receipts_forgotten_total",
			Help: "Receipts or pending receipt requests forgotten at a bound, by bound."}, []string{"bound"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pushlog_ingest_receipt_streams",
			Help: "GETs of receipt subscriptions open now."}),
		pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushlog_ingest_receipt_pending",
			Help: "Messages awaiting their receipt in this node's fold."}, pending),
		pushed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushlog_ingest_receipts_sent_total",
			Help: "Receipts sent to senders, by transport."}, []string{"via"}),
		idleEnds: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushlog_ingest_receipt_streams_idle_total",
			Help: "Receipt GETs ended by the idle timeout."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.created, m.refused, m.emitted, m.lost, m.streams, m.pending, m.pushed, m.idleEnds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register receipt metrics: %w", err)
		}
	}
	return m, nil
}

// receipts is the server's receipt state: the fold, the stream bound and
// the per-sender creation counts.
type receipts struct {
	cfg     ReceiptsConfig
	enabled bool
	fold    *receiptFold
	met     *receiptMetrics
	// pushSecret marks the requests this process synthesises for server
	// push (answered 410 by the receipt middleware, never by a route); a
	// client cannot guess it.
	pushSecret string

	// pushedReceipts holds each receipt whose server push is in flight,
	// by the nonce of its synthesised request (deleted when answered).
	pushedReceipts sync.Map

	mu         sync.Mutex
	streams    int
	subStreams map[[16]byte]int // open GETs per subscription (bounded by streams)
	senders    map[string]*senderWindow
}

type senderWindow struct {
	start time.Time
	n     int
}

func newReceipts(cfg ReceiptsConfig, reg prometheus.Registerer, now func() time.Time) (*receipts, error) {
	cfg.withDefaults()
	var secret [16]byte
	_, _ = rand.Read(secret[:])
	r := &receipts{cfg: cfg, enabled: cfg.Feed != nil, pushSecret: hex.EncodeToString(secret[:]), senders: map[string]*senderWindow{}, subStreams: map[[16]byte]int{}}
	r.fold = newReceiptFold(cfg, now)
	if cfg.Feed != nil {
		cfg.Feed.Follow(r.fold.follow)
	}
	met, err := newReceiptMetrics(reg, func() float64 { return float64(r.fold.pendingLen()) })
	if err != nil {
		return nil, err
	}
	r.met = met
	r.fold.met = met
	return r, nil
}

// allowCreate counts a subscription created by sender; false past
// SubsPerSender in the current Retention window. With the window table full
// a new sender is admitted uncounted (never refused for others' flood).
func (r *receipts) allowCreate(sender string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.senders[sender]
	if w == nil || now.Sub(w.start) >= r.cfg.Retention {
		if w == nil && len(r.senders) >= receiptSenderWindowEntries {
			for k, v := range r.senders { // sweep ended windows; map bounded
				if now.Sub(v.start) >= r.cfg.Retention {
					delete(r.senders, k)
				}
			}
			if len(r.senders) >= receiptSenderWindowEntries {
				// A flood of fresh keys filled the table: refusing would
				// lock every new sender out until the windows end (a day
				// by default). Admit uncounted: a sealed subscription
				// costs nothing here, the fold's own bounds hold memory.
				r.met.lost.WithLabelValues("sender_windows").Inc()
				return true
			}
		}
		w = &senderWindow{start: now}
		r.senders[sender] = w
	}
	if w.n >= r.cfg.SubsPerSender {
		return false
	}
	w.n++
	return true
}

// acquireStream takes one of MaxStreams slots for subscription id; ok false
// past either bound, perSub true when it is the subscription's own bound
// (receiptStreamsPerSub: one reader needs one stream, a few cover its
// reconnections, and one holder cannot take every slot of the node).
func (r *receipts) acquireStream(id [16]byte) (ok, perSub bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.subStreams[id] >= receiptStreamsPerSub {
		return false, true
	}
	if r.streams >= r.cfg.MaxStreams {
		return false, false
	}
	r.streams++
	r.subStreams[id]++
	r.met.streams.Inc()
	return true, false
}

func (r *receipts) streamsOpen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams
}

func (r *receipts) releaseStream(id [16]byte) {
	r.mu.Lock()
	r.streams--
	if r.subStreams[id]--; r.subStreams[id] <= 0 {
		delete(r.subStreams, id)
	}
	r.mu.Unlock()
	r.met.streams.Dec()
}

// receiptURL is the receipt subscription URI of token.
func (s *Server) receiptURL(token string) string { return s.base + "/r/" + token }

// newReceiptSub creates (seals) a receipt subscription for a sender: bound
// to its VAPID key when it has one. sender keys the per-sender bound.
func (s *Server) newReceiptSub(auth authResult, sender string) (schema.ReceiptSub, string, *apiError) {
	if !s.receipts.enabled {
		s.receipts.met.refused.WithLabelValues("disabled").Inc()
		return schema.ReceiptSub{}, "", newError(http.StatusNotImplemented, errnoInvalidReceipt, "Push receipts are not enabled on this service")
	}
	if !s.receipts.allowCreate(sender, s.now()) {
		s.receipts.met.refused.WithLabelValues("senders_quota").Inc()
		e := newError(http.StatusTooManyRequests, errnoInvalidReceipt,
			fmt.Sprintf("Too many receipt subscriptions: at most %d per sender per %s; reuse one with Push-Receipt", s.receipts.cfg.SubsPerSender, s.receipts.cfg.Retention))
		return schema.ReceiptSub{}, "", e
	}
	var sub schema.ReceiptSub
	_, _ = rand.Read(sub.ID[:])
	if auth.ok {
		sub.KeyHash = append([]byte(nil), auth.keyHash[:]...)
	}
	tok, err := s.cfg.Sealer.SealReceiptSub(sub)
	if err != nil {
		return schema.ReceiptSub{}, "", newError(http.StatusInternalServerError, errnoUnknown, "Could not seal the receipt subscription")
	}
	s.receipts.met.created.Inc()
	return sub, tok, nil
}

// receiptSender names the sender for the creation bound: its VAPID key, or
// its address as the quotas read it (behind --trusted-proxies, the client's
// X-Forwarded-For address; IPv6 by its /64).
func receiptSender(auth authResult, req *http.Request, trusted []netip.Prefix) string {
	if auth.ok {
		return "k:" + hex.EncodeToString(auth.keyHash[:])
	}
	a, ok := sourceAddr(req.RemoteAddr, req.Header["X-Forwarded-For"], trusted)
	if !ok {
		return "a:" + req.RemoteAddr
	}
	if a.Is6() {
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return "a:" + a.String()
}

// handleCreateReceipts serves POST {base}/receipts: 201, Location and Link
// of a new receipt subscription; with a VAPID Authorization header it is
// bound to that key.
func (s *Server) handleCreateReceipts(c echo.Context) error {
	req := c.Request()
	auth, aerr := s.authenticate(req.Header, schema.Endpoint{})
	if aerr != nil {
		return aerr
	}
	_, tok, aerr := s.newReceiptSub(auth, receiptSender(auth, req, s.cfg.Quota.TrustedProxies))
	if aerr != nil {
		return aerr
	}
	u := s.receiptURL(tok)
	h := c.Response().Header()
	h.Set(hdrLocation, u)
	h.Set("Link", "<"+u+">; rel=\""+receiptRelation+"\"")
	c.Response().WriteHeader(http.StatusCreated)
	return nil
}

// openReceiptURI checks a Push-Receipt value: a receipt subscription URI of
// this service (its base, /r/, a token that opens).
func (s *Server) openReceiptURI(v string) (schema.ReceiptSub, *apiError) {
	bad := func(msg string) (schema.ReceiptSub, *apiError) {
		s.receipts.met.refused.WithLabelValues("forged").Inc()
		return schema.ReceiptSub{}, badRequest(errnoInvalidReceipt, msg)
	}
	if len(v) > maxReceiptHeader {
		return bad(fmt.Sprintf("Push-Receipt longer than %d bytes", maxReceiptHeader))
	}
	tok, ok := strings.CutPrefix(v, s.base+"/r/")
	if !ok {
		// A relative reference on our origin is accepted too.
		u, err := url.Parse(v)
		if err != nil || u.IsAbs() {
			return bad("Push-Receipt is not a receipt subscription URI of this service")
		}
		base, _ := url.Parse(s.base)
		if tok, ok = strings.CutPrefix(u.Path, strings.TrimRight(base.Path, "/")+"/r/"); !ok {
			return bad("Push-Receipt is not a receipt subscription URI of this service")
		}
	}
	sub, err := s.cfg.Sealer.OpenReceiptSub(tok)
	if err != nil {
		return bad("Push-Receipt names no receipt subscription of this service (unknown or forged)")
	}
	return sub, nil
}

// receiptRequest reads Push-Receipt and Prefer: respond-async on a push
// (RFC 8030 §5.1). It returns the subscription id for the event and the
// receipt URI for the 202's Link ("" when no receipt was asked for).
func (s *Server) receiptRequest(req *http.Request, auth authResult) (id []byte, link string, aerr *apiError) {
	pr := req.Header[hdrPushReceipt]
	async := preferRespondAsync(req.Header[hdrPrefer])
	if len(pr) == 0 && !async {
		return nil, "", nil
	}
	if len(pr) > 1 {
		s.receipts.met.refused.WithLabelValues("forged").Inc()
		return nil, "", badRequest(errnoInvalidReceipt, "More than one Push-Receipt header")
	}
	if len(pr) == 1 {
		if !s.receipts.enabled {
			s.receipts.met.refused.WithLabelValues("disabled").Inc()
			return nil, "", newError(http.StatusNotImplemented, errnoInvalidReceipt, "Push receipts are not enabled on this service")
		}
		sub, aerr := s.openReceiptURI(strings.TrimSpace(pr[0]))
		if aerr != nil {
			return nil, "", aerr
		}
		if len(sub.KeyHash) > 0 && (!auth.ok || string(sub.KeyHash) != string(auth.keyHash[:])) {
			s.receipts.met.refused.WithLabelValues("key_mismatch").Inc()
			return nil, "", newError(http.StatusForbidden, errnoInvalidReceipt, receiptKeyBoundMismatchError)
		}
		tok, _ := s.cfg.Sealer.SealReceiptSub(sub) // deterministic: the same URI
		return sub.ID[:], s.receiptURL(tok), nil
	}
	if auth.ok && s.receipts.enabled {
		// A VAPID sender's respond-async pushes share one subscription,
		// bound to its key (sealing is deterministic: the same URI each
		// time), so they never count against SubsPerSender.
		sub := schema.ReceiptSub{KeyHash: append([]byte(nil), auth.keyHash[:]...)}
		sum := sha256.Sum256(append([]byte("pushlog receipt subscription of a key"), auth.keyHash[:]...))
		copy(sub.ID[:], sum[:])
		tok, err := s.cfg.Sealer.SealReceiptSub(sub)
		if err != nil {
			return nil, "", newError(http.StatusInternalServerError, errnoUnknown, "Could not seal the receipt subscription")
		}
		return sub.ID[:], s.receiptURL(tok), nil
	}
	sub, tok, aerr := s.newReceiptSub(auth, receiptSender(auth, req, s.cfg.Quota.TrustedProxies))
	if aerr != nil {
		return nil, "", aerr
	}
	return sub.ID[:], s.receiptURL(tok), nil
}

// preferRespondAsync reports whether a Prefer header asks for respond-async
// (RFC 7240: comma-separated preferences, parameters after ';').
func preferRespondAsync(vals []string) bool {
	for _, v := range vals {
		for p := range strings.SplitSeq(v, ",") {
			name, _, _ := strings.Cut(p, ";")
			name, _, _ = strings.Cut(name, "=")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// ctxReceiptLink is the echo context key of the 202's receipt Link.
const ctxReceiptLink = "pushlog.receipt"

// receiptAccepted turns the push's 201 into RFC 8030 §5.1's 202 with the
// receipt subscription's Link, when a receipt was requested.
func receiptAccepted(c echo.Context) int {
	link, _ := c.Get(ctxReceiptLink).(string)
	if link == "" {
		return http.StatusCreated
	}
	h := c.Response().Header()
	h.Set("Link", "<"+link+">; rel=\""+receiptRelation+"\"")
	if preferRespondAsync(c.Request().Header[hdrPrefer]) {
		h.Set("Preference-Applied", "respond-async") // RFC 7240 §3
	}
	return http.StatusAccepted
}
