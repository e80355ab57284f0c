package owner

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// chanState shows a UAID's record as a format-1 ChannelState (nil when
// unknown), for assertions written against that view.
func (ps *partState) chanState(id [16]byte) *pb.ChannelState {
	r, ok := ps.recs.get(id)
	if !ok {
		return nil
	}
	st := &pb.ChannelState{UaidReset: r.reset(), RegistrationsOffset: r.next}
	for i := range r.count() {
		id := r.id(i)
		st.Channels = append(st.Channels, &pb.Channel{ChannelId: schema.FormatChannelID(id[:]), Unregistered: i >= r.active()})
	}
	return st
}

// chanRecord builds a format-2 pushlog.channels record of uaid on p.
func chanRecord(t testing.TB, p int32, uaid, ch string, deleted bool, roff int64) *kgo.Record {
	t.Helper()
	names := schema.DefaultNames()
	id, err := schema.ParseChannelID(ch)
	if err != nil {
		t.Fatal(err)
	}
	if deleted {
		return names.ChannelTombstone(uaid, id, roff, 1, p)
	}
	r, err := names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: ch, RegistrationsOffset: roff, ChangedMs: 60000 * 1000}, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// unregRecord is the projector's record of an unregistered channel (a
// value, kept until the UAID expiry); forgetRecord its later tombstone.
func unregRecord(t testing.TB, p int32, uaid, ch string, roff int64) *kgo.Record {
	t.Helper()
	id, err := schema.ParseChannelID(ch)
	if err != nil {
		t.Fatal(err)
	}
	r, err := schema.DefaultNames().UnregisteredRecord(uaid, id, roff, 60000*1000, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func forgetRecord(t testing.TB, p int32, uaid, ch string, roff int64) *kgo.Record {
	t.Helper()
	id, err := schema.ParseChannelID(ch)
	if err != nil {
		t.Fatal(err)
	}
	return schema.DefaultNames().ChannelForget(uaid, id, roff, p)
}

func uaidRecord(t testing.TB, p int32, uaid string, reset bool, roff int64) *kgo.Record {
	t.Helper()
	r, err := schema.DefaultNames().UaidStateRecord(uaid, &pb.UaidState{UaidReset: reset, ResetMs: 60000 * 2000, RegistrationsOffset: roff}, p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRecordFold: the compact record folds registrations and both formats
// of pushlog.channels with ApplyRegistration's semantics, skipping what it
// already covers; unknown unregisters leave nothing.
func TestRecordFold(t *testing.T) {
	const p = 1
	uaid := uaidIn(p)
	id, _ := schema.ParseUAID(uaid)
	a, b, c, never := newChannel(), newChannel(), newChannel(), newChannel()
	reg := func(ch string, off int64) *kgo.Record {
		return regRecord(t, p, uaid, &pb.ChannelRegistered{ChannelId: ch}, off)
	}
	unreg := func(ch string, off int64) *kgo.Record {
		return regRecord(t, p, uaid, &pb.ChannelUnregistered{ChannelId: ch}, off)
	}
	reset := func(off int64) *kgo.Record { return regRecord(t, p, uaid, &pb.UserReset{Reason: "test"}, off) }
	snapshot := func(st *pb.ChannelState) *kgo.Record {
		ev := schema.NewEvent(uaid, time.Now())
		ev.Body = &pb.Event_ChannelState{ChannelState: st}
		r, err := schema.Record(ev)
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = p
		return r
	}
	tests := []struct {
		name         string
		recs         []*kgo.Record
		known, valid bool
		active, gone []string // gone: channelGone (unregistered or reset)
		next         int64
	}{
		{name: "register and unregister", recs: []*kgo.Record{reg(a, 0), reg(b, 1), unreg(b, 2)},
			known: true, valid: true, active: []string{a}, gone: []string{b}, next: 3},
		{name: "unknown unregister of an unknown UAID leaves nothing", recs: []*kgo.Record{unreg(a, 0)}},
		{name: "unknown unregister of a known UAID changes nothing", recs: []*kgo.Record{reg(a, 0), unreg(never, 1)},
			known: true, valid: true, active: []string{a}, next: 2},
		{name: "reset: every channel gone", recs: []*kgo.Record{reg(a, 0), reset(1)},
			known: true, gone: []string{a, never}, next: 2},
		{name: "revival: new channel live, old ones stay gone", recs: []*kgo.Record{reg(a, 0), reset(1), reg(c, 2)},
			known: true, valid: true, active: []string{c}, gone: []string{a}, next: 3},
		{name: "format 2 bootstrap", recs: []*kgo.Record{chanRecord(t, p, uaid, a, false, 3), chanRecord(t, p, uaid, b, false, 4), chanRecord(t, p, uaid, b, true, 5)},
			known: true, valid: true, active: []string{a}, gone: []string{b}, next: 5},
		{name: "a tombstone older than the fold is ignored", recs: []*kgo.Record{reg(b, 0), unreg(b, 5), reg(b, 10), chanRecord(t, p, uaid, b, true, 6)},
			known: true, valid: true, active: []string{b}, next: 11},
		{name: "registrations the records cover are skipped", recs: []*kgo.Record{chanRecord(t, p, uaid, a, true, 8), reg(a, 4), reg(b, 8)},
			known: true, valid: true, active: []string{b}, gone: []string{a}, next: 9},
		{name: "format 2 UAID reset and revival", recs: []*kgo.Record{chanRecord(t, p, uaid, a, false, 1), uaidRecord(t, p, uaid, true, 2), chanRecord(t, p, uaid, a, true, 2), uaidRecord(t, p, uaid, false, 3), chanRecord(t, p, uaid, c, false, 3)},
			known: true, valid: true, active: []string{c}, gone: []string{a}, next: 3},
		{name: "format 2 bootstrap, unregistered value record", recs: []*kgo.Record{chanRecord(t, p, uaid, a, false, 3), chanRecord(t, p, uaid, b, false, 4), unregRecord(t, p, uaid, b, 5)},
			known: true, valid: true, active: []string{a}, gone: []string{b}, next: 5},
		{name: "unregistered value only (registrations and tombstones compacted away)", recs: []*kgo.Record{unregRecord(t, p, uaid, b, 5)},
			known: true, valid: true, gone: []string{b}, next: 5},
		{name: "re-registered over its unregistered record", recs: []*kgo.Record{unregRecord(t, p, uaid, b, 5), chanRecord(t, p, uaid, b, false, 7)},
			known: true, valid: true, active: []string{b}, next: 7},
		{name: "an unregistered record older than the fold is ignored", recs: []*kgo.Record{reg(b, 0), unreg(b, 5), reg(b, 10), unregRecord(t, p, uaid, b, 6)},
			known: true, valid: true, active: []string{b}, next: 11},
		{name: "a forget tombstone changes nothing", recs: []*kgo.Record{chanRecord(t, p, uaid, a, false, 3), unregRecord(t, p, uaid, b, 5), forgetRecord(t, p, uaid, b, 5), forgetRecord(t, p, uaid, a, 9)},
			known: true, valid: true, active: []string{a}, gone: []string{b}, next: 5},
		{name: "an expired UAID's tombstone forgets it", recs: []*kgo.Record{chanRecord(t, p, uaid, a, false, 1), uaidRecord(t, p, uaid, true, 2), {Topic: schema.TopicChannels, Partition: p, Key: []byte(uaid)}}},
		{name: "format 1 snapshot, then the registrations after it", recs: []*kgo.Record{
			snapshot(&pb.ChannelState{Channels: []*pb.Channel{{ChannelId: a}, {ChannelId: b, Unregistered: true}}, RegistrationsOffset: 6}),
			unreg(a, 5), reg(c, 6)},
			known: true, valid: true, active: []string{a, c}, gone: []string{b}, next: 7},
		{name: "format 1 reset snapshot", recs: []*kgo.Record{snapshot(&pb.ChannelState{Channels: []*pb.Channel{{ChannelId: a}}, UaidReset: true, RegistrationsOffset: 2})},
			known: true, gone: []string{a, never}, next: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, _ := newTestPart(t, p, newFakeClock())
			ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
			foldAll(ps, tt.recs)
			r, known := ps.recs.get(id)
			if known != tt.known {
				t.Fatalf("known = %v, want %v", known, tt.known)
			}
			info := ps.channelInfo(id)
			if info.Valid != tt.valid {
				t.Errorf("valid = %v, want %v", info.Valid, tt.valid)
			}
			var got []string
			for _, ch := range info.Channels {
				got = append(got, schema.FormatChannelID(ch[:]))
			}
			slices.Sort(got)
			want := slices.Clone(tt.active)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("active %v, want %v", got, want)
			}
			for _, ch := range tt.gone {
				cid, _ := schema.ParseChannelID(ch)
				if !r.channelGone(cid) {
					t.Errorf("%s not gone", ch)
				}
			}
			if cid, _ := schema.ParseChannelID(never); !r.reset() && r.channelGone(cid) {
				t.Error("a channel never seen is gone")
			}
			if known && r.next != tt.next {
				t.Errorf("next = %d, want %d", r.next, tt.next)
			}
		})
	}
}

// regRecord is a registrations record at offset off.
func regRecord(t testing.TB, p int32, uaid string, body any, off int64) *kgo.Record {
	t.Helper()
	ev := schema.NewEvent(uaid, time.Now())
	switch b := body.(type) {
	case *pb.ChannelRegistered:
		ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: b}
	case *pb.ChannelUnregistered:
		ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: b}
	case *pb.UserReset:
		ev.Body = &pb.Event_UserReset{UserReset: b}
	}
	r, err := schema.Record(ev)
	if err != nil {
		t.Fatal(err)
	}
	r.Partition, r.Offset = p, off
	return r
}

// The gone list of a UAID is bounded: a register/unregister loop leaves at
// most maxGoneKept unregistered channels in memory.
func TestGoneChannelsBounded(t *testing.T) {
	const p = 2
	uaid := uaidIn(p)
	id, _ := schema.ParseUAID(uaid)
	ps, _ := newTestPart(t, p, newFakeClock())
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	var recs []*kgo.Record
	var chans []string
	for i := range 50 {
		ch := newChannel()
		chans = append(chans, ch)
		recs = append(recs, regRecord(t, p, uaid, &pb.ChannelRegistered{ChannelId: ch}, int64(2*i)), regRecord(t, p, uaid, &pb.ChannelUnregistered{ChannelId: ch}, int64(2*i+1)))
	}
	foldAll(ps, recs)
	r, _ := ps.recs.get(id)
	if r.count() != maxGoneKept || r.active() != 0 {
		t.Fatalf("%d channels kept (%d active), want %d gone", r.count(), r.active(), maxGoneKept)
	}
	last, _ := schema.ParseChannelID(chans[len(chans)-1])
	if !r.channelGone(last) {
		t.Fatal("the newest unregistered channel was forgotten")
	}
}

// chanRecorder collects the pushlog.channels records a partition writes.
type chanRecorder struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func (c *chanRecorder) produce(r *kgo.Record, _ func(error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r)
}

func (c *chanRecorder) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.recs)
}

// idleResets returns the UAIDs reset for idleness in the produced events.
func idleResets(r *recorder) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.evs {
		if b := ev.GetUserReset(); b != nil && b.GetReason() == "idle" {
			out = append(out, ev.GetUaid())
		}
	}
	return out
}

// TestIdleExpiry: a UAID without a connection for the expiry is reset
// (once), its messages are dropped when the reset is read back, its state
// leaves memory a day later; a connected UAID is never expired, and its
// last-seen record is written at most once a day.
func TestIdleExpiry(t *testing.T) {
	const p = 3
	const expiry = 60 * 24 * time.Hour
	clock := newFakeClock()
	ps, rec := newTestPart(t, p, clock)
	ps.env.cfg.UAIDExpiry = expiry
	chans := &chanRecorder{}
	ps.env.produceRecord = chans.produce
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	ps.checkReady()
	l := newLog(t, p, clock)
	idle, online := uaidIn(p), uaidIn(p)
	idleID, _ := schema.ParseUAID(idle)
	onlineID, _ := schema.ParseUAID(online)
	ch := newChannel()
	foldAll(ps, []*kgo.Record{
		l.add(idle, &pb.ChannelRegistered{ChannelId: ch}),
		l.add(online, &pb.ChannelRegistered{ChannelId: newChannel()}),
	})
	pendingMsg := l.msg(idle, ch, 100*24*3600, "")
	foldAll(ps, l.recs[schema.TopicMessages])
	s := newSession()
	ps.mu.Lock()
	ps.attach(onlineID, s)
	ps.mu.Unlock()

	sweep := func(d time.Duration) {
		clock.Advance(d)
		ps.mu.Lock()
		ps.sweep(clock.Now())
		ps.mu.Unlock()
	}
	sweep(expiry - 24*time.Hour)
	if got := idleResets(rec); len(got) != 0 {
		t.Fatalf("reset before the expiry: %v", got)
	}
	sweep(2 * 24 * time.Hour)
	sweep(time.Minute) // the next scan does not reset it again
	if got := idleResets(rec); !slices.Equal(got, []string{idle}) {
		t.Fatalf("idle resets %v, want only %s", got, idle)
	}
	if info := ps.channelInfo(onlineID); !info.Valid {
		t.Fatal("connected UAID expired")
	}
	// Reading the reset back drops the pending message and invalidates.
	var resetEv *pb.Event
	for _, ev := range rec.evs {
		if ev.GetUserReset() != nil {
			resetEv = ev
		}
	}
	// It lists the registered channels: the channel projector keeps no
	// channel list and marks these unregistered from the event.
	if ids := resetEv.GetUserReset().GetChannelIds(); len(ids) != 1 || schema.FormatChannelID(ids[0]) != ch {
		t.Fatalf("idle reset lists channels %x, want [%s]", ids, ch)
	}
	foldAll(ps, []*kgo.Record{l.add(idle, resetEv.GetUserReset())})
	if ps.channelInfo(idleID).Valid {
		t.Fatal("expired UAID still valid")
	}
	if got := rec.settlements(); !slices.Contains(got, fmt.Sprintf("%d:DROP_REASON_USER_RESET", pendingMsg)) {
		t.Fatalf("settlements %v, want the idle UAID's message dropped", got)
	}
	// Its drop is read back (settled), and a day after the reset it
	// leaves memory.
	for _, ev := range rec.evs {
		if d := ev.GetDropped(); d != nil {
			foldAll(ps, []*kgo.Record{l.add(ev.GetUaid(), d)})
		}
	}
	sweep(25 * time.Hour)
	if _, known := ps.recs.get(idleID); known {
		t.Fatal("reset UAID still in memory a day later")
	}
	// The connected UAID's last seen is written when a day old, then not
	// again for a day, however often it connects.
	ps.mu.Lock()
	ps.seenNow(onlineID)
	ps.mu.Unlock()
	n := chans.count()
	if n == 0 {
		t.Fatal("last seen never written")
	}
	for range 10 {
		ps.mu.Lock()
		ps.seenNow(onlineID)
		ps.mu.Unlock()
		clock.Advance(time.Minute)
	}
	if chans.count() != n {
		t.Fatalf("last-seen written %d times within minutes", chans.count()-n)
	}
	clock.Advance(49 * time.Hour)
	ps.mu.Lock()
	ps.seenNow(onlineID)
	ps.mu.Unlock()
	if chans.count() != n+1 {
		t.Fatalf("last-seen records %d, want one more after two days", chans.count()-n)
	}
}

// An unregistered channel record read from pushlog.channels drops the
// channel's pending messages (DROP_REASON_UNREGISTERED) exactly as the
// older writers' tombstone does, and CheckUAID no longer lists it; a
// forget tombstone afterwards changes nothing.
func TestUnregisteredRecordDropsPending(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  func(uaid, ch string, roff int64) *kgo.Record
	}{
		{"unregistered value", func(uaid, ch string, roff int64) *kgo.Record { return unregRecord(t, 1, uaid, ch, roff) }},
		{"older writers' tombstone", func(uaid, ch string, roff int64) *kgo.Record { return chanRecord(t, 1, uaid, ch, true, roff) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			l := newLog(t, 1, clock)
			uaid, keep, gone := uaidIn(1), newChannel(), newChannel()
			id, _ := schema.ParseUAID(uaid)
			l.add(uaid, &pb.ChannelRegistered{ChannelId: keep})
			l.add(uaid, &pb.ChannelRegistered{ChannelId: gone})
			live := l.msg(uaid, keep, 3600, "")
			goneMsg := l.msg(uaid, gone, 3600, "")
			ps, rec := newTestPart(t, 1, clock)
			ps.setPositions([numGroupTopics]int64{}, l.ends())
			foldAll(ps, append(slices.Clone(l.recs[schema.TopicRegistrations]), l.recs[schema.TopicMessages]...))
			if !ps.ready {
				t.Fatal("not ready")
			}
			foldAll(ps, []*kgo.Record{tc.rec(uaid, gone, 3)})
			if got, want := rec.settlements(), []string{fmt.Sprintf("%d:DROP_REASON_UNREGISTERED", goneMsg)}; !slices.Equal(got, want) {
				t.Fatalf("decisions %v, want %v", got, want)
			}
			if got := liveOffsets(ps); !slices.Equal(got, []int64{live}) {
				t.Fatalf("live %v, want [%d]", got, live)
			}
			keepID, _ := schema.ParseChannelID(keep)
			if info := ps.channelInfo(id); !info.Valid || !slices.Equal(info.Channels, [][16]byte{keepID}) {
				t.Fatalf("CheckUAID %+v, want only %s", info, keep)
			}
			foldAll(ps, []*kgo.Record{forgetRecord(t, 1, uaid, gone, 3)})
			r, _ := ps.recs.get(id)
			goneID, _ := schema.ParseChannelID(gone)
			if !r.channelGone(goneID) || len(rec.settlements()) != 1 {
				t.Fatalf("forget tombstone changed the owner's state")
			}
		})
	}
}

// TestIdleResetRace: a hello racing the idle expiry never leaves a
// connected client on a UAID that is then reset. A hello after the reset
// is decided (produced, not read back) is refused, so the client takes a
// new UAID; a hello before it counts as a connection, so the scan that
// follows does not decide it; an attached session is never expired.
func TestIdleResetRace(t *testing.T) {
	const p = 2
	const expiry = 60 * 24 * time.Hour
	tests := []struct {
		name   string
		steps  []string // idle: the expiry passes; sweep: a minute, then a sweep; hello, attach, detach; fold: read the resets back
		hellos []bool   // what each hello answered
		resets int      // idle resets produced
		valid  bool     // CheckUAID at the end
	}{
		{name: "hello after the reset is produced, before it is folded",
			steps: []string{"idle", "sweep", "hello"}, hellos: []bool{false}, resets: 1},
		{name: "hello after the reset is folded",
			steps: []string{"idle", "sweep", "hello", "fold", "hello"}, hellos: []bool{false, false}, resets: 1},
		{name: "hello just before the scan: seen, not reset",
			steps: []string{"idle", "hello", "sweep", "attach", "sweep"}, hellos: []bool{true}, valid: true},
		{name: "hello, then the scan before the attach",
			steps: []string{"idle", "hello", "sweep", "sweep", "attach", "idle", "sweep"}, hellos: []bool{true}, valid: true},
		{name: "an attached session is never expired",
			steps: []string{"hello", "attach", "idle", "sweep", "idle", "sweep"}, hellos: []bool{true}, valid: true},
		{name: "the clock restarts at the detach",
			steps: []string{"hello", "attach", "idle", "sweep", "detach", "sweep", "idle", "sweep"}, hellos: []bool{true}, resets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			ps, rec := newTestPart(t, p, clock)
			ps.env.cfg.UAIDExpiry = expiry
			ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
			ps.checkReady()
			l := newLog(t, p, clock)
			uaid := uaidIn(p)
			id, _ := schema.ParseUAID(uaid)
			foldAll(ps, []*kgo.Record{l.add(uaid, &pb.ChannelRegistered{ChannelId: newChannel()})})
			s := newSession()
			var hellos []bool
			folded := 0
			for _, step := range tt.steps {
				ps.mu.Lock()
				switch step {
				case "idle":
					clock.Advance(expiry + time.Minute)
				case "sweep":
					clock.Advance(time.Minute)
					ps.sweep(clock.Now())
				case "hello":
					hellos = append(hellos, ps.helloInfo(id).Valid)
				case "attach":
					ps.attach(id, s)
				case "detach":
					ps.detach(id, s)
				case "fold":
					ps.mu.Unlock()
					for _, ev := range rec.evs[folded:] {
						if b := ev.GetUserReset(); b != nil {
							foldAll(ps, []*kgo.Record{l.add(uaid, b)})
						}
					}
					folded = len(rec.evs)
					ps.mu.Lock()
				default:
					t.Fatalf("unknown step %q", step)
				}
				ps.mu.Unlock()
			}
			if !slices.Equal(hellos, tt.hellos) {
				t.Errorf("hellos answered %v, want %v", hellos, tt.hellos)
			}
			if got := len(idleResets(rec)); got != tt.resets {
				t.Errorf("%d idle resets, want %d", got, tt.resets)
			}
			if got := ps.channelInfo(id).Valid; got != tt.valid {
				t.Errorf("valid at the end = %v, want %v", got, tt.valid)
			}
		})
	}
}

// TestExpiryScanIncremental: the idle scan examines at most a chunk of
// records per sweep, and a pass still reaches every UAID (each idle one
// reset once), also while folds add records in the middle of the pass.
func TestExpiryScanIncremental(t *testing.T) {
	const p = 3
	const expiry = 60 * 24 * time.Hour
	tests := []struct {
		name     string
		n, chunk int
		added    int // UAIDs registered after the first chunk
	}{
		{name: "one UAID", n: 1, chunk: expiryChunk},
		{name: "one chunk", n: 100, chunk: 100},
		{name: "many chunks", n: 100, chunk: 7},
		{name: "chunk of one", n: 30, chunk: 1},
		{name: "records added during the pass", n: 100, chunk: 7, added: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			ps, rec := newTestPart(t, p, clock)
			ps.env.cfg.UAIDExpiry = expiry
			ps.idle.chunk = tt.chunk
			ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
			ps.checkReady()
			l := newLog(t, p, clock)
			var idle []string
			for range tt.n {
				u := uaidIn(p)
				idle = append(idle, u)
				foldAll(ps, []*kgo.Record{l.add(u, &pb.ChannelRegistered{ChannelId: newChannel()})})
			}
			clock.Advance(expiry + time.Minute)
			sweeps := 0
			for {
				ps.mu.Lock()
				before := len(idleResets(rec))
				ps.sweep(clock.Now()) // the same minute: the pass goes on
				done := ps.idle.next == nil
				ps.mu.Unlock()
				sweeps++
				if got := len(idleResets(rec)) - before; got > tt.chunk {
					t.Fatalf("sweep %d reset %d UAIDs, more than a chunk of %d", sweeps, got, tt.chunk)
				}
				if sweeps == 1 {
					for range tt.added {
						foldAll(ps, []*kgo.Record{l.add(uaidIn(p), &pb.ChannelRegistered{ChannelId: newChannel()})})
					}
				}
				if done {
					break
				}
				if sweeps > tt.n+tt.added+1 {
					t.Fatal("the pass never ends")
				}
			}
			if max := (tt.n+tt.added)/tt.chunk + 1; sweeps > max {
				t.Errorf("pass took %d sweeps, want at most %d", sweeps, max)
			}
			got := idleResets(rec)
			slices.Sort(got)
			slices.Sort(idle)
			if !slices.Equal(got, idle) {
				t.Fatalf("idle resets of %d UAIDs, want each of the %d idle ones once", len(got), len(idle))
			}
			// No new pass within the minute; the next one resets nobody again.
			clock.Advance(time.Minute)
			for range sweeps + 1 {
				ps.mu.Lock()
				ps.sweep(clock.Now())
				ps.mu.Unlock()
			}
			if n := len(idleResets(rec)); n != len(idle) {
				t.Fatalf("%d idle resets after a second pass, want %d", n, len(idle))
			}
			ps.mu.Lock()
			ps.release() // stops a pass in progress
			ps.mu.Unlock()
		})
	}
}
