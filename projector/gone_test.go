package projector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func goneTestSet(t *testing.T) *GoneSet {
	t.Helper()
	g, err := NewGoneSet(GoneSetConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Logger: channelTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// goneTestStep is one input of the fold: a registration at an offset, or a
// snapshot (bootstrap or live).
type goneTestStep struct {
	ev        *pb.Event
	offset    int64
	snap      *pb.ChannelState
	bootstrap bool
}

// goneTestProjected is the channel state the emulated projector holds per
// gone set and UAID (format 1, for comparison with ApplyRegistration).
var goneTestProjected sync.Map // *GoneSet → map[string]*pb.ChannelState

// goneTestApply feeds one step to the set as the running system does: a
// snapshot as read from pushlog.channels; a registration as read from
// pushlog.registrations, followed by the channel tombstones the channel
// projector writes for it (format 2: only for channels that were
// registered).
func (g *GoneSet) goneTestApply(t *testing.T, uaid string, s goneTestStep) {
	t.Helper()
	u, err := schema.ParseUAID(uaid)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := goneTestProjected.LoadOrStore(g, map[string]*pb.ChannelState{})
	refs := v.(map[string]*pb.ChannelState)
	if refs[uaid] == nil {
		refs[uaid] = &pb.ChannelState{}
	}
	if s.snap != nil {
		if s.bootstrap { // the projector loads the same state
			refs[uaid] = proto.Clone(s.snap).(*pb.ChannelState)
		}
		g.applySnapshot(u, s.snap, s.bootstrap)
		return
	}
	before := proto.Clone(refs[uaid]).(*pb.ChannelState)
	schema.ApplyRegistration(refs[uaid], s.ev, s.offset)
	g.applyRegistration(u, s.ev, s.offset)
	for _, ch := range before.GetChannels() {
		if schema.ChannelActive(before, ch.GetChannelId()) && !schema.ChannelActive(refs[uaid], ch.GetChannelId()) {
			id, err := schema.ParseChannelID(ch.GetChannelId())
			if err != nil {
				t.Fatal(err)
			}
			g.applyChannels(schema.ChannelsFact{UAID: u, Kind: schema.ChannelsChannel, Channel: id, Deleted: true, RegOffset: s.offset + 1}, false)
		}
	}
}

func goneTestReg(uaid, ch string, off int64) goneTestStep {
	return goneTestStep{ev: channelTestReg(uaid, ch), offset: off}
}

func goneTestUnreg(uaid, ch string, off int64) goneTestStep {
	return goneTestStep{ev: channelTestUnreg(uaid, ch), offset: off}
}

func goneTestResetAt(uaid string, off int64) goneTestStep {
	return goneTestStep{ev: channelTestReset(uaid), offset: off}
}

// goneTestState folds steps' registrations with schema.ApplyRegistration.
func goneTestState(steps ...goneTestStep) *pb.ChannelState {
	st := &pb.ChannelState{}
	for _, s := range steps {
		schema.ApplyRegistration(st, s.ev, s.offset)
	}
	return st
}

func TestGoneFold(t *testing.T) {
	u := schema.NewUAID()
	a, b, c, never := channelTestChannelID(), channelTestChannelID(), channelTestChannelID(), channelTestChannelID()
	type answer struct {
		ch                 string
		channelGone, reset bool
	}
	tests := []struct {
		name  string
		steps []goneTestStep
		want  []answer
		facts int
	}{
		{
			name:  "registered channels are not gone",
			steps: []goneTestStep{goneTestReg(u, a, 0)},
			want:  []answer{{a, false, false}, {never, false, false}},
		},
		{
			name:  "unregister (errno 106)",
			steps: []goneTestStep{goneTestReg(u, a, 0), goneTestReg(u, b, 1), goneTestUnreg(u, b, 2)},
			want:  []answer{{a, false, false}, {b, true, false}, {never, false, false}},
			facts: 1,
		},
		{
			// Issue 10 finding 2: nothing lasting, the set is unchanged.
			name:  "unregister of a channel never registered",
			steps: []goneTestStep{goneTestUnreg(u, b, 0)},
			want:  []answer{{b, false, false}},
			facts: 0,
		},
		{
			name:  "reset (errno 103) covers every channel",
			steps: []goneTestStep{goneTestReg(u, a, 0), goneTestResetAt(u, 1)},
			want:  []answer{{a, true, true}, {never, true, true}},
			facts: 1,
		},
		{
			name:  "register again clears",
			steps: []goneTestStep{goneTestReg(u, a, 0), goneTestUnreg(u, a, 1), goneTestReg(u, a, 2)},
			want:  []answer{{a, false, false}},
		},
		{
			name: "revived UAID: new channel live, explicitly unregistered stays gone",
			steps: []goneTestStep{
				goneTestReg(u, a, 0), goneTestUnreg(u, a, 1), goneTestResetAt(u, 2), goneTestReg(u, c, 3),
			},
			want:  []answer{{a, true, false}, {c, false, false}, {never, false, false}},
			facts: 1,
		},
		{
			// Format 2 closes the former gap: the projector tombstones
			// every channel of a reset UAID, so b stays gone after the
			// revival without waiting for a snapshot.
			name: "revived UAID: pre-reset live channel stays gone",
			steps: []goneTestStep{
				goneTestReg(u, b, 0), goneTestResetAt(u, 1), goneTestReg(u, c, 2),
			},
			want:  []answer{{b, true, false}, {c, false, false}},
			facts: 1,
		},
		{
			name: "revived UAID: the snapshot covering it names the pre-reset channels",
			steps: []goneTestStep{
				goneTestReg(u, b, 0), goneTestResetAt(u, 1), goneTestReg(u, c, 2),
				{snap: goneTestState(goneTestReg(u, b, 0), goneTestResetAt(u, 1), goneTestReg(u, c, 2))},
			},
			want:  []answer{{b, true, false}, {c, false, false}, {never, false, false}},
			facts: 1,
		},
		{
			name: "revived UAID: an older snapshot is ignored",
			steps: []goneTestStep{
				goneTestReg(u, b, 0), goneTestResetAt(u, 1), goneTestReg(u, c, 2), goneTestReg(u, b, 3),
				{snap: goneTestState(goneTestReg(u, b, 0), goneTestResetAt(u, 1), goneTestReg(u, c, 2))},
			},
			want: []answer{{b, false, false}, {c, false, false}},
		},
		{
			name: "live snapshot of a non-revived UAID cannot resurrect or kill",
			steps: []goneTestStep{
				goneTestReg(u, a, 0), goneTestReg(u, b, 1), goneTestUnreg(u, a, 2), goneTestUnreg(u, b, 3), goneTestReg(u, b, 4),
				{snap: goneTestState(goneTestReg(u, a, 0), goneTestReg(u, b, 1), goneTestUnreg(u, b, 3))},
			},
			want:  []answer{{a, true, false}, {b, false, false}},
			facts: 1,
		},
		{
			name: "bootstrap snapshot, then events below its offset are skipped",
			steps: []goneTestStep{
				{snap: &pb.ChannelState{RegistrationsOffset: 10, Channels: []*pb.Channel{{ChannelId: a, Unregistered: true}, {ChannelId: b}}}, bootstrap: true},
				goneTestReg(u, a, 3), goneTestUnreg(u, b, 9), goneTestUnreg(u, c, 10),
			},
			// c was never registered: its unregister leaves nothing
			// (issue 10 finding 2).
			want:  []answer{{a, true, false}, {b, false, false}, {c, false, false}},
			facts: 1,
		},
		{
			name: "bootstrap snapshot of a reset UAID, revived later",
			steps: []goneTestStep{
				{snap: goneTestState(goneTestReg(u, a, 0), goneTestReg(u, b, 1), goneTestResetAt(u, 2)), bootstrap: true},
				goneTestReg(u, a, 1), goneTestReg(u, c, 3),
			},
			want:  []answer{{a, true, false}, {b, true, false}, {c, false, false}},
			facts: 2,
		},
		{
			name: "later bootstrap snapshot replaces an earlier one",
			steps: []goneTestStep{
				{snap: goneTestState(goneTestReg(u, a, 0), goneTestUnreg(u, a, 1)), bootstrap: true},
				{snap: goneTestState(goneTestReg(u, a, 0), goneTestUnreg(u, a, 1), goneTestReg(u, a, 2)), bootstrap: true},
			},
			want: []answer{{a, false, false}},
		},
		{
			name:  "malformed ids are never gone",
			steps: []goneTestStep{goneTestReg(u, a, 0), goneTestUnreg(u, a, 1)},
			want:  []answer{{"not-a-channel", false, false}, {strings.ToUpper(a), true, false}},
			facts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := goneTestSet(t)
			for _, s := range tt.steps {
				g.goneTestApply(t, u, s)
			}
			for _, w := range tt.want {
				gone, reset := g.Gone(u, w.ch)
				if gone != w.channelGone || reset != w.reset {
					t.Errorf("Gone(%s) = %v, %v; want %v, %v", w.ch, gone, reset, w.channelGone, w.reset)
				}
			}
			if gone, reset := g.Gone(schema.NewUAID(), a); gone || reset {
				t.Error("unknown UAID is gone")
			}
			if gone, reset := g.Gone("xyz", a); gone || reset {
				t.Error("malformed UAID is gone")
			}
			if g.Len() != tt.facts {
				t.Errorf("Len = %d, want %d", g.Len(), tt.facts)
			}
		})
	}
}

// goneTestHistory is a random registrations history of one UAID over a
// few channels.
func goneTestHistory(rng *rand.Rand, uaid string, chans []string, n int) []goneTestStep {
	steps := make([]goneTestStep, n)
	off := int64(0)
	for i := range steps {
		off += 1 + int64(rng.IntN(3))       // other UAIDs' events in between
		ch := chans[rng.IntN(len(chans)-1)] // the last one stays unseen
		switch rng.IntN(7) {
		case 0:
			steps[i] = goneTestResetAt(uaid, off)
		case 1, 2, 3:
			steps[i] = goneTestReg(uaid, ch, off)
		default:
			steps[i] = goneTestUnreg(uaid, ch, off)
		}
	}
	return steps
}

// goneTestCompare checks the set against the full fold: equal answers, or,
// for a revived UAID, never "gone" where the full fold says live.
func goneTestCompare(g *GoneSet, uaid string, st *pb.ChannelState, chans []string, exact bool) error {
	for _, ch := range chans {
		gone, reset := g.Gone(uaid, ch)
		wantGone, wantReset := schema.ChannelGone(st, ch), st.GetUaidReset()
		if reset != wantReset {
			return fmt.Errorf("%s: uaidReset %v, full fold %v", ch, reset, wantReset)
		}
		if gone != wantGone && (exact || gone) {
			return fmt.Errorf("%s: channelGone %v, full fold %v (exact=%v)", ch, gone, wantGone, exact)
		}
	}
	return nil
}

// goneTestRevival reports whether steps reset the UAID and then register
// again: only then may the lean fold lack a gone channel.
func goneTestRevival(steps []goneTestStep) bool {
	reset := false
	for _, s := range steps {
		switch s.ev.GetBody().(type) {
		case *pb.Event_UserReset:
			reset = true
		case *pb.Event_ChannelRegistered:
			if reset {
				return true
			}
		}
	}
	return false
}

// The lean fold agrees with schema.ApplyRegistration on random histories:
// from registrations alone, from a snapshot plus the retained tail of the
// log (retention cut anywhere before the snapshot), and exactly once the
// snapshot of the final state has been read.
func TestGoneFoldMatchesApplyRegistration(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	uaid := schema.NewUAID()
	chans := []string{channelTestChannelID(), channelTestChannelID(), channelTestChannelID(), channelTestChannelID()}
	for i := range 2000 {
		steps := goneTestHistory(rng, uaid, chans, 1+rng.IntN(12))
		full := goneTestState(steps...)
		cut := rng.IntN(len(steps) + 1) // the snapshot covers steps[:cut]
		logStart := rng.IntN(cut + 1)   // retention deleted steps[:logStart]
		snapshot := goneTestState(steps[:cut]...)

		for _, mode := range []string{"registrations", "snapshot+tail"} {
			g := goneTestSet(t)
			replay, after := steps, steps
			if mode == "snapshot+tail" {
				g.goneTestApply(t, uaid, goneTestStep{snap: snapshot, bootstrap: true})
				replay, after = steps[logStart:], steps[cut:]
			}
			for _, s := range replay {
				g.goneTestApply(t, uaid, s)
			}
			if err := goneTestCompare(g, uaid, full, chans, !goneTestRevival(after)); err != nil {
				t.Fatalf("history %d, %s (cut %d, log start %d): %v\n%v", i, mode, cut, logStart, err, full)
			}
			// A stale snapshot arriving live (the projector lags) changes
			// nothing.
			stale := goneTestState(steps[:rng.IntN(len(steps))]...)
			g.goneTestApply(t, uaid, goneTestStep{snap: stale})
			if err := goneTestCompare(g, uaid, full, chans, !goneTestRevival(after)); err != nil {
				t.Fatalf("history %d, %s, after a stale snapshot: %v\n%v", i, mode, err, full)
			}
			// The projector's snapshot of the final state arrives live.
			g.goneTestApply(t, uaid, goneTestStep{snap: proto.Clone(full).(*pb.ChannelState)})
			if err := goneTestCompare(g, uaid, full, chans, true); err != nil {
				t.Fatalf("history %d, %s, after the final snapshot: %v\n%v", i, mode, err, full)
			}
		}
	}
}

// startGoneSet runs a gone set until the test ends and waits until ready.
func (k *channelTestKafka) startGoneSet(t *testing.T) *GoneSet {
	t.Helper()
	g, err := NewGoneSet(GoneSetConfig{ClientOpts: k.opts(), Logger: channelTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := g.WaitReady(channelTestCtx(t)); err != nil {
		t.Fatal(err)
	}
	return g
}

// goneTestCheckAll compares the set with reference states for every UAID
// and channel of the scenario; exact=false allows the revived UAID's gap.
func goneTestCheckAll(g *GoneSet, s *channelTestScenario, ref map[string]*pb.ChannelState, exact bool) error {
	chans := []string{s.chans["a"], s.chans["b"], s.chans["c"], channelTestUnseen}
	for name, uaid := range s.uaids {
		st := ref[uaid]
		if st == nil {
			st = &pb.ChannelState{}
		}
		if err := goneTestCompare(g, uaid, st, chans, exact || name != "revived"); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

const channelTestUnseen = "00000000-0000-4000-8000-000000000000"

func TestGoneSetFromRegistrations(t *testing.T) {
	k := channelTestCluster(t)
	s := newChannelTestScenario()
	k.produce(t, append(s.first(), s.second()...)...)
	// Unregistered channels come from the projector's tombstones (format
	// 2): it runs beside, as in serve.
	k.startProjector(t, "g-gone-regs")
	k.waitCommitted(t, "g-gone-regs")
	g := k.startGoneSet(t)

	u, c := s.uaids, s.chans
	for _, q := range []struct {
		uaid, ch    string
		gone, reset bool
	}{
		{u["unreg"], c["b"], true, false},  // 106
		{u["unreg"], c["a"], false, false}, // still registered
		{u["reset"], c["a"], true, true},   // 103
		{u["reset"], c["c"], true, true},   // 103 for any channel
		{u["rereg"], c["a"], false, false}, // registered again
		{u["late"], c["c"], true, false},   // unregistered without a registration: one record, expiring
		{u["plain"], c["a"], false, false}, // live
		{schema.NewUAID(), c["a"], false, false},
	} {
		if gone, reset := g.Gone(q.uaid, q.ch); gone != q.gone || reset != q.reset {
			t.Errorf("Gone(%s, %s) = %v, %v; want %v, %v", q.uaid, q.ch, gone, reset, q.gone, q.reset)
		}
	}
	// Registrations alone cannot name the revived UAID's pre-reset
	// channels; everything else matches the full fold.
	if err := goneTestCheckAll(g, s, k.reference(t), false); err != nil {
		t.Error(err)
	}
}

// Snapshots alone (registrations deleted by retention) give the full
// answers, the revived UAID included.
func TestGoneSetFromSnapshots(t *testing.T) {
	k := channelTestCluster(t)
	s := newChannelTestScenario()
	k.produce(t, append(s.first(), s.second()...)...)
	ref := k.reference(t)
	stop := k.startProjector(t, "g-gone-snap")
	k.waitCommitted(t, "g-gone-snap")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	del := make(kadm.Offsets)
	for p, end := range k.endOffsets(t, schema.TopicRegistrations) {
		del.Add(kadm.Offset{Topic: schema.TopicRegistrations, Partition: p, At: end})
	}
	if resp, err := k.adm.DeleteRecords(channelTestCtx(t), del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}

	g := k.startGoneSet(t)
	if err := goneTestCheckAll(g, s, ref, true); err != nil {
		t.Error(err)
	}
	if gone, _ := g.Gone(s.uaids["revived"], s.chans["a"]); !gone {
		t.Error("revived UAID: pre-reset channel not gone")
	}
}

// The usual case: snapshots of an older state plus the registrations
// after (and partly before) them.
func TestGoneSetSnapshotsAndRegistrations(t *testing.T) {
	k := channelTestCluster(t)
	s := newChannelTestScenario()
	k.produce(t, s.first()...)
	stop := k.startProjector(t, "g-gone-both")
	k.waitCommitted(t, "g-gone-both")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	k.produce(t, s.second()...)

	g := k.startGoneSet(t)
	// The second batch is folded by the gone set alone (no projector ran
	// on it), which ignores "late"'s unregister of an unknown channel as
	// ApplyRegistration does; the projector would write it later.
	ref := map[string]*pb.ChannelState{}
	for _, r := range k.readAll(t, schema.TopicRegistrations) {
		st := ref[r.ev.GetUaid()]
		if st == nil {
			st = &pb.ChannelState{}
			ref[r.ev.GetUaid()] = st
		}
		schema.ApplyRegistration(st, r.ev, r.offset)
	}
	if err := goneTestCheckAll(g, s, ref, true); err != nil {
		t.Error(err)
	}
}

// After it is ready the set keeps folding both topics, while Gone is
// called concurrently.
func TestGoneSetLive(t *testing.T) {
	k := channelTestCluster(t)
	g := k.startGoneSet(t) // empty topics: ready at once
	if g.Len() != 0 {
		t.Fatalf("Len = %d on empty topics", g.Len())
	}
	s := newChannelTestScenario()
	// Unregistered channels come from the projector's tombstones.
	k.startProjector(t, "g-gone-live")

	var wg sync.WaitGroup
	stopReaders := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopReaders:
					return
				default:
				}
				for _, uaid := range s.uaids {
					g.Gone(uaid, s.chans["a"])
				}
				g.Len()
				time.Sleep(time.Millisecond) // no busy loop on shared cores
			}
		}()
	}
	defer func() { close(stopReaders); wg.Wait() }()

	k.produce(t, append(s.first(), s.second()...)...)
	ref := k.reference(t)
	channelTestEventually(t, "registrations folded", func() bool {
		return goneTestCheckAll(g, s, ref, false) == nil
	})
	channelTestEventually(t, "revived UAID consolidated", func() bool {
		return goneTestCheckAll(g, s, ref, true) == nil
	})
}

func TestGoneSetCorrupt(t *testing.T) {
	k := channelTestCluster(t)
	uaid := schema.NewUAID()
	a, b := channelTestChannelID(), channelTestChannelID()
	key := []byte(uaid)
	k.produceRaw(t, &kgo.Record{Topic: schema.TopicChannels, Key: key, Value: []byte{0xff, 0x01}})
	k.produce(t, channelTestSnapshot(uaid, &pb.ChannelState{RegistrationsOffset: 1, Channels: []*pb.Channel{{ChannelId: a, Unregistered: true}}}))
	k.produceRaw(t, &kgo.Record{Topic: schema.TopicRegistrations, Key: key, Value: []byte("garbage\xff")})
	k.produceRaw(t, &kgo.Record{Topic: schema.TopicRegistrations, Key: key, Value: nil})
	k.produce(t, channelTestUnreg(uaid, b))
	// A registration event on the channels topic is not a snapshot.
	rec, err := schema.Record(channelTestReg(uaid, a))
	if err != nil {
		t.Fatal(err)
	}
	rec.Topic = schema.TopicChannels
	k.produceRaw(t, rec)

	g := k.startGoneSet(t)
	if gone, reset := g.Gone(uaid, a); !gone || reset {
		t.Errorf("Gone(%s) = %v, %v; want gone", a, gone, reset)
	}
	// b was never registered: its unregister leaves nothing (issue 10).
	if gone, reset := g.Gone(uaid, b); gone || reset {
		t.Errorf("Gone(%s) = %v, %v; want not gone", b, gone, reset)
	}
}

func TestGoneSetLifecycle(t *testing.T) {
	if _, err := NewGoneSet(GoneSetConfig{}); err == nil {
		t.Error("no client options: want an error")
	}

	g := goneTestSet(t) // its broker does not exist
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.WaitReady(ctx); err == nil {
		t.Error("WaitReady before Run: want a timeout error")
	}

	runCtx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Run(runCtx) }()
	stop()
	if err := <-errc; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if err := g.WaitReady(context.Background()); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("WaitReady after Run stopped: %v", err)
	}
	if err := g.Run(context.Background()); err == nil {
		t.Error("second Run: want an error")
	}
}

// Records from Kafka are outside input: any bytes on either topic are
// folded or skipped without panicking, and Gone answers any strings.
func FuzzGoneApplyRecord(f *testing.F) {
	uaid := "0123456789abcdef0123456789abcdef"
	ch := "0e7f2c1a-5b3d-4c8e-9f10-2a3b4c5d6e7f"
	for _, ev := range []*pb.Event{
		channelTestReg(uaid, ch), channelTestUnreg(uaid, ch), channelTestReset(uaid),
		channelTestSnapshot(uaid, &pb.ChannelState{RegistrationsOffset: 3, UaidReset: true, Channels: []*pb.Channel{{ChannelId: ch, Unregistered: true}}}),
	} {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, ev.GetChannelState() != nil, int64(5), uaid, ch)
	}
	f.Add([]byte("\xff\x01garbage"), false, int64(0), "XYZ", "not-a-channel")
	f.Fuzz(func(t *testing.T, value []byte, snapshot bool, offset int64, qUAID, qChannel string) {
		g := goneTestSet(t)
		topic := schema.TopicRegistrations
		if snapshot {
			topic = schema.TopicChannels
		}
		for _, bootstrap := range []bool{true, false} {
			g.applyRecord(&kgo.Record{Topic: topic, Value: value, Offset: offset}, bootstrap)
			g.applyRecord(&kgo.Record{Topic: topic, Value: value, Offset: offset + 1}, bootstrap)
		}
		gone, reset := g.Gone(qUAID, qChannel)
		if reset && !gone {
			t.Fatal("uaidReset without channelGone")
		}
		if g.Len() < 0 {
			t.Fatalf("Len = %d", g.Len())
		}
	})
}
