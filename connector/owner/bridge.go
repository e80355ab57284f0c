package owner

// The bridge delivery path (issue 14 point 2). A UAID registered through
// the mobile registration API (a BridgeRegistered on pushlog.registrations)
// has no socket: its owner hands each live message to the app's
// bridge.Sender (FCM, APNs) and settles it by the answer:
//
//   - Delivered: a Delivered event (conn_id "bridge:<router>/<app>") and
//     the message is settled at once by an Acked (code 100) the owner
//     writes itself. FCM and APNs give no end-to-end acknowledgement;
//     autopush deletes a message as soon as the bridge accepted it, and so
//     does pushlog (the phone's copy is the service's to deliver).
//   - Gone: the device token is dead. The owner writes a UserReset with
//     reason "bridge_gone": the UAID's pending messages are dropped, its
//     endpoints answer 410 (errno 103) through ingest's gone set, and the
//     registration API answers 410 so the app registers again.
//   - Retry (429, 5xx, no answer, refused credentials): sent again after the service's
//     Retry-After or an exponential back-off, only while the TTL lasts
//     and with the TTL left; past it the sweep expires the message
//     (Expired) — a message is never sent late.
//   - Failed: dropped (DROP_REASON_BRIDGE_REFUSED).
//
// A circuit breaker per app (gobreaker) stops calling a service that keeps
// failing; messages wait (pending, nothing lost) and are tried again when
// it half-opens, until their TTL.
//
// At most InFlight sends run at once, each on its own goroutine, and at
// most Queue more wait for one of them (bounded memory and goroutines
// under a flood of bridged messages). A message that finds the queue full
// stays pending, not in flight: its UAID is noted and handed to the
// bridge again once the queue has room (or the message expires), counted
// in pushlog_bridge_queue_full_total.
//
// The owner is the right place rather than a bridge role: it already
// holds each UAID's pending messages, their TTLs and the settlement rules,
// and a partition's new owner replays exactly the unsettled ones, so a
// node killed mid-send re-sends at least once, and never after the Acked
// was written (a settled message is not replayed).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pushlog/pushlog/connector/bridge"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// fBridgeBusy (pending.flags): a send of the message is in flight or
// scheduled; reasonBridged (pending.reason): settled by the bridge's
// acceptance, the owner writes the Acked.
const (
	fBridgeBusy   uint8 = fReread << 1
	reasonBridged uint8 = 255
)

// Defaults of BridgeConfig.
const (
	DefaultBridgeInFlight     = 512
	DefaultBridgeQueue        = 4096
	DefaultBridgeSendTimeout  = 15 * time.Second
	DefaultBridgeRetryMin     = time.Second
	DefaultBridgeRetryMax     = 5 * time.Minute
	DefaultBridgeBreakerFails = 5
	DefaultBridgeBreakerOpen  = 30 * time.Second
	bridgeAckCode             = 100 // what the settling Acked carries: delivered
	bridgeGoneReason          = "bridge_gone"
)

// BridgeConfig configures the bridge delivery path.
type BridgeConfig struct {
	// Senders are the configured apps, keyed "<router type>/<app id>"
	// ("fcm/org.mozilla.fenix"). A bridged UAID of an app not configured
	// here keeps its messages until their TTL (and a warning is logged).
	Senders map[string]bridge.Sender
	// InFlight bounds concurrent sends over all apps (default 512).
	InFlight int
	// Queue bounds the sends waiting for one of InFlight (default 4096);
	// past it a message stays pending and is handed over again when
	// there is room.
	Queue int
	// SendTimeout bounds one send (default 15s).
	SendTimeout time.Duration
	// RetryMin and RetryMax bound the back-off between attempts when the
	// service gives no Retry-After (defaults 1s, 5m).
	RetryMin, RetryMax time.Duration
	// BreakerFailures consecutive failed sends (no answer, 5xx) open an
	// app's breaker (default 5); it stays open BreakerOpen (default 30s).
	BreakerFailures uint32
	BreakerOpen     time.Duration
}

// bridgeReg is what the owner keeps of a bridged UAID.
type bridgeReg struct {
	app   string // "<router type>/<app id>"
	token string
	aps   string // APNs: the device's aps dictionary ("" for the default)
}

// bridges is the owner-wide part of the path: senders, breakers, the
// in-flight and queue bounds, metrics.
type bridges struct {
	cfg      BridgeConfig
	breakers map[string]*gobreaker.CircuitBreaker[bridge.Result]
	met      *bridgeMetrics
	ctxMu    sync.RWMutex
	ctx      context.Context

	// qmu guards the send goroutines' count, the queue and the UAIDs
	// waiting for room. It is taken under a partition's mu (submit), never
	// the other way round.
	qmu     sync.Mutex
	running int          // send goroutines, at most cfg.InFlight
	queue   []*bridgeJob // oldest first, at most cfg.Queue
	waiting []bridgeWaiter
	waitSet map[*uaidState]bool
}

// bridgeJob is one send of a message and where its answer goes.
type bridgeJob struct {
	ps  *partState
	u   *uaidState
	reg *bridgeReg
	m   *pending
	ref *pb.MessageRef
	msg bridge.Message
}

// bridgeWaiter is a UAID with a message that found the queue full.
type bridgeWaiter struct {
	ps *partState
	u  *uaidState
}

var errBridgeUnavailable = errors.New("bridge unavailable")

func newBridges(cfg BridgeConfig, reg prometheus.Registerer) (*bridges, error) {
	if len(cfg.Senders) == 0 {
		return nil, nil
	}
	cfg.InFlight = orDefault(cfg.InFlight, DefaultBridgeInFlight)
	cfg.Queue = orDefault(cfg.Queue, DefaultBridgeQueue)
	cfg.SendTimeout = orDefaultDur(cfg.SendTimeout, DefaultBridgeSendTimeout)
	cfg.RetryMin = orDefaultDur(cfg.RetryMin, DefaultBridgeRetryMin)
	cfg.RetryMax = orDefaultDur(cfg.RetryMax, DefaultBridgeRetryMax)
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = DefaultBridgeBreakerFails
	}
	cfg.BreakerOpen = orDefaultDur(cfg.BreakerOpen, DefaultBridgeBreakerOpen)
	b := &bridges{cfg: cfg, breakers: map[string]*gobreaker.CircuitBreaker[bridge.Result]{}, waitSet: map[*uaidState]bool{}}
	met, err := newBridgeMetrics(reg, b.queued)
	if err != nil {
		return nil, err
	}
	b.met = met
	for app := range cfg.Senders {
		fails := cfg.BreakerFailures
		b.breakers[app] = gobreaker.NewCircuitBreaker[bridge.Result](gobreaker.Settings{
			Name:        app,
			MaxRequests: 1,
			Timeout:     cfg.BreakerOpen,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= fails },
		})
	}
	return b, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func orDefaultDur(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// setContext is the owner's run context: sends end with it.
func (b *bridges) setContext(ctx context.Context) {
	b.ctxMu.Lock()
	b.ctx = ctx
	b.ctxMu.Unlock()
}

func (b *bridges) context() context.Context {
	b.ctxMu.RLock()
	defer b.ctxMu.RUnlock()
	return b.ctx
}

// submit starts j on a send goroutine, or queues it when InFlight run;
// false when the queue is full too: the caller leaves the message pending,
// and its UAID is noted (in the same step, so the send goroutines that
// filled the queue see it) to be handed to the bridge again when the
// queue has room. Called under j.ps.mu.
func (b *bridges) submit(j *bridgeJob) bool {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	if b.running < b.cfg.InFlight {
		b.running++
		go b.work(j)
		return true
	}
	if len(b.queue) < b.cfg.Queue {
		b.queue = append(b.queue, j)
		return true
	}
	if !b.waitSet[j.u] {
		b.waitSet[j.u] = true
		b.waiting = append(b.waiting, bridgeWaiter{j.ps, j.u})
	}
	return false
}

// queued is the number of sends waiting for a send goroutine.
func (b *bridges) queued() int {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	return len(b.queue)
}

// work runs j, then the queued sends, until the queue is empty; once the
// queue is down to half, it hands the waiting UAIDs (as many as there is
// room for) to the bridge again. The owner's end drops what is queued:
// the messages stay pending for the partition's next owner.
func (b *bridges) work(j *bridgeJob) {
	for {
		j.run(b)
		b.qmu.Lock()
		if b.context().Err() != nil {
			clear(b.queue)
			b.queue = b.queue[:0]
			b.waiting, b.waitSet = nil, map[*uaidState]bool{}
		}
		var retry []bridgeWaiter
		if room := b.cfg.Queue - len(b.queue); len(b.waiting) > 0 && room >= b.cfg.Queue/2 {
			n := min(room, len(b.waiting))
			retry = slices.Clone(b.waiting[:n])
			clear(b.waiting[:n])
			b.waiting = b.waiting[n:]
			for _, w := range retry {
				delete(b.waitSet, w.u)
			}
		}
		b.qmu.Unlock()
		for _, w := range retry {
			w.ps.mu.Lock()
			if !w.ps.closed && w.ps.uaids[w.u.id] == w.u {
				w.ps.bridgePending(w.u, true)
			}
			w.ps.mu.Unlock()
		}
		b.qmu.Lock()
		if len(b.queue) == 0 {
			b.running--
			b.qmu.Unlock()
			return
		}
		j = b.queue[0]
		b.queue[0] = nil
		b.queue = b.queue[1:]
		b.qmu.Unlock()
	}
}

// run sends j's message and settles it by the answer. A job can wait in
// the queue for minutes (Queue behind InFlight sends of up to
// SendTimeout): it is sent only if its message is still live and ours.
func (j *bridgeJob) run(b *bridges) {
	if b.context().Err() != nil {
		return // the owner ended: the message stays pending for the next one
	}
	if !j.stillDue(b) {
		return
	}
	res := b.send(j.reg.app, j.reg.token, j.msg)
	j.ps.mu.Lock()
	defer j.ps.mu.Unlock()
	j.ps.bridgeResult(j.u, j.reg, j.m, j.ref, res)
}

// stillDue reports whether j's message is still to be sent, and gives it
// the TTL left after its wait in the queue. A message settled, expired,
// replaced or no longer ours meanwhile (partition lost or revoked) is
// not sent: its busy flag is cleared and it is counted as stale.
func (j *bridgeJob) stillDue(b *bridges) bool {
	ps, m := j.ps, j.m
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := ps.env.now().UnixMilli()
	if ps.closed || m.u != j.u || m.state != stLive || now > m.expiryMs {
		m.flags &^= fBridgeBusy
		b.met.observe(j.reg.app, "stale", 0)
		return false
	}
	if j.msg.TTL > 0 {
		j.msg.TTL = time.Duration(m.expiryMs-now) * time.Millisecond
	}
	return true
}

// states is every app's breaker state by app.
func (b *bridges) states() map[string]gobreaker.State {
	if b == nil {
		return nil
	}
	out := make(map[string]gobreaker.State, len(b.breakers))
	for app, cb := range b.breakers {
		out[app] = cb.State()
	}
	return out
}

// send runs one send through the app's breaker. A breaker that refuses
// is a Retry after its open time.
func (b *bridges) send(app, token string, msg bridge.Message) bridge.Result {
	snd, cb := b.cfg.Senders[app], b.breakers[app]
	ctx, cancel := context.WithTimeout(b.context(), b.cfg.SendTimeout)
	defer cancel()
	start := time.Now()
	res, err := cb.Execute(func() (bridge.Result, error) {
		r := snd.Send(ctx, token, msg)
		if r.Outcome == bridge.Retry && (r.Unavailable || r.Status == 0 || r.Status >= 500) {
			// The service is down or refuses the app's credentials: count
			// it, so the breaker opens and messages wait instead of each
			// paying a send until the operator fixes the key.
			return r, errBridgeUnavailable
		}
		return r, nil
	})
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		b.met.observe(app, "breaker_open", 0)
		return bridge.Result{Outcome: bridge.Retry, RetryAfter: b.cfg.BreakerOpen, Reason: "breaker_open"}
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		// Half-open: one probe is in flight and decides within SendTimeout.
		// Waiting a whole BreakerOpen here would expire every message whose
		// TTL is shorter than that although the service may be back.
		b.met.observe(app, "breaker_open", 0)
		return bridge.Result{Outcome: bridge.Retry, RetryAfter: min(b.cfg.RetryMin, b.cfg.BreakerOpen), Reason: "breaker_half_open"}
	}
	b.met.observe(app, res.Outcome.String(), time.Since(start))
	return res
}

// backoff is the wait before attempt n+1 when the service named none:
// exponential from RetryMin, capped at RetryMax, with jitter.
func (b *bridges) backoff(attempts int32) time.Duration {
	d := b.cfg.RetryMin << min(max(attempts-1, 0), 20)
	d = min(d, b.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// BridgeBreakers reports each configured app's circuit breaker (keyed
// "<router type>/<app id>"), for pushlog_breaker_state{component="bridge"}
// and so `pushlog status`.
func (o *Owner) BridgeBreakers() map[string]gobreaker.State { return o.env.bridges.states() }

// readBridges folds the bridge registrations of partition ps.p below the
// committed registrations offset (from the start of the log, a week): the
// channel snapshots carry channels, not bridges, and the fold resumes at
// the committed offset. The registration API re-appends an active
// device's BridgeRegistered daily, so every live bridged UAID is within
// the log's retention. Skipped when no bridge is configured.
func (o *Owner) readBridges(ctx context.Context, ps *partState, starts kadm.ListedOffsets, end int64) error {
	if o.env.bridges == nil {
		return nil
	}
	topic := o.cfg.Names.Registrations
	from, err := listed(starts, topic, ps.p)
	if err != nil {
		return err
	}
	for off := from; off < end; {
		fp, err := fetchAt(ctx, o.adm, topic, ps.p, off, 8<<20)
		if err != nil {
			return fmt.Errorf("read bridges in %s/%d at %d: %w", topic, ps.p, off, err)
		}
		if len(fp.Records) == 0 {
			break
		}
		ps.mu.Lock()
		for _, rec := range fp.Records {
			if rec.Offset >= end {
				break
			}
			ev, err := schema.Decode(rec)
			if err != nil {
				continue
			}
			id, err := schema.ParseUAID(ev.GetUaid())
			if err != nil {
				continue
			}
			switch b := ev.GetBody().(type) {
			case *pb.Event_BridgeRegistered:
				ps.foldBridge(ev, b.BridgeRegistered, id)
			case *pb.Event_UserReset:
				delete(ps.bridged, id)
			}
		}
		ps.mu.Unlock()
		off = fp.Records[len(fp.Records)-1].Offset + 1
	}
	return nil
}

// foldBridge folds a BridgeRegistered: the UAID is (still) bridged, with
// this token; anything pending goes out with it.
func (ps *partState) foldBridge(ev *pb.Event, b *pb.BridgeRegistered, id schema.UAID) {
	app := b.GetRouterType() + "/" + b.GetAppId()
	if ps.bridged == nil {
		ps.bridged = make(map[schema.UAID]*bridgeReg)
	}
	ps.bridged[id] = &bridgeReg{app: app, token: b.GetToken(), aps: b.GetAps()}
	// A bridged device never connects: its registration (re-appended by
	// the device's daily check) is what keeps it from the idle expiry.
	ps.seenAt(id, ev.GetTimeMs())
	if ps.env.bridges != nil && ps.env.bridges.cfg.Senders[app] == nil {
		ps.env.log.Warn("bridged UAID of an app not configured: its messages wait until their TTL", "uaid", ev.GetUaid(), "app", app)
	}
	if u := ps.uaids[id]; u != nil && ps.ready {
		ps.deliverPending(u, true)
	}
}

// bridgePending hands u's live messages not already in flight to its
// bridge. It is deliverPending for a bridged UAID (true when u is one).
func (ps *partState) bridgePending(u *uaidState, allowFetch bool) bool {
	reg := ps.bridged[u.id]
	if reg == nil {
		return false
	}
	bs := ps.env.bridges
	if bs == nil || bs.cfg.Senders[reg.app] == nil || !ps.ready {
		return true
	}
	now := ps.env.now().UnixMilli()
	for i, m := range u.pending {
		if m.state != stLive || m.flags&fBridgeBusy != 0 || now > m.expiryMs {
			continue
		}
		if m.body == nil && m.flags&fBodyGone != 0 {
			if allowFetch && !u.fetching {
				ps.startReread(u, u.pending[i:], now)
			}
			if allowFetch {
				return true
			}
			continue
		}
		if !ps.bridgeSend(u, reg, m, now) {
			return true // the queue is full: the rest waits for room
		}
	}
	return true
}

// bridgeSend starts one send of m (flagged in flight until it settles or
// is scheduled again); false when the send queue is full (m stays
// pending, not in flight). Called with ps.mu held; the send runs outside
// it.
func (ps *partState) bridgeSend(u *uaidState, reg *bridgeReg, m *pending, now int64) bool {
	n, err := ps.notification(u, m)
	if err != nil {
		ps.env.log.Warn("bridge message not built", "partition", ps.p, "offset", m.offset, "err", err)
		return true
	}
	msg := bridge.Message{
		UAID: u.id, ChannelID: n.ChannelID, Version: n.Version, Data: n.Data,
		Encoding: n.Encoding, Encryption: n.Encryption, CryptoKey: n.CryptoKey,
		TTL:     time.Duration(m.expiryMs-now) * time.Millisecond,
		Urgency: schema.UrgencyName(pb.Urgency(m.urgency)),
		Topic:   handleValue(m.topic),
		Aps:     reg.aps,
	}
	if pb.Urgency(m.urgency) == pb.Urgency_URGENCY_NORMAL {
		msg.Urgency = "normal"
	}
	if m.flags&fTTL0 != 0 {
		msg.TTL = 0 // the sender's TTL 0: the service delivers now or drops it
	}
	bs := ps.env.bridges
	if !bs.submit(&bridgeJob{ps: ps, u: u, reg: reg, m: m, ref: n.Ref, msg: msg}) {
		bs.met.queueFull(reg.app)
		return false
	}
	m.flags |= fBridgeBusy
	m.attempts++
	return true
}

// bridgeResult settles m by the service's answer (ps.mu held).
func (ps *partState) bridgeResult(u *uaidState, reg *bridgeReg, m *pending, ref *pb.MessageRef, res bridge.Result) {
	m.flags &^= fBridgeBusy
	if ps.closed || m.u != u || m.state != stLive {
		return // settled meanwhile (deleted, replaced, expired) or no longer ours
	}
	env := ps.env
	switch res.Outcome {
	case bridge.Delivered:
		ev := schema.NewEvent(u.uaid(), env.now())
		ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{
			Msg: ref, Node: env.cfg.NodeID, ConnId: "bridge:" + reg.app, Attempt: m.attempts,
		}}
		env.produce(ev, func(err error) {
			env.log.Debug("delivered event not written", "partition", ps.p, "offset", m.offset, "err", err)
		})
		ps.markSettling(m, reasonBridged)
	case bridge.Gone:
		if ps.bridged[u.id] != reg {
			ps.bridgePending(u, true) // a newer token arrived meanwhile: use it
			return
		}
		delete(ps.bridged, u.id)
		ps.produceBridgeGone(u)
	case bridge.Failed:
		env.log.Info("bridge refused a message", "app", reg.app, "reason", res.Reason, "status", res.Status)
		ps.markSettling(m, reasonDropped+uint8(pb.DropReason_DROP_REASON_BRIDGE_REFUSED))
	default: // Retry
		wait := res.RetryAfter
		if wait <= 0 {
			wait = env.bridges.backoff(m.attempts)
		}
		at := env.now().Add(wait).UnixMilli()
		if at > m.expiryMs {
			// Parked (busy) until the sweep expires it: never sent late,
			// never before the service's Retry-After.
			m.flags |= fBridgeBusy
			return
		}
		m.flags |= fBridgeBusy // waiting counts as in flight: no second timer
		env.bridges.met.retry(reg.app)
		time.AfterFunc(wait, func() {
			ps.mu.Lock()
			defer ps.mu.Unlock()
			m.flags &^= fBridgeBusy
			if ps.closed || m.u != u || m.state != stLive {
				return
			}
			ps.bridgePending(u, true)
		})
	}
}

// produceBridgeGone writes the UserReset of a UAID whose token is dead.
func (ps *partState) produceBridgeGone(u *uaidState) {
	r, _ := ps.recs.get(u.id)
	active, _ := r.split()
	ids := make([][]byte, 0, len(active))
	for _, ch := range active {
		ids = append(ids, append([]byte(nil), ch[:]...))
	}
	ev := schema.NewEvent(u.uaid(), ps.env.now())
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: bridgeGoneReason, ChannelIds: ids}}
	ps.env.produce(ev, func(err error) {
		ps.env.log.Warn("bridge gone: UserReset not written", "uaid", u.uaid(), "err", err)
	})
}

// bridgeMetrics are the bridge series.
type bridgeMetrics struct {
	sends   *prometheus.CounterVec   // app, outcome
	latency *prometheus.HistogramVec // app
	retries *prometheus.CounterVec   // app
	full    *prometheus.CounterVec   // app
	queued  prometheus.GaugeFunc
}

func newBridgeMetrics(reg prometheus.Registerer, queued func() int) (*bridgeMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &bridgeMetrics{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_bridge_sends_total",
			Help: "Messages handed to a mobile bridge (FCM, APNs) by app and outcome: delivered, gone, retry, failed, breaker_open, stale (settled, expired or no longer owned while it waited in the send queue: not sent).",
		}, []string{"app", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushlog_bridge_send_seconds",
			Help:    "Time a bridge send took, answer included, by app.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"app"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_bridge_retries_total",
			Help: "Bridge sends scheduled again (429, 5xx, no answer, refused credentials, breaker open) within the message's TTL, by app.",
		}, []string{"app"}),
		full: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_bridge_queue_full_total",
			Help: "Bridged messages that found the send queue full (--bridge-in-flight sends running and 4096 waiting by default): they stay pending and are handed over again when there is room, by app.",
		}, []string{"app"}),
		queued: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushlog_bridge_queued",
			Help: "Bridge sends waiting for a send slot (at most 4096 by default).",
		}, func() float64 { return float64(queued()) }),
	}
	for _, c := range []prometheus.Collector{m.sends, m.latency, m.retries, m.full, m.queued} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *bridgeMetrics) observe(app, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.sends.WithLabelValues(app, outcome).Inc()
	if d > 0 {
		m.latency.WithLabelValues(app).Observe(d.Seconds())
	}
}

func (m *bridgeMetrics) retry(app string) {
	if m != nil {
		m.retries.WithLabelValues(app).Inc()
	}
}

func (m *bridgeMetrics) queueFull(app string) {
	if m != nil {
		m.full.WithLabelValues(app).Inc()
	}
}
