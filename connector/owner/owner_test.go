package owner

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func TestOfflineDeliveryAfterAttach(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	ref := e.accept(uaid, ch, withPayload([]byte("hello")))
	ch2 := newChannel()
	refAesgcm := e.accept(uaid, ch2, withAesgcm("salt=abc", "dh=xyz"))
	refEmpty := e.accept(uaid, ch2, withPayload(nil), withEncoding(""))

	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	got := s.notes()
	if len(got) != 3 {
		t.Fatalf("got %d notifications, want 3", len(got))
	}
	n := got[0]
	if n.UAID != uaid || n.ChannelID != ch || string(n.Data) != "hello" || n.Encoding != "aes128gcm" || n.Encryption != "" {
		t.Fatalf("notification = %+v", n)
	}
	id, err := e.sealer.OpenMessageID(n.Version)
	if err != nil {
		t.Fatal(err)
	}
	if id != (schema.MessageID{UAID: uaid, ChannelID: ch, Partition: 1, Offset: ref.Offset}) {
		t.Fatalf("version opens to %+v", id)
	}
	if n.Ref.GetOffset() != ref.Offset || n.Ref.GetPartition() != 1 || n.Ref.GetAcceptedMs() != ref.AcceptedMs || n.Ref.GetVapidSub() != "mailto:a@example.com" || n.Ref.GetChannelId() != ch {
		t.Fatalf("ref = %v", n.Ref)
	}
	if a := got[1]; a.Ref.GetOffset() != refAesgcm.Offset || a.Encoding != "aesgcm" || a.Encryption != "salt=abc" || a.CryptoKey != "dh=xyz" {
		t.Fatalf("aesgcm notification = %+v", a)
	}
	if em := got[2]; em.Ref.GetOffset() != refEmpty.Offset || em.Data != nil || em.Encoding != "" {
		t.Fatalf("empty notification = %+v", em)
	}
	// Each delivery is recorded as a Delivered event with its attempt.
	waitFor(t, "delivered events", func() bool {
		n := 0
		for _, ev := range e.acksOf(1) {
			if d := ev.GetDelivered(); d != nil && d.GetAttempt() == 1 && d.GetConnId() == s.id && d.GetNode() == "test-node" {
				n++
			}
		}
		return n == 3
	})
}

func TestLiveDelivery(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(2), newChannel()
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	e.register(uaid, ch)
	ref := e.accept(uaid, ch)
	waitFor(t, "live delivery", func() bool { return len(s.notes()) == 1 })
	if s.offsets()[0] != ref.Offset {
		t.Fatalf("delivered %v", s.offsets())
	}
	// A second attach of the same connection does not resend.
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if len(s.notes()) != 1 {
		t.Fatalf("resent on the same connection: %v", s.offsets())
	}
	// After Detach, a new message waits for the next session.
	r.Detach(uaid, s)
	ref2 := e.accept(uaid, ch)
	waitFor(t, "message folded", func() bool { return pendingOf(r.Owner, 2) == 2 })
	if len(s.notes()) != 1 {
		t.Fatal("delivered to a detached session")
	}
	s2 := newSession()
	if err := r.Attach(context.Background(), uaid, s2); err != nil {
		t.Fatal(err)
	}
	if got := s2.offsets(); !slices.Equal(got, []int64{ref.Offset, ref2.Offset}) {
		t.Fatalf("after reconnect got %v", got)
	}
}

func TestAckNeverDeliveredAgain(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(0), newChannel()
	e.register(uaid, ch)
	ref := e.accept(uaid, ch)

	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if len(s.notes()) != 1 {
		t.Fatalf("got %d", len(s.notes()))
	}
	r.Acked(uaid, s.notes()[0].Ref)
	// Acked locally: never sent again, even before the event is read.
	s2 := newSession()
	if err := r.Attach(context.Background(), uaid, s2); err != nil {
		t.Fatal(err)
	}
	if len(s2.notes()) != 0 {
		t.Fatal("acked message redelivered")
	}
	e.ack(nil, uaid, ref)
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
	r.stop()

	r2 := e.start(nil)
	e.waitReady(r2, testPartitions)
	s3 := newSession()
	if err := r2.Attach(context.Background(), uaid, s3); err != nil {
		t.Fatal(err)
	}
	if len(s3.notes()) != 0 || pendingOf(r2.Owner, 0) != 0 {
		t.Fatalf("acked message back after restart: %v", s3.offsets())
	}
}

func TestUnackedRedelivered(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(3), newChannel()
	e.register(uaid, ch)
	ref := e.accept(uaid, ch)

	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	s2 := newSession()
	if err := r.Attach(context.Background(), uaid, s2); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.offsets(), []int64{ref.Offset}) || !slices.Equal(s2.offsets(), []int64{ref.Offset}) {
		t.Fatalf("first %v, reconnect %v", s.offsets(), s2.offsets())
	}
	if s2.notes()[0].Version != s.notes()[0].Version {
		t.Fatal("version changed between deliveries")
	}
	// A failing session keeps the message pending.
	bad := newSession()
	bad.fail.Store(true)
	if err := r.Attach(context.Background(), uaid, bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivered events", func() bool {
		n := 0
		for _, ev := range e.acksOf(3) {
			if ev.GetDelivered() != nil {
				n++
			}
		}
		return n == 2
	})
	r.stop()

	r2 := e.start(nil)
	e.waitReady(r2, testPartitions)
	s3 := newSession()
	if err := r2.Attach(context.Background(), uaid, s3); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s3.offsets(), []int64{ref.Offset}) {
		t.Fatalf("after restart got %v", s3.offsets())
	}
	// The redelivery is recorded. (The attempt count restarts at 1 after a
	// takeover: Delivered events below the acks commit are not re-read.)
	waitFor(t, "redelivery recorded", func() bool {
		for _, ev := range e.acksOf(3) {
			if d := ev.GetDelivered(); d != nil && d.GetConnId() == s3.id {
				return true
			}
		}
		return false
	})
}

func TestTopicReplacement(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch, other := uaidIn(1), newChannel(), newChannel()
	e.register(uaid, ch)
	old := e.accept(uaid, ch, withTopic("news"))
	keep := e.accept(uaid, other, withTopic("news")) // another channel: not replaced
	repl := e.accept(uaid, ch, withTopic("news"))

	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if got := s.offsets(); !slices.Equal(got, []int64{keep.Offset, repl.Offset}) {
		t.Fatalf("delivered %v, want %v", got, []int64{keep.Offset, repl.Offset})
	}
	waitFor(t, "dropped event", func() bool { return e.dropsOf(1)[old.Offset] == pb.DropReason_DROP_REASON_TOPIC_REPLACED })

	// Live: a replacement of a delivered, unacked message.
	live := e.accept(uaid, ch, withTopic("news"))
	waitFor(t, "live replacement", func() bool { return e.dropsOf(1)[repl.Offset] == pb.DropReason_DROP_REASON_TOPIC_REPLACED })
	waitFor(t, "delivered", func() bool { return slices.Contains(s.offsets(), live.Offset) })
	if n := len(e.dropsOf(1)); n != 2 {
		t.Fatalf("%d drops, want 2", n)
	}
}

func TestTTLExpiry(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(2), newChannel()
	e.register(uaid, ch)
	short := e.accept(uaid, ch, withTTL(60))
	long := e.accept(uaid, ch, withTTL(600))

	r := e.start(func(c *Config) { c.SweepInterval = time.Hour })
	e.waitReady(r, testPartitions)
	e.clock.Advance(61 * time.Second)
	// Past its expiry a message is never delivered, even before a sweep.
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if got := s.offsets(); !slices.Equal(got, []int64{long.Offset}) {
		t.Fatalf("delivered %v", got)
	}
	r.stop()

	r2 := e.start(nil) // sweeps every 10ms
	e.waitReady(r2, testPartitions)
	waitFor(t, "expired event", func() bool { return e.expiredOf(2)[short.Offset] })
	waitFor(t, "settled", func() bool { return pendingOf(r2.Owner, 2) == 1 })
	if e.expiredOf(2)[long.Offset] {
		t.Fatal("unexpired message expired")
	}
}

func TestTTLZero(t *testing.T) {
	e := newTestEnv(t)
	online, offline, ch := uaidIn(0), uaidIn(0), newChannel()
	e.register(online, ch)
	e.register(offline, ch)
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), online, s); err != nil {
		t.Fatal(err)
	}
	on := e.accept(online, ch, withTTL(0))
	off := e.accept(offline, ch, withTTL(0))
	waitFor(t, "online delivery", func() bool { return slices.Equal(s.offsets(), []int64{on.Offset}) })
	waitFor(t, "offline drop", func() bool { return e.dropsOf(0)[off.Offset] == pb.DropReason_DROP_REASON_TTL_ZERO_OFFLINE })
	s2 := newSession()
	if err := r.Attach(context.Background(), offline, s2); err != nil {
		t.Fatal(err)
	}
	if len(s2.notes()) != 0 {
		t.Fatal("TTL 0 message delivered after the fact")
	}
	// The delivered one expires after the grace unless acked.
	e.clock.Advance(3 * time.Second)
	waitFor(t, "grace expiry", func() bool { return e.expiredOf(0)[on.Offset] })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 0) == 0 })
}

func TestPendingLimitDropsOldest(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(3), newChannel()
	e.register(uaid, ch)
	var refs []int64
	for range 5 {
		refs = append(refs, e.accept(uaid, ch).Offset)
	}
	r := e.start(func(c *Config) { c.PendingLimit = 3 })
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if got := s.offsets(); !slices.Equal(got, refs[2:]) {
		t.Fatalf("delivered %v, want %v", got, refs[2:])
	}
	waitFor(t, "dropped events", func() bool {
		d := e.dropsOf(3)
		return d[refs[0]] == pb.DropReason_DROP_REASON_PENDING_LIMIT && d[refs[1]] == pb.DropReason_DROP_REASON_PENDING_LIMIT
	})
	// Live: one more drops the next oldest; the UAID stays valid.
	e.accept(uaid, ch)
	waitFor(t, "live drop", func() bool { return e.dropsOf(3)[refs[2]] == pb.DropReason_DROP_REASON_PENDING_LIMIT })
	if ok, err := valid(r.CheckUAID(context.Background(), uaid)); err != nil || !ok {
		t.Fatalf("CheckUAID = %v, %v", ok, err)
	}
}

func TestDelete(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	ref := e.accept(uaid, ch)
	e.deleteMsg(uaid, ref)
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if len(s.notes()) != 0 {
		t.Fatal("deleted message delivered")
	}
	waitFor(t, "dropped", func() bool { return e.dropsOf(1)[ref.Offset] == pb.DropReason_DROP_REASON_DELETED })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 1) == 0 })
	// A delete from another UAID (a forged ref) does nothing.
	ref2 := e.accept(uaid, ch)
	waitFor(t, "delivered", func() bool { return len(s.notes()) == 1 })
	e.deleteMsg(uaidIn(1), ref2)
	last := e.deleteMsg(uaid, &pb.MessageRef{Partition: 1, Offset: 999})
	waitFor(t, "deletes folded", func() bool { return r.Stats().Partitions[1].Next[tMessages] > last })
	if pendingOf(r.Owner, 1) != 1 {
		t.Fatal("foreign delete settled the message")
	}
}

func TestUnregisteredAndResetDrop(t *testing.T) {
	e := newTestEnv(t)
	uaid, gone, live := uaidIn(2), newChannel(), newChannel()
	e.register(uaid, gone)
	e.register(uaid, live)
	e.unregister(uaid, gone)
	dropped := e.accept(uaid, gone)
	kept := e.accept(uaid, live)
	unknown := e.accept(uaid, newChannel()) // never registered: kept
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	waitFor(t, "unregistered drop", func() bool { return e.dropsOf(2)[dropped.Offset] == pb.DropReason_DROP_REASON_UNREGISTERED })
	waitFor(t, "drop settled, the others kept", func() bool { return pendingOf(r.Owner, 2) == 2 })
	// Live unregistration of a channel with a pending message.
	e.unregister(uaid, live)
	waitFor(t, "live unregistered drop", func() bool { return e.dropsOf(2)[kept.Offset] == pb.DropReason_DROP_REASON_UNREGISTERED })
	e.reset(uaid)
	waitFor(t, "reset drop", func() bool { return e.dropsOf(2)[unknown.Offset] == pb.DropReason_DROP_REASON_USER_RESET })
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 2) == 0 })
	if ok, err := valid(r.CheckUAID(context.Background(), uaid)); err != nil || ok {
		t.Fatalf("reset uaid CheckUAID = %v, %v", ok, err)
	}
}

func TestAckBeforeMessage(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(0), newChannel()
	e.register(uaid, ch)
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	ends, err := e.adm.ListEndOffsets(context.Background(), schema.TopicMessages)
	if err != nil {
		t.Fatal(err)
	}
	next, _ := ends.Lookup(schema.TopicMessages, 0)
	e.ack(nil, uaid, &pb.MessageRef{Partition: 0, Offset: next.Offset})
	waitFor(t, "orphan", func() bool { return r.Stats().Partitions[0].Orphans == 1 })
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	ref := e.accept(uaid, ch)
	if ref.Offset != next.Offset {
		t.Fatalf("offset %d, want %d", ref.Offset, next.Offset)
	}
	waitFor(t, "folded", func() bool { return r.Stats().Partitions[0].Next[tMessages] == ref.Offset+1 })
	if len(s.notes()) != 0 || pendingOf(r.Owner, 0) != 0 || r.Stats().Partitions[0].Orphans != 0 {
		t.Fatalf("acked-before message: delivered %v, pending %d", s.offsets(), pendingOf(r.Owner, 0))
	}
}

func TestCheckUAID(t *testing.T) {
	e := newTestEnv(t)
	known, reset, ch := uaidIn(1), uaidIn(1), newChannel()
	e.register(known, ch)
	e.register(reset, ch)
	e.reset(reset)
	r := e.start(nil)
	ctx := context.Background()
	for _, tc := range []struct {
		uaid string
		want bool
	}{
		{known, true},
		{reset, false},
		{uaidIn(1), false},
		{"not-a-uaid", false},
		{"", false},
	} {
		ok, err := valid(r.CheckUAID(ctx, tc.uaid))
		if err != nil || ok != tc.want {
			t.Errorf("CheckUAID(%q) = %v, %v; want %v", tc.uaid, ok, err, tc.want)
		}
	}
	// Catch-up: a registration just written is seen at once.
	for p := range int32(testPartitions) {
		fresh := uaidIn(p)
		e.register(fresh, newChannel())
		if ok, err := valid(r.CheckUAID(ctx, fresh)); err != nil || !ok {
			t.Fatalf("CheckUAID right after register = %v, %v", ok, err)
		}
	}
	// A registration after a reset revives the UAID.
	e.register(reset, newChannel())
	if ok, err := valid(r.CheckUAID(ctx, reset)); err != nil || !ok {
		t.Fatalf("revived CheckUAID = %v, %v", ok, err)
	}
}

func TestNotOwnerBeforeRun(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.config()
	cfg.CheckTimeout = 20 * time.Millisecond
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := valid(o.CheckUAID(context.Background(), mustUAID(uaidIn(0)))); !errors.Is(err, link.ErrNotOwner) {
		t.Fatalf("err = %v, want ErrNotOwner", err)
	}
	if err := o.Attach(context.Background(), mustUAID(uaidIn(0)), newSession()); !errors.Is(err, link.ErrNotOwner) {
		t.Fatalf("err = %v, want ErrNotOwner", err)
	}
}

func TestWatermarkRestartExact(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(2), newChannel()
	e.register(uaid, ch)
	var refs []*pb.MessageRef
	for range 7 {
		refs = append(refs, e.accept(uaid, ch))
	}
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	// Settle messages behind the oldest unsettled one, so the acks commit
	// must stay low enough for a new owner to re-read their settlements.
	e.ack(r.Owner, uaid, refs[2])
	e.ack(r.Owner, uaid, refs[3])
	e.deleteMsg(uaid, refs[5])
	e.ack(r.Owner, uaid, refs[0])
	waitFor(t, "settled", func() bool { return pendingOf(r.Owner, 2) == 3 })
	r.stop()

	committed, err := e.adm.FetchOffsets(context.Background(), DefaultGroup)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := committed.Lookup(schema.TopicMessages, 2); c.At != refs[1].Offset {
		t.Fatalf("messages commit %d, want %d (oldest unsettled)", c.At, refs[1].Offset)
	}
	c, _ := committed.Lookup(schema.TopicAcks, 2)
	firstSettlement := int64(-1)
	for i, ev := range e.acksOf(2) {
		if ev.GetAcked().GetMsg().GetOffset() == refs[2].Offset && ev.GetAcked() != nil {
			firstSettlement = int64(i)
			break
		}
	}
	if c.At > firstSettlement {
		t.Fatalf("acks commit %d passes the settlement at %d", c.At, firstSettlement)
	}

	r2 := e.start(nil)
	e.waitReady(r2, testPartitions)
	s := newSession()
	if err := r2.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	want := []int64{refs[1].Offset, refs[4].Offset, refs[6].Offset}
	if got := s.offsets(); !slices.Equal(got, want) {
		t.Fatalf("after restart delivered %v, want %v", got, want)
	}
	// Exactly one Dropped event for the delete: the replay did not
	// re-announce it.
	n := 0
	for _, ev := range e.acksOf(2) {
		if ev.GetDropped() != nil {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d dropped events, want 1", n)
	}
}

func TestCorruptRecordsSkipped(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(3), newChannel()
	e.register(uaid, ch)
	for _, topic := range []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations} {
		res := e.prod.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(uaid), Value: []byte{0xff, 0x01, 0x02}})
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ref := e.accept(uaid, ch)
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.offsets(), []int64{ref.Offset}) {
		t.Fatalf("delivered %v", s.offsets())
	}
	// CheckUAID catches up with registrations, so all three are read.
	if ok, err := valid(r.CheckUAID(context.Background(), uaid)); err != nil || !ok {
		t.Fatalf("CheckUAID = %v, %v", ok, err)
	}
	if st := r.Stats().Partitions[3]; st.Skipped != 3 {
		t.Fatalf("skipped %d, want 3", st.Skipped)
	}
}

func TestPayloadReread(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(0), newChannel()
	e.register(uaid, ch)
	big := bytes.Repeat([]byte("x"), 3000)
	var want []int64
	for i := range 3 {
		want = append(want, e.accept(uaid, ch, withPayload(append(big, byte(i)))).Offset)
	}
	r := e.start(func(c *Config) { c.PayloadBudget = -1 })
	e.waitReady(r, testPartitions)
	if b := r.Stats().PayloadBytes; b != 0 {
		t.Fatalf("payload bytes in memory %d", b)
	}
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "re-read delivery", func() bool { return len(s.notes()) == 3 })
	for i, n := range s.notes() {
		if n.Ref.GetOffset() != want[i] || !bytes.Equal(n.Data, append(big, byte(i))) || n.Encoding != "aes128gcm" {
			t.Fatalf("notification %d: offset %d, %d bytes", i, n.Ref.GetOffset(), len(n.Data))
		}
	}
	// A live message is delivered from the record in hand.
	live := e.accept(uaid, ch, withPayload([]byte("live")))
	waitFor(t, "live delivery", func() bool { return len(s.notes()) == 4 })
	if n := s.notes()[3]; n.Ref.GetOffset() != live.Offset || string(n.Data) != "live" {
		t.Fatalf("live notification %+v", n)
	}
	if b := r.Stats().PayloadBytes; b != 0 {
		t.Fatalf("payload bytes in memory %d", b)
	}
}

func TestTwoOwnersSplitPartitions(t *testing.T) {
	e := newTestEnv(t)
	a := e.start(nil)
	e.waitReady(a, testPartitions)
	b := e.start(nil)
	waitFor(t, "split", func() bool {
		sa, sb := a.Stats().Partitions, b.Stats().Partitions
		return len(sa) == 2 && len(sb) == 2 && sa[0].Ready && sa[1].Ready && sb[0].Ready && sb[1].Ready
	})
	owned := map[int32]*runningOwner{}
	for _, r := range []*runningOwner{a, b} {
		for _, p := range r.Stats().Partitions {
			if owned[p.Partition] != nil {
				t.Fatalf("partition %d owned twice", p.Partition)
			}
			owned[p.Partition] = r
		}
	}
	// Each owner answers for its partitions and refuses the others.
	for p := range int32(testPartitions) {
		uaid, ch := uaidIn(p), newChannel()
		e.register(uaid, ch)
		for _, r := range []*runningOwner{a, b} {
			ok, err := valid(r.CheckUAID(context.Background(), uaid))
			if r == owned[p] && (err != nil || !ok) {
				t.Fatalf("owner of %d: %v, %v", p, ok, err)
			}
			if r != owned[p] && !errors.Is(err, link.ErrNotOwner) {
				t.Fatalf("non-owner of %d: %v, %v", p, ok, err)
			}
		}
	}
	// A message pending on b's partition survives b leaving.
	var bp int32 = -1
	for p, r := range owned {
		if r == b {
			bp = p
		}
	}
	uaid, ch := uaidIn(bp), newChannel()
	ref := e.accept(uaid, ch)
	waitFor(t, "folded by b", func() bool { return pendingOf(b.Owner, bp) == 1 })
	b.stop()
	e.waitReady(a, testPartitions)
	s := newSession()
	if err := a.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.offsets(), []int64{ref.Offset}) {
		t.Fatalf("after takeover delivered %v", s.offsets())
	}
}

func TestChannelSnapshotBootstrap(t *testing.T) {
	e := newTestEnv(t)
	const p = 1
	a, b, c, d, ch := uaidIn(p), uaidIn(p), uaidIn(p), uaidIn(p), newChannel()
	e.register(a, ch)
	e.register(d, ch)
	e.reset(d)
	ends, err := e.adm.ListEndOffsets(context.Background(), schema.TopicRegistrations)
	if err != nil {
		t.Fatal(err)
	}
	covered, _ := ends.Lookup(schema.TopicRegistrations, p)
	// The projector's snapshots cover everything so far; c exists only as
	// a snapshot (its registrations are past retention).
	snap := func(uaid string, st *pb.ChannelState) {
		ev := e.event(uaid)
		ev.Body = &pb.Event_ChannelState{ChannelState: st}
		e.produce(ev)
	}
	snap(a, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: ch}}, RegistrationsOffset: covered.Offset})
	snap(c, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: ch}}, RegistrationsOffset: covered.Offset})
	snap(d, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: ch, Unregistered: true}}, UaidReset: true, RegistrationsOffset: covered.Offset})
	// A corrupt snapshot and presence record are skipped.
	for _, topic := range []string{schema.TopicChannels, schema.TopicPresence} {
		if err := e.prod.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(a), Value: []byte{0xff}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	e.register(b, ch) // not yet in any snapshot

	check := func(r *runningOwner) {
		t.Helper()
		for _, tc := range []struct {
			uaid string
			want bool
		}{{a, true}, {b, true}, {c, true}, {d, false}} {
			if ok, err := valid(r.CheckUAID(context.Background(), tc.uaid)); err != nil || ok != tc.want {
				t.Fatalf("CheckUAID = %v, %v; want %v", ok, err, tc.want)
			}
		}
	}
	r := e.start(nil)
	check(r)
	r.stop()
	// The registrations commit stops at what snapshots cover: b's
	// registration must be re-read by the next owner.
	committed, err := e.adm.FetchOffsets(context.Background(), DefaultGroup)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := committed.Lookup(schema.TopicRegistrations, p); got.At != covered.Offset {
		t.Fatalf("registrations commit %d, want %d", got.At, covered.Offset)
	}
	r2 := e.start(nil)
	check(r2)
}

func TestSessionsCarriedAcrossLoss(t *testing.T) {
	e := newTestEnv(t)
	const p = 2
	uaid, other := uaidIn(p), uaidIn(p)
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	s, gone := newSession(), newSession()
	for u, sess := range map[string]*fakeSession{uaid: s, other: gone} {
		if err := r.Attach(context.Background(), u, sess); err != nil {
			t.Fatal(err)
		}
	}
	r.onLost(context.Background(), nil, map[string][]int32{schema.TopicMessages: {p}})
	if err := r.Attach(context.Background(), uaid, newSession()); !errors.Is(err, link.ErrNotOwner) {
		t.Fatalf("attach to a lost partition: %v", err)
	}
	r.Detach(other, gone) // disconnects while the partition is away
	if err := r.bootstrap(context.Background(), nil, []int32{p}); err != nil {
		t.Fatal(err)
	}
	ps := r.part(p)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	idA, _ := schema.ParseUAID(uaid)
	idB, _ := schema.ParseUAID(other)
	if u := ps.uaids[idA]; u == nil || u.session != link.Session(s) {
		t.Fatal("session not carried back")
	}
	if u := ps.uaids[idB]; u != nil && u.session != nil {
		t.Fatal("detached session carried back")
	}
}

func TestNewValidates(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no producer", func(c *Config) { c.Producer = nil }},
		{"no sealer", func(c *Config) { c.Sealer = nil }},
		{"no partitions", func(c *Config) { c.Partitions = 0 }},
		{"negative limit", func(c *Config) { c.PendingLimit = -1 }},
		{"negative timeout", func(c *Config) { c.CheckTimeout = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			tc.mod(&cfg)
			if _, err := New(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	o, err := New(Config{Producer: e.prod, Sealer: e.sealer, Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c := o.cfg; c.Group != DefaultGroup || c.PendingLimit != DefaultPendingLimit || c.TTL0Grace != DefaultTTL0Grace ||
		c.CheckTimeout != DefaultCheckTimeout || c.CommitInterval != DefaultCommitInterval || c.PayloadBudget != DefaultPayloadBudget || c.Now == nil || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestRunRefusesWrongPartitionCount(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.config()
	cfg.Partitions = testPartitions + 1
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Run(context.Background()); !errors.Is(err, schema.ErrPartitionMismatch) {
		t.Fatalf("Run = %v, want ErrPartitionMismatch", err)
	}
	if err := o.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestRunStopsPromptly(t *testing.T) {
	e := newTestEnv(t)
	r := e.start(nil)
	r.stop() // possibly before the group was even joined
	r2 := e.start(nil)
	e.waitReady(r2, testPartitions)
	r2.stop()
	if _, err := valid(r2.CheckUAID(context.Background(), uaidIn(0))); !errors.Is(err, link.ErrNotOwner) {
		t.Fatalf("CheckUAID after Run = %v", err)
	}
}

// TestReplayTailOfMarkers: a transaction commit marker at the end of the
// log is never returned by a consumer; the replay must still catch up.
func TestReplayTailOfMarkers(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	txp, err := kgo.NewClient(kgo.SeedBrokers(e.addrs...), kgo.TransactionalID("test-tx"))
	if err != nil {
		t.Fatal(err)
	}
	defer txp.Close()
	if err := txp.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	ev := e.event(uaid)
	ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: ch, TtlS: 60}}
	rec, err := schema.Record(ev)
	if err != nil {
		t.Fatal(err)
	}
	late := uaidIn(1)
	regEv := e.event(late)
	regEv.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch}}
	reg, err := schema.Record(regEv)
	if err != nil {
		t.Fatal(err)
	}
	if err := txp.ProduceSync(context.Background(), rec, reg).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txp.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	cfg := e.config()
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o.probeEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningOwner{Owner: o, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- o.Run(ctx) }()
	t.Cleanup(r.stop)
	e.waitReady(r, testPartitions)
	s := newSession()
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	if len(s.notes()) != 1 {
		t.Fatalf("delivered %d", len(s.notes()))
	}
	if ok, err := valid(r.CheckUAID(context.Background(), late)); err != nil || !ok {
		t.Fatalf("CheckUAID past a marker = %v, %v", ok, err)
	}
}
