package owner

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/bridge"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// fakeSender answers each send with next(call number, token, message).
type fakeSender struct {
	mu   sync.Mutex
	got  []bridge.Message
	toks []string
	next func(n int, token string, m bridge.Message) bridge.Result
}

func (f *fakeSender) Send(_ context.Context, token string, m bridge.Message) bridge.Result {
	f.mu.Lock()
	f.got = append(f.got, m)
	f.toks = append(f.toks, token)
	n, next := len(f.got), f.next
	f.mu.Unlock()
	return next(n, token, m)
}
func (f *fakeSender) Check(bridge.Message) error { return nil }
func (f *fakeSender) MaxPayload() int            { return 4096 }

func (f *fakeSender) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

func (f *fakeSender) setNext(next func(n int, token string, m bridge.Message) bridge.Result) {
	f.mu.Lock()
	f.next = next
	f.mu.Unlock()
}

func delivered(int, string, bridge.Message) bridge.Result {
	return bridge.Result{Outcome: bridge.Delivered, Status: 200}
}

func (e *testEnv) bridgeRegister(uaid, token string) {
	ev := e.event(uaid)
	ev.Body = &pb.Event_BridgeRegistered{BridgeRegistered: &pb.BridgeRegistered{RouterType: "fcm", AppId: "app", Token: token}}
	e.produce(ev)
}

// startBridged runs an owner with one FCM app served by snd, and a bridged
// UAID with one channel in partition 0.
func (e *testEnv) startBridged(snd *fakeSender, mod func(*BridgeConfig)) (*runningOwner, string, string) {
	r := e.start(func(c *Config) {
		c.Bridges = BridgeConfig{Senders: map[string]bridge.Sender{"fcm/app": snd}, RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond}
		if mod != nil {
			mod(&c.Bridges)
		}
		c.Metrics = prometheus.NewRegistry()
	})
	e.waitReady(r, testPartitions)
	uaid, ch := uaidIn(0), newChannel()
	e.bridgeRegister(uaid, "device-token-1")
	e.register(uaid, ch)
	// The registrations and messages topics are folded independently: a
	// TTL 0 message folded before the registration is dropped offline.
	waitFor(e.t, "the bridge registration folded", func() bool { return bridgedIn(r.Owner, 0, uaid) })
	return r, uaid, ch
}

// bridgedIn reports whether partition p of o has folded uaid's bridge
// registration.
func bridgedIn(o *Owner, p int32, uaid string) bool {
	id, err := schema.ParseUAID(uaid)
	if err != nil {
		return false
	}
	o.mu.RLock()
	ps := o.parts[p]
	o.mu.RUnlock()
	if ps == nil {
		return false
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.bridged[id] != nil
}

func (e *testEnv) acksOfKind(p int32, kind string) []*pb.Event {
	var out []*pb.Event
	for _, ev := range e.acksOf(p) {
		if schema.TypeName(ev) == kind {
			out = append(out, ev)
		}
	}
	return out
}

func TestBridgeDelivered(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: delivered}
	r, uaid, ch := e.startBridged(snd, nil)
	ref := e.accept(uaid, ch, withTopic("news"), func(m *pb.MessageAccepted) { m.Urgency = pb.Urgency_URGENCY_HIGH })
	waitFor(t, "Acked written", func() bool { return len(e.acksOfKind(0, "acked")) == 1 })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	m := snd.got[0]
	if snd.toks[0] != "device-token-1" || m.ChannelID != ch || string(m.Data) != "payload "+ch || m.Encoding != "aes128gcm" ||
		m.Urgency != "high" || m.Topic != "news" || m.TTL <= 0 || m.TTL > time.Hour || m.UAID.String() != uaid || m.Version == "" {
		t.Fatalf("sent %+v with token %q", m, snd.toks[0])
	}
	d := e.acksOfKind(0, "delivered")
	if len(d) != 1 || d[0].GetDelivered().GetConnId() != "bridge:fcm/app" || d[0].GetDelivered().GetMsg().GetOffset() != ref.GetOffset() {
		t.Fatalf("delivered events %v", d)
	}
	if a := e.acksOfKind(0, "acked")[0].GetAcked(); a.GetCode() != 100 || a.GetMsg().GetOffset() != ref.GetOffset() {
		t.Fatalf("acked %v", a)
	}
	if n := snd.calls(); n != 1 {
		t.Fatalf("%d sends, want 1", n)
	}
	// a new token is used from then on
	e.bridgeRegister(uaid, "device-token-2")
	e.accept(uaid, ch)
	waitFor(t, "second send", func() bool { return snd.calls() == 2 })
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if snd.toks[1] != "device-token-2" {
		t.Fatalf("token %q after the update", snd.toks[1])
	}
}

func TestBridgeGone(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: func(int, string, bridge.Message) bridge.Result {
		return bridge.Result{Outcome: bridge.Gone, Status: 404, Reason: "UNREGISTERED"}
	}}
	r, uaid, ch := e.startBridged(snd, nil)
	ref := e.accept(uaid, ch)
	waitFor(t, "dropped as reset", func() bool { return e.dropsOf(0)[ref.GetOffset()] == pb.DropReason_DROP_REASON_USER_RESET })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	var reset *pb.UserReset
	for off := int64(0); ; off++ {
		fp, err := fetchAt(context.Background(), e.prod, schema.TopicRegistrations, 0, off, 1<<20)
		if err != nil || len(fp.Records) == 0 {
			break
		}
		for _, rec := range fp.Records {
			if ev, _ := schema.Decode(rec); ev.GetUserReset() != nil {
				reset = ev.GetUserReset()
			}
			off = rec.Offset
		}
	}
	if reset == nil || reset.GetReason() != "bridge_gone" || len(reset.GetChannelIds()) != 1 {
		t.Fatalf("UserReset %v", reset)
	}
	// later messages are not sent: the UAID is no longer bridged
	e.accept(uaid, ch)
	time.Sleep(100 * time.Millisecond)
	if n := snd.calls(); n != 1 {
		t.Fatalf("%d sends after the token died", n)
	}
}

func TestBridgeRetryThenDelivered(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: func(n int, _ string, _ bridge.Message) bridge.Result {
		if n < 3 {
			return bridge.Result{Outcome: bridge.Retry, Status: 429, RetryAfter: 30 * time.Millisecond}
		}
		return bridge.Result{Outcome: bridge.Delivered, Status: 200}
	}}
	r, uaid, ch := e.startBridged(snd, nil)
	e.accept(uaid, ch)
	waitFor(t, "Acked written", func() bool { return len(e.acksOfKind(0, "acked")) == 1 })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	if n := snd.calls(); n != 3 {
		t.Fatalf("%d sends, want 3", n)
	}
	if d := e.acksOfKind(0, "delivered"); len(d) != 1 || d[0].GetDelivered().GetAttempt() != 3 {
		t.Fatalf("delivered %v", d)
	}
}

func TestBridgeRetryUntilTTL(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: func(int, string, bridge.Message) bridge.Result {
		return bridge.Result{Outcome: bridge.Retry, Status: 503}
	}}
	r, uaid, ch := e.startBridged(snd, func(c *BridgeConfig) { c.BreakerFailures = 1000 })
	ref := e.accept(uaid, ch, withTTL(60))
	waitFor(t, "a few attempts", func() bool { return snd.calls() >= 3 })
	e.clock.Advance(61 * time.Second)
	waitFor(t, "expired", func() bool { return e.expiredOf(0)[ref.GetOffset()] })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	n := snd.calls()
	time.Sleep(150 * time.Millisecond)
	if snd.calls() != n {
		t.Fatal("sent after its TTL")
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	for _, m := range snd.got {
		if m.TTL <= 0 || m.TTL > 60*time.Second {
			t.Fatalf("sent with TTL %s", m.TTL)
		}
	}
	if len(e.acksOfKind(0, "acked")) != 0 {
		t.Fatal("acked though never delivered")
	}
}

func TestBridgeFailedDropped(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: func(int, string, bridge.Message) bridge.Result {
		return bridge.Result{Outcome: bridge.Failed, Status: 400, Reason: "INVALID_ARGUMENT"}
	}}
	_, uaid, ch := e.startBridged(snd, nil)
	ref := e.accept(uaid, ch)
	waitFor(t, "dropped", func() bool {
		return e.dropsOf(0)[ref.GetOffset()] == pb.DropReason_DROP_REASON_BRIDGE_REFUSED
	})
}

func TestBridgeBreaker(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: func(int, string, bridge.Message) bridge.Result {
		return bridge.Result{Outcome: bridge.Retry, Status: 0, Reason: "connect"}
	}}
	r, uaid, ch := e.startBridged(snd, func(c *BridgeConfig) { c.BreakerFailures = 2; c.BreakerOpen = 300 * time.Millisecond })
	refs := []*pb.MessageRef{e.accept(uaid, ch), e.accept(uaid, ch)}
	waitFor(t, "breaker open", func() bool {
		return r.BridgeBreakers()["fcm/app"] == gobreaker.StateOpen
	})
	stuck := snd.calls()
	time.Sleep(100 * time.Millisecond)
	if snd.calls() != stuck {
		t.Fatal("sends while the breaker is open")
	}
	snd.setNext(delivered) // the service is back
	waitFor(t, "both delivered", func() bool { return len(e.acksOfKind(0, "acked")) == 2 })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	if st := r.BridgeBreakers()["fcm/app"]; st != gobreaker.StateClosed {
		t.Fatalf("breaker %v after recovery", st)
	}
	_ = refs
}

// TestBridgeCredentialsRefused: a service that refuses the app's
// credentials (bridge.Result.Unavailable) opens the app's breaker like an
// outage; no message is dropped as refused: they wait, expire past their
// TTL, and are delivered once the key is fixed (issue 14).
func TestBridgeCredentialsRefused(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: func(int, string, bridge.Message) bridge.Result {
		return bridge.Result{Outcome: bridge.Retry, Status: 401, Reason: "oauth_refused", Unavailable: true}
	}}
	r, uaid, ch := e.startBridged(snd, func(c *BridgeConfig) { c.BreakerFailures = 2; c.BreakerOpen = 300 * time.Millisecond })
	short, long := e.accept(uaid, ch, withTTL(60)), e.accept(uaid, ch)
	waitFor(t, "breaker open", func() bool {
		return r.BridgeBreakers()["fcm/app"] == gobreaker.StateOpen
	})
	e.clock.Advance(61 * time.Second)
	waitFor(t, "short TTL expired", func() bool { return e.expiredOf(0)[short.GetOffset()] })
	snd.setNext(delivered) // the operator fixed the key
	waitFor(t, "long TTL delivered", func() bool { return len(e.acksOfKind(0, "acked")) == 1 })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	if d := e.dropsOf(0); len(d) != 0 {
		t.Fatalf("dropped %v while the credentials were refused", d)
	}
	if e.expiredOf(0)[long.GetOffset()] {
		t.Fatal("the long-TTL message expired")
	}
}

// TestBridgeTakeover: a new owner that resumes past the BridgeRegistered
// (the channel snapshot covers the registrations) still knows the UAID is
// bridged.
func TestBridgeTakeover(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: delivered}
	r, uaid, ch := e.startBridged(snd, nil)
	// the channel projector's record covering both registrations
	rec, err := schema.DefaultNames().ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: ch, RegistrationsOffset: 2}, 0)
	if err != nil {
		t.Fatal(err)
	}
	manual, err := kgo.NewClient(kgo.SeedBrokers(e.addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	if err := manual.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registrations committed past the bridge registration", func() bool {
		c, err := e.adm.FetchOffsets(context.Background(), schema.DefaultNames().Group("connectors"))
		if err != nil {
			return false
		}
		o, ok := c.Lookup(schema.TopicRegistrations, 0)
		return ok && o.At >= 2
	})
	r.stop()
	r2 := e.start(func(c *Config) {
		c.Bridges = BridgeConfig{Senders: map[string]bridge.Sender{"fcm/app": snd}}
	})
	e.waitReady(r2, testPartitions)
	e.accept(uaid, ch)
	waitFor(t, "delivered by the new owner", func() bool { return snd.calls() == 1 })
}

// bridgeRecord appends a BridgeRegistered of uaid to l.
func bridgeRecord(t *testing.T, l *logBuilder, uaid string) *kgo.Record {
	ev := schema.NewEvent(uaid, l.clock.Now())
	ev.Body = &pb.Event_BridgeRegistered{BridgeRegistered: &pb.BridgeRegistered{RouterType: "fcm", AppId: "app", Token: "tok"}}
	r, err := schema.Record(ev)
	if err != nil {
		t.Fatal(err)
	}
	r.Partition, r.Offset = l.p, l.next[r.Topic]
	l.next[r.Topic]++
	l.recs[r.Topic] = append(l.recs[r.Topic], r)
	return r
}

// TestBridgeKeepsUAIDFromIdleExpiry: a bridged UAID never connects; its
// daily re-registration keeps it from the idle reset, and without it the
// UAID expires like any other.
func TestBridgeKeepsUAIDFromIdleExpiry(t *testing.T) {
	const p = 1
	const expiry = 10 * 24 * time.Hour
	clock := newFakeClock()
	ps, rec := newTestPart(t, p, clock)
	ps.env.cfg.UAIDExpiry = expiry
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	ps.checkReady()
	l := newLog(t, p, clock)
	active, quiet := uaidIn(p), uaidIn(p)
	foldAll(ps, []*kgo.Record{
		bridgeRecord(t, l, active), l.add(active, &pb.ChannelRegistered{ChannelId: newChannel()}),
		bridgeRecord(t, l, quiet), l.add(quiet, &pb.ChannelRegistered{ChannelId: newChannel()}),
	})
	for range 15 { // 15 days of daily checks by the active device only
		clock.Advance(24 * time.Hour)
		foldAll(ps, []*kgo.Record{bridgeRecord(t, l, active)})
		ps.mu.Lock()
		ps.sweep(clock.Now())
		ps.mu.Unlock()
	}
	if got := idleResets(rec); !slices.Equal(got, []string{quiet}) {
		t.Fatalf("idle resets %v, want only the quiet UAID %s", got, quiet)
	}
}

// TestBridgeHalfOpenRetrySoon: while a half-open breaker's probe is in
// flight, other sends are retried after RetryMin, not a whole BreakerOpen
// (which would expire every message with less TTL left although the
// service may be back).
func TestBridgeHalfOpenRetrySoon(t *testing.T) {
	release := make(chan struct{})
	probing := make(chan struct{}, 1)
	snd := &fakeSender{next: func(n int, _ string, _ bridge.Message) bridge.Result {
		if n == 1 {
			return bridge.Result{Outcome: bridge.Retry, Status: 503}
		}
		probing <- struct{}{}
		<-release
		return bridge.Result{Outcome: bridge.Delivered, Status: 200}
	}}
	b, err := newBridges(BridgeConfig{Senders: map[string]bridge.Sender{"fcm/app": snd},
		BreakerFailures: 1, BreakerOpen: 50 * time.Millisecond, RetryMin: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.setContext(t.Context())
	if r := b.send("fcm/app", "tok", bridge.Message{}); r.Outcome != bridge.Retry {
		t.Fatalf("first send %+v, want a retry", r)
	}
	waitFor(t, "half-open", func() bool { return b.states()["fcm/app"] == gobreaker.StateHalfOpen })
	probe := make(chan bridge.Result, 1)
	go func() { probe <- b.send("fcm/app", "tok", bridge.Message{}) }()
	<-probing
	r := b.send("fcm/app", "tok", bridge.Message{})
	close(release)
	if r.Outcome != bridge.Retry || r.Reason != "breaker_half_open" || r.RetryAfter != 20*time.Millisecond {
		t.Fatalf("send while the probe is in flight: %+v, want a retry after RetryMin", r)
	}
	if p := <-probe; p.Outcome != bridge.Delivered {
		t.Fatalf("probe %+v", p)
	}
}

// TestBridgeTTLZero: a TTL 0 push to a bridged UAID (which never has a
// socket) is handed to the bridge with TTL 0, not dropped as offline.
func TestBridgeTTLZero(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: delivered}
	r, uaid, ch := e.startBridged(snd, nil)
	e.accept(uaid, ch, withTTL(0))
	waitFor(t, "Acked written", func() bool { return len(e.acksOfKind(0, "acked")) == 1 })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	if n := snd.calls(); n != 1 || snd.got[0].TTL != 0 {
		t.Fatalf("%d sends (%+v), want one with TTL 0", n, snd.got)
	}
	if d := e.acksOfKind(0, "dropped"); len(d) != 0 {
		t.Fatalf("dropped %v", d)
	}
}

// TestBridgeApsPassedOn: the aps dictionary of the latest registration
// reaches the sender with each message.
func TestBridgeApsPassedOn(t *testing.T) {
	e := newTestEnv(t)
	snd := &fakeSender{next: delivered}
	_, uaid, ch := e.startBridged(snd, nil)
	e.accept(uaid, ch)
	waitFor(t, "first send", func() bool { return snd.calls() == 1 })
	ev := e.event(uaid)
	aps := `{"alert":"hi"}`
	ev.Body = &pb.Event_BridgeRegistered{BridgeRegistered: &pb.BridgeRegistered{RouterType: "fcm", AppId: "app", Token: "device-token-1", Aps: aps}}
	e.produce(ev)
	e.accept(uaid, ch)
	waitFor(t, "second send", func() bool { return snd.calls() == 2 })
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if snd.got[0].Aps != "" || snd.got[1].Aps != aps {
		t.Fatalf("aps %q then %q, want none then %q", snd.got[0].Aps, snd.got[1].Aps, aps)
	}
}

// TestBridgeFloodBounded: a flood of bridged messages to a service that
// does not answer costs at most InFlight send goroutines and Queue queued
// sends, not a goroutine per message; the messages past the queue stay
// pending (counted), and every one is delivered once the service answers.
func TestBridgeFloodBounded(t *testing.T) {
	const flood, inFlight, queue = 150, 2, 4
	e := newTestEnv(t)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	snd := &fakeSender{next: func(int, string, bridge.Message) bridge.Result {
		<-release
		return bridge.Result{Outcome: bridge.Delivered, Status: 200}
	}}
	r, uaid, ch := e.startBridged(snd, func(c *BridgeConfig) { c.InFlight, c.Queue = inFlight, queue })
	e.accept(uaid, ch)
	waitFor(t, "the first send", func() bool { return snd.calls() == 1 })
	base := runtime.NumGoroutine()
	for range flood - 1 {
		e.accept(uaid, ch)
	}
	waitFor(t, "the flood folded", func() bool { return pendingOf(r.Owner, 0) == flood })
	bs := r.Owner.env.bridges
	waitFor(t, "the queue full", func() bool { return bs.queued() == queue })
	if n := snd.calls(); n != inFlight {
		t.Fatalf("%d sends at once, want %d", n, inFlight)
	}
	if grown := runtime.NumGoroutine() - base; grown > flood/3 {
		t.Fatalf("%d more goroutines for %d bridged messages (InFlight %d, Queue %d)", grown, flood, inFlight, queue)
	}
	if full := testutil.ToFloat64(bs.met.full.WithLabelValues("fcm/app")); full == 0 {
		t.Fatal("pushlog_bridge_queue_full_total not counted")
	}
	unblock()
	waitFor(t, "every message acked", func() bool { return len(e.acksOfKind(0, "acked")) == flood })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	if d := e.acksOfKind(0, "dropped"); len(d) != 0 {
		t.Fatalf("dropped %d", len(d))
	}
	if n := snd.calls(); n != flood {
		t.Fatalf("%d sends for %d messages", n, flood)
	}
}

// TestBridgeQueuedStaleNotSent: a send that waits in the queue behind a
// slow one is not made when its message expired (or was dropped)
// meanwhile; it is counted as stale, and a queued message still live is
// sent with the TTL left after its wait.
func TestBridgeQueuedStaleNotSent(t *testing.T) {
	e := newTestEnv(t)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	snd := &fakeSender{next: func(n int, _ string, _ bridge.Message) bridge.Result {
		if n == 1 {
			<-release
		}
		return bridge.Result{Outcome: bridge.Delivered, Status: 200}
	}}
	r, uaid, ch := e.startBridged(snd, func(c *BridgeConfig) { c.InFlight, c.Queue = 1, 4 })
	e.accept(uaid, ch)
	waitFor(t, "the first send", func() bool { return snd.calls() == 1 })
	expiring := e.accept(uaid, ch, withTTL(60))
	deleted := e.accept(uaid, ch)
	e.accept(uaid, ch, withTTL(600))
	bs := r.Owner.env.bridges
	waitFor(t, "three sends queued", func() bool { return bs.queued() == 3 })
	e.deleteMsg(uaid, deleted)
	waitFor(t, "the delete folded", func() bool { return pendingOf(r.Owner, 0) == 3 })
	e.clock.Advance(61 * time.Second)
	waitFor(t, "expired", func() bool { return e.expiredOf(0)[expiring.GetOffset()] })
	unblock()
	waitFor(t, "two acked", func() bool { return len(e.acksOfKind(0, "acked")) == 2 })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	time.Sleep(50 * time.Millisecond)
	if n := snd.calls(); n != 2 {
		t.Fatalf("%d sends, want 2: a queued send of a settled message was made", n)
	}
	if stale := testutil.ToFloat64(bs.met.sends.WithLabelValues("fcm/app", "stale")); stale != 2 {
		t.Fatalf("stale sends counted %v, want 2", stale)
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if ttl := snd.got[1].TTL; ttl <= 0 || ttl > 540*time.Second {
		t.Fatalf("queued send's TTL %s, want the 539 s left after its wait", ttl)
	}
}
