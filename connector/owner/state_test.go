package owner

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// recorder collects the events a partition state produces.
type recorder struct {
	mu  sync.Mutex
	evs []*pb.Event
}

func (r *recorder) produce(ev *pb.Event, _ func(error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

// settlements returns "offset:kind" of the settlement events produced.
func (r *recorder) settlements() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.evs {
		switch b := ev.GetBody().(type) {
		case *pb.Event_Expired:
			out = append(out, fmt.Sprintf("%d:expired", b.Expired.GetMsg().GetOffset()))
		case *pb.Event_Dropped:
			out = append(out, fmt.Sprintf("%d:%s", b.Dropped.GetMsg().GetOffset(), b.Dropped.GetReason()))
		}
	}
	slices.Sort(out)
	return out
}

func testSealer(t testing.TB) *schema.Sealer {
	key := make([]byte, schema.KeySize)
	_, _ = rand.Read(key)
	s, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestPart(t testing.TB, p int32, clock *fakeClock) (*partState, *recorder) {
	rec := &recorder{}
	e := &env{
		cfg:     Config{Partitions: testPartitions, PendingLimit: DefaultPendingLimit, Sealer: testSealer(t), NodeID: "n"},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		now:     clock.Now,
		produce: rec.produce,
		limit:   1 << 40,
		graceMs: 2000,
	}
	return newPartState(e, p), rec
}

// logBuilder builds the records of one partition with their offsets.
type logBuilder struct {
	t     testing.TB
	p     int32
	clock *fakeClock
	next  map[string]int64
	recs  map[string][]*kgo.Record
}

func newLog(t testing.TB, p int32, clock *fakeClock) *logBuilder {
	return &logBuilder{t: t, p: p, clock: clock, next: map[string]int64{}, recs: map[string][]*kgo.Record{}}
}

func (l *logBuilder) add(uaid string, body any) *kgo.Record {
	ev := schema.NewEvent(uaid, l.clock.Now())
	switch b := body.(type) {
	case *pb.MessageAccepted:
		ev.Body = &pb.Event_MessageAccepted{MessageAccepted: b}
	case *pb.MessageDeleted:
		ev.Body = &pb.Event_MessageDeleted{MessageDeleted: b}
	case *pb.Acked:
		ev.Body = &pb.Event_Acked{Acked: b}
	case *pb.Expired:
		ev.Body = &pb.Event_Expired{Expired: b}
	case *pb.Dropped:
		ev.Body = &pb.Event_Dropped{Dropped: b}
	case *pb.Delivered:
		ev.Body = &pb.Event_Delivered{Delivered: b}
	case *pb.Nacked:
		ev.Body = &pb.Event_Nacked{Nacked: b}
	case *pb.ChannelRegistered:
		ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: b}
	case *pb.ChannelUnregistered:
		ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: b}
	case *pb.UserReset:
		ev.Body = &pb.Event_UserReset{UserReset: b}
	case *pb.ChannelState:
		ev.Body = &pb.Event_ChannelState{ChannelState: b}
	case *pb.Connected:
		ev.Body = &pb.Event_Connected{Connected: b}
	case *pb.Disconnected:
		ev.Body = &pb.Event_Disconnected{Disconnected: b}
	default:
		l.t.Fatalf("unknown body %T", body)
	}
	r, err := schema.Record(ev)
	if err != nil {
		l.t.Fatal(err)
	}
	r.Partition, r.Offset = l.p, l.next[r.Topic]
	l.next[r.Topic]++
	l.recs[r.Topic] = append(l.recs[r.Topic], r)
	return r
}

func (l *logBuilder) msg(uaid, ch string, ttl int64, topic string) int64 {
	return l.add(uaid, &pb.MessageAccepted{ChannelId: ch, Payload: []byte("x"), Encoding: "aes128gcm", TtlS: ttl, Topic: topic}).Offset
}

func (l *logBuilder) ends() [numGroupTopics]int64 {
	var e [numGroupTopics]int64
	for ti, t := range groupTopics {
		e[ti] = l.next[t]
	}
	return e
}

func foldAll(ps *partState, recs []*kgo.Record) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, r := range recs {
		switch r.Topic {
		case schema.TopicChannels:
			ps.foldSnapshot(r)
		case schema.TopicPresence:
			ps.foldPresence(r)
		default:
			ps.foldGroup(slices.Index(groupTopics[:], r.Topic), r)
		}
		ps.afterBatch()
	}
}

// liveOffsets returns the offsets of messages still deliverable.
func liveOffsets(ps *partState) []int64 {
	var out []int64
	for _, m := range ps.msgs.items() {
		if m.state == stLive {
			out = append(out, m.offset)
		}
	}
	return out
}

// interleave merges per-topic record lists in a random order that keeps
// each topic's own order.
func interleave(rng *mrand.Rand, lists ...[]*kgo.Record) []*kgo.Record {
	idx := make([]int, len(lists))
	var out []*kgo.Record
	for {
		var open []int
		for i, l := range lists {
			if idx[i] < len(l) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := open[rng.IntN(len(open))]
		out = append(out, lists[i][idx[i]])
		idx[i]++
	}
}

// TestFoldOrderIndependent replays the same log in many interleavings of
// the topics: the unsettled set, the decisions and the watermarks are the
// same every time.
func TestFoldOrderIndependent(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 1, clock)
	uaid, other := uaidIn(1), uaidIn(1)
	ch, ch2, gone := newChannel(), newChannel(), newChannel()
	l.add(uaid, &pb.ChannelRegistered{ChannelId: ch})
	l.add(uaid, &pb.ChannelRegistered{ChannelId: gone})
	var offs []int64
	for i := range 12 {
		topic := ""
		if i%4 == 0 {
			topic = "t"
		}
		offs = append(offs, l.msg(uaid, ch, 3600, topic))
	}
	goneMsg := l.msg(uaid, gone, 3600, "")
	l.add(uaid, &pb.ChannelUnregistered{ChannelId: gone})
	otherMsg := l.msg(other, ch2, 3600, "")
	l.add(uaid, &pb.MessageDeleted{Msg: &pb.MessageRef{Partition: 1, Offset: offs[6]}})
	l.add(uaid, &pb.Acked{Msg: &pb.MessageRef{Partition: 1, Offset: offs[1]}})
	l.add(uaid, &pb.Delivered{Msg: &pb.MessageRef{Partition: 1, Offset: offs[2]}, Attempt: 4})
	l.add(uaid, &pb.Acked{Msg: &pb.MessageRef{Partition: 1, Offset: offs[2]}})
	l.add(uaid, &pb.Acked{Msg: &pb.MessageRef{Partition: 1, Offset: offs[2]}}) // twice == once
	l.add(uaid, &pb.Expired{Msg: &pb.MessageRef{Partition: 1, Offset: offs[3]}})
	l.add(uaid, &pb.Nacked{Msg: &pb.MessageRef{Partition: 1, Offset: offs[5]}})
	l.add(other, &pb.Acked{Msg: &pb.MessageRef{Partition: 1, Offset: offs[7]}})   // not its message
	l.add(uaid, &pb.Dropped{Msg: &pb.MessageRef{Partition: 1, Offset: otherMsg}}) // not its message
	l.add(uaid, &pb.Acked{Msg: &pb.MessageRef{Partition: 2, Offset: offs[9]}})    // other partition

	// offs[0] and offs[4] are replaced (topic "t") by the next with that
	// topic, offs[6] is deleted, goneMsg's channel unregistered, offs[1..3]
	// settled by acks; the foreign and misrouted settlements do nothing.
	wantLive := []int64{offs[5], offs[7], offs[8], offs[9], offs[10], offs[11], otherMsg}
	wantDecisions := []string{
		fmt.Sprintf("%d:DROP_REASON_TOPIC_REPLACED", offs[0]),
		fmt.Sprintf("%d:DROP_REASON_TOPIC_REPLACED", offs[4]),
		fmt.Sprintf("%d:DROP_REASON_DELETED", offs[6]),
		fmt.Sprintf("%d:DROP_REASON_UNREGISTERED", goneMsg),
	}
	slices.Sort(wantDecisions)

	rng := mrand.New(mrand.NewPCG(1, 2))
	var firstWM [numGroupTopics]int64
	for round := range 50 {
		ps, rec := newTestPart(t, 1, clock)
		ps.setPositions([numGroupTopics]int64{}, l.ends())
		foldAll(ps, interleave(rng, l.recs[schema.TopicMessages], l.recs[schema.TopicAcks], l.recs[schema.TopicRegistrations]))
		if !ps.ready {
			t.Fatal("not ready after the whole log")
		}
		if got := liveOffsets(ps); !slices.Equal(got, wantLive) {
			t.Fatalf("round %d: live %v, want %v", round, got, wantLive)
		}
		if got := rec.settlements(); !slices.Equal(got, wantDecisions) {
			t.Fatalf("round %d: decisions %v, want %v", round, got, wantDecisions)
		}
		if m := ps.msgs.find(offs[5]); m.attempts != 0 {
			t.Fatalf("nack changed attempts")
		}
		wm := ps.watermarks()
		if round == 0 {
			firstWM = wm
		} else if wm != firstWM {
			t.Fatalf("round %d: watermarks %v, first %v", round, wm, firstWM)
		}
		if len(ps.orphans) != 0 {
			t.Fatalf("round %d: %d orphans left", round, len(ps.orphans))
		}
	}
	// Settled offs[1..3] sit above the unsettled offs[0]... which is
	// settling (replaced, event not read back): the messages watermark
	// stays at offs[0], and the acks watermark at the first settlement.
	if firstWM[tMessages] != offs[0] || firstWM[tAcks] != 0 {
		t.Fatalf("watermarks %v", firstWM)
	}
}

func TestWatermarksAdvance(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 0, clock)
	uaid, ch := uaidIn(0), newChannel()
	a := l.msg(uaid, ch, 3600, "")
	b := l.msg(uaid, ch, 3600, "")
	c := l.msg(uaid, ch, 3600, "")
	ps, _ := newTestPart(t, 0, clock)
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	foldAll(ps, l.recs[schema.TopicMessages])

	steps := []struct {
		ack      int64
		wantMsgs int64
		wantAcks int64
	}{
		{b, a, 0}, // b settled by acks 0 above the pending a: acks must replay from 0
		{a, c, 2}, // a and b below the messages watermark: acks 0 and 1 not needed
		{c, 3, 3}, // nothing tracked: both at their positions
	}
	for i, s := range steps {
		foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Acked{Msg: &pb.MessageRef{Partition: 0, Offset: s.ack}})})
		wm := ps.watermarks()
		if wm[tMessages] != s.wantMsgs || wm[tAcks] != s.wantAcks {
			t.Fatalf("step %d: watermarks %v, want messages %d acks %d", i, wm, s.wantMsgs, s.wantAcks)
		}
	}
	if len(ps.msgs.items()) != 0 || len(ps.uaids) != 0 {
		t.Fatalf("state left: %d msgs, %d uaids", len(ps.msgs.items()), len(ps.uaids))
	}
}

func TestRegistrationsWatermark(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 0, clock)
	uaid, ch := uaidIn(0), newChannel()
	for range 5 {
		l.add(uaid, &pb.ChannelRegistered{ChannelId: ch})
	}
	ps, _ := newTestPart(t, 0, clock)
	ps.setPositions([numGroupTopics]int64{0, 0, 1}, [numGroupTopics]int64{})
	foldAll(ps, l.recs[schema.TopicRegistrations][1:])
	if wm := ps.watermarks(); wm[tRegistrations] != 1 {
		t.Fatalf("no snapshot: registrations watermark %d, want the start 1", wm[tRegistrations])
	}
	snap := l.add(uaid, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: ch}}, RegistrationsOffset: 3})
	foldAll(ps, []*kgo.Record{snap})
	if wm := ps.watermarks(); wm[tRegistrations] != 3 {
		t.Fatalf("registrations watermark %d, want 3 (covered by snapshots)", wm[tRegistrations])
	}
	snap = l.add(uaid, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: ch}}, RegistrationsOffset: 9})
	foldAll(ps, []*kgo.Record{snap})
	if wm := ps.watermarks(); wm[tRegistrations] != 5 {
		t.Fatalf("registrations watermark %d, want the position 5", wm[tRegistrations])
	}
}

func TestSnapshotMerge(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 2, clock)
	uaid := uaidIn(2)
	a, b := newChannel(), newChannel()
	ps, _ := newTestPart(t, 2, clock)
	ps.setPositions([numGroupTopics]int64{0, 0, 10}, [numGroupTopics]int64{})
	id, _ := schema.ParseUAID(uaid)

	// Bootstrap: snapshot covering registrations < 12.
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: a}}, RegistrationsOffset: 12})})
	// Registrations 10 and 11 are in the snapshot: skipped. 12 is new.
	for range 10 {
		l.add(uaid, &pb.ChannelRegistered{ChannelId: newChannel()}) // offsets 0..9, before our start
	}
	l.add(uaid, &pb.ChannelUnregistered{ChannelId: a}) // 10: already in the snapshot? no: the snapshot still has a registered
	l.add(uaid, &pb.ChannelRegistered{ChannelId: a})   // 11
	l.add(uaid, &pb.ChannelRegistered{ChannelId: b})   // 12
	foldAll(ps, l.recs[schema.TopicRegistrations][10:])
	st := ps.chanState(id)
	if !schema.ChannelActive(st, a) || !schema.ChannelActive(st, b) || st.GetRegistrationsOffset() != 13 || len(st.Channels) != 2 {
		t.Fatalf("state %v", st)
	}
	// An older snapshot read late changes nothing.
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.ChannelState{UaidReset: true, RegistrationsOffset: 12})})
	if ps.chanState(id).GetUaidReset() {
		t.Fatal("stale snapshot applied")
	}
	// A newer one wins.
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.ChannelState{UaidReset: true, RegistrationsOffset: 20})})
	if !ps.chanState(id).GetUaidReset() {
		t.Fatal("newer snapshot not applied")
	}
}

func TestPresenceFold(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 3, clock)
	uaid := uaidIn(3)
	id, _ := schema.ParseUAID(uaid)
	ps, _ := newTestPart(t, 3, clock)
	foldAll(ps, []*kgo.Record{
		l.add(uaid, &pb.Connected{Node: "n1", LinkAddr: "10.0.0.1:7000", ConnId: "c1", SinceMs: 5}),
		l.add(uaid, &pb.Connected{Node: "n2", LinkAddr: "10.0.0.2:7000", ConnId: "c2", SinceMs: 6}),
		l.add(uaid, &pb.Disconnected{Node: "n1", ConnId: "c1"}), // late, of the old connection
	})
	if pr := ps.uaids[id].presence; pr == nil || pr.connID != "c2" || pr.node != "n2" || pr.linkAddr != "10.0.0.2:7000" {
		t.Fatalf("presence %+v", pr)
	}
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Disconnected{Node: "n2", ConnId: "c2"})})
	if ps.uaids[id] != nil {
		t.Fatal("disconnected uaid with no other state still tracked")
	}
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Connected{ConnId: "c3"})})
	tomb := &kgo.Record{Topic: schema.TopicPresence, Key: []byte(uaid), Partition: 3, Offset: 99}
	foldAll(ps, []*kgo.Record{tomb})
	if ps.uaids[id] != nil {
		t.Fatal("tombstone did not clear presence")
	}
}

func TestSweepExpiresInOrder(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 0, clock)
	uaid, ch := uaidIn(0), newChannel()
	var offs []int64
	for _, ttl := range []int64{30, 10, 20, 40} {
		offs = append(offs, l.msg(uaid, ch, ttl, ""))
	}
	ps, rec := newTestPart(t, 0, clock)
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	foldAll(ps, l.recs[schema.TopicMessages])
	clock.Advance(25 * time.Second)
	ps.sweep(clock.Now())
	want := []string{fmt.Sprintf("%d:expired", offs[1]), fmt.Sprintf("%d:expired", offs[2])}
	if got := rec.settlements(); !slices.Equal(got, want) {
		t.Fatalf("expired %v, want %v", got, want)
	}
	if got := liveOffsets(ps); !slices.Equal(got, []int64{offs[0], offs[3]}) {
		t.Fatalf("live %v", got)
	}
	if len(ps.exp) != 2 {
		t.Fatalf("heap has %d", len(ps.exp))
	}
}

func TestSettlementRetry(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 0, clock)
	uaid, ch := uaidIn(0), newChannel()
	off := l.msg(uaid, ch, 10, "")
	ps, rec := newTestPart(t, 0, clock)
	fail := true
	var mu sync.Mutex
	ps.env.produce = func(ev *pb.Event, onErr func(error)) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			onErr(fmt.Errorf("broker down"))
			return
		}
		rec.produce(ev, onErr)
	}
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	foldAll(ps, l.recs[schema.TopicMessages])
	clock.Advance(11 * time.Second)
	ps.mu.Lock()
	ps.sweep(clock.Now())
	ps.mu.Unlock()
	waitFor(t, "retry queued", func() bool {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		return len(ps.retry) == 1
	})
	mu.Lock()
	fail = false
	mu.Unlock()
	ps.mu.Lock()
	ps.sweep(clock.Now())
	ps.mu.Unlock()
	if got := rec.settlements(); !slices.Equal(got, []string{fmt.Sprintf("%d:expired", off)}) {
		t.Fatalf("settlements %v", got)
	}
	if wm := ps.watermarks(); wm[tMessages] != off {
		t.Fatalf("watermark %d passed a message whose event is not read back", wm[tMessages])
	}
}

// TestLongReplayOneUAID replays a UAID with many messages, all read before
// their acks: it stays linear, and the replay re-announces nothing the log
// already settled.
func TestLongReplayOneUAID(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 0, clock)
	uaid, ch := uaidIn(0), newChannel()
	const n = 20000
	for range n {
		l.msg(uaid, ch, 3600, "same")
	}
	for i := range int64(n - 1) {
		l.add(uaid, &pb.Dropped{Msg: &pb.MessageRef{Partition: 0, Offset: i}, Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED})
	}
	ps, rec := newTestPart(t, 0, clock)
	ps.setPositions([numGroupTopics]int64{}, l.ends())
	start := time.Now()
	foldAll(ps, append(l.recs[schema.TopicMessages], l.recs[schema.TopicAcks]...))
	if !ps.ready {
		t.Fatal("not ready")
	}
	if got := liveOffsets(ps); !slices.Equal(got, []int64{n - 1}) {
		t.Fatalf("live %v", got)
	}
	if got := rec.settlements(); len(got) != 0 {
		t.Fatalf("replay produced %d settlements", len(got))
	}
	id, _ := schema.ParseUAID(uaid)
	if u := ps.uaids[id]; len(u.pending) > 32 || len(u.topics) != 1 {
		t.Fatalf("uaid keeps %d entries, %d topics", len(u.pending), len(u.topics))
	}
	t.Logf("folded %d messages and %d acks in %v", n, n-1, time.Since(start))
}

// TestTTLZeroOfflinePass: a TTL 0 message delivered while its UAID was
// attached, and not acked when it left, is dropped (TTL_ZERO_OFFLINE) by
// the UAID's next push while offline; the pass walks only UAIDs that may
// hold a live TTL 0 message (ttl0), not every offline UAID's backlog.
func TestTTLZeroOfflinePass(t *testing.T) {
	clock := newFakeClock()
	l := newLog(t, 0, clock)
	uaid, plain, ch := uaidIn(0), uaidIn(0), newChannel()
	id, _ := schema.ParseUAID(uaid)
	plainID, _ := schema.ParseUAID(plain)
	ps, rec := newTestPart(t, 0, clock)
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.ChannelRegistered{ChannelId: ch}), l.add(plain, &pb.ChannelRegistered{ChannelId: ch})})
	accept := func(u string, ttl int64) int64 {
		r := l.add(u, &pb.MessageAccepted{ChannelId: ch, Payload: []byte("x"), Encoding: "aes128gcm", TtlS: ttl})
		foldAll(ps, []*kgo.Record{r})
		return r.Offset
	}
	s := newSession()
	ps.mu.Lock()
	ps.attach(id, s)
	ps.mu.Unlock()
	ttl0 := accept(uaid, 0)
	if got := s.offsets(); !slices.Equal(got, []int64{ttl0}) {
		t.Fatalf("delivered %v, want the TTL 0 message %d", got, ttl0)
	}
	ps.mu.Lock()
	ps.detach(id, s)
	ps.mu.Unlock()
	accept(uaid, 3600)
	for range 3 {
		accept(plain, 3600)
	}
	want := []string{fmt.Sprintf("%d:DROP_REASON_TTL_ZERO_OFFLINE", ttl0)}
	if got := rec.settlements(); !slices.Equal(got, want) {
		t.Fatalf("settlements %v, want %v", got, want)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.uaids[id].ttl0 || ps.uaids[plainID].ttl0 {
		t.Fatalf("ttl0 left set: %v (dropped), %v (never had one)", ps.uaids[id].ttl0, ps.uaids[plainID].ttl0)
	}
}
