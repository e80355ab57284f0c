package projector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// channelTestPartitions is small: enough for several partitions per test,
// few enough to keep group joins and reads quick.
const channelTestPartitions = 3

// channelTestKafka is an in-process cluster with pushlog's topics and a
// producer and admin client on it.
type channelTestKafka struct {
	addrs []string
	prod  *kgo.Client
	adm   *kadm.Client
}

func channelTestCluster(t *testing.T) *channelTestKafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(channelTestPartitions,
		schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations, schema.TopicChannels, schema.TopicPresence))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := &channelTestKafka{addrs: c.ListenAddrs()}
	k.prod, err = kgo.NewClient(kgo.SeedBrokers(k.addrs...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.prod.Close)
	k.adm = kadm.NewClient(k.prod)
	return k
}

// opts are the clients' options. A short fetch wait: a partition joins the
// fetch requests only after the long poll in flight returns, which would
// otherwise add up to kgo's default 5 s when a group starts on a
// partition without a committed offset.
func (k *channelTestKafka) opts() []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(k.addrs...), kgo.FetchMaxWait(100 * time.Millisecond)}
}

func channelTestLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func channelTestCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// produce writes events in order (each UAID's events keep their order).
func (k *channelTestKafka) produce(t *testing.T, evs ...*pb.Event) {
	t.Helper()
	recs := make([]*kgo.Record, len(evs))
	for i, ev := range evs {
		r, err := schema.Record(ev)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = r
	}
	if err := k.prod.ProduceSync(channelTestCtx(t), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// produceRaw writes an arbitrary record (corrupt data).
func (k *channelTestKafka) produceRaw(t *testing.T, r *kgo.Record) {
	t.Helper()
	if err := k.prod.ProduceSync(channelTestCtx(t), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// readAll reads topic from earliest to its current end: the decodable
// events with their offsets, in offset order per partition.
func (k *channelTestKafka) readAll(t *testing.T, topic string) []channelTestRecord {
	t.Helper()
	ctx := channelTestCtx(t)
	targets, err := channelTargets(ctx, k.adm, topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []channelTestRecord
	for len(targets) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v", topic, ctx.Err())
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			if ev, err := schema.Decode(r); err == nil {
				out = append(out, channelTestRecord{ev: ev, partition: r.Partition, offset: r.Offset})
			}
		})
	}
	return out
}

type channelTestRecord struct {
	ev        *pb.Event
	partition int32
	offset    int64
}

// snapshots returns the channel state of each UAID as the channels topic
// says it (either format, folded with schema.FoldChannelsFact) and how many
// records each UAID has.
func (k *channelTestKafka) snapshots(t *testing.T) (map[string]*pb.ChannelState, map[string]int) {
	t.Helper()
	last := make(map[string]*pb.ChannelState)
	count := make(map[string]int)
	for _, r := range k.readRaw(t, schema.TopicChannels) {
		f, err := schema.DecodeChannels(r)
		if err != nil {
			continue
		}
		if want := schema.PartitionOf(hex.EncodeToString(f.UAID[:]), channelTestPartitions); r.Partition != want {
			t.Errorf("channels record %q on partition %d, want the UAID's %d", r.Key, r.Partition, want)
		}
		schema.FoldChannelsFact(last, f)
		count[hex.EncodeToString(f.UAID[:])]++
	}
	return last, count
}

// readRaw reads topic from earliest to its current end, tombstones
// included, in offset order per partition.
func (k *channelTestKafka) readRaw(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	ctx := channelTestCtx(t)
	targets, err := channelTargets(ctx, k.adm, topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(targets) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v", topic, ctx.Err())
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			out = append(out, r)
		})
	}
	return out
}

// reference folds every registrations event in the topic with
// schema.ApplyRegistration: what the snapshots must say.
func (k *channelTestKafka) reference(t *testing.T) map[string]*pb.ChannelState {
	t.Helper()
	return channelTestFold(k.readAll(t, schema.TopicRegistrations))
}

// channelTestFold folds registrations events into what the projector's
// records must say. It differs from ApplyRegistration where the projector, keeping no
// channel list, cannot: an unregister of a channel never registered adds
// it as unregistered, and a re-register of an unchanged channel rewrites
// its record (its changed_ms).
func channelTestFold(recs []channelTestRecord) map[string]*pb.ChannelState {
	out := make(map[string]*pb.ChannelState)
	for _, r := range recs {
		st := out[r.ev.GetUaid()]
		if st == nil {
			st = &pb.ChannelState{}
			out[r.ev.GetUaid()] = st
		}
		if r.offset >= st.GetRegistrationsOffset() {
			channelTestStateless(st, r.ev)
		}
		schema.ApplyRegistration(st, r.ev, r.offset)
	}
	return out
}

// channelTestStateless applies what the stateless projector does beyond
// ApplyRegistration, before it.
func channelTestStateless(st *pb.ChannelState, ev *pb.Event) {
	find := func(id string) *pb.Channel {
		for _, c := range st.GetChannels() {
			if c.GetChannelId() == id {
				return c
			}
		}
		return nil
	}
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelUnregistered:
		if find(b.ChannelUnregistered.GetChannelId()) == nil {
			st.Channels = append(st.Channels, &pb.Channel{ChannelId: b.ChannelUnregistered.GetChannelId(), Unregistered: true, ChangedMs: ev.GetTimeMs()})
		}
	case *pb.Event_ChannelRegistered:
		if c := find(b.ChannelRegistered.GetChannelId()); c != nil && !c.GetUnregistered() {
			c.ChangedMs = ev.GetTimeMs()
		}
	}
}

// endOffsets returns the end offset of every partition of topic.
func (k *channelTestKafka) endOffsets(t *testing.T, topic string) map[int32]int64 {
	t.Helper()
	ends, err := k.adm.ListEndOffsets(channelTestCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int32]int64)
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// waitCommitted waits until group has committed the end of every
// registrations partition: then every snapshot of it is durable.
func (k *channelTestKafka) waitCommitted(t *testing.T, group string) {
	t.Helper()
	ends := k.endOffsets(t, schema.TopicRegistrations)
	channelTestEventually(t, "registrations offsets committed", func() bool {
		got, err := k.adm.FetchOffsets(channelTestCtx(t), group)
		if err != nil {
			return false
		}
		for p, end := range ends {
			o, ok := got.Lookup(schema.TopicRegistrations, p)
			if end > 0 && (!ok || o.Err != nil || o.At < end) {
				return false
			}
		}
		return true
	})
}

// channelTestEventually polls cond until it holds; the bound only turns a
// hang into a failure, it is not a speed assertion.
func channelTestEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startProjector runs a projector until the returned stop is called (or the
// test ends); stop returns Run's error.
func (k *channelTestKafka) startProjector(t *testing.T, group string) (stop func() error) {
	t.Helper()
	p, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: k.opts(), Producer: k.prod, Group: group, Logger: channelTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-errc
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func channelTestChannelID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return schema.FormatChannelID(b[:])
}

func channelTestReg(uaid, ch string) *pb.Event {
	ev := schema.NewEvent(uaid, time.Now())
	ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch}}
	return ev
}

func channelTestUnreg(uaid, ch string) *pb.Event {
	ev := schema.NewEvent(uaid, time.Now())
	ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: ch, Code: 200}}
	return ev
}

// channelTestReset is a UserReset listing the UAID's registered channels,
// as its owner writes it (the channel projector does not remember them).
func channelTestReset(uaid string, chans ...string) *pb.Event {
	ev := schema.NewEvent(uaid, time.Now())
	var ids [][]byte
	for _, ch := range chans {
		id, err := schema.ParseChannelID(ch)
		if err != nil {
			panic(err)
		}
		ids = append(ids, id[:])
	}
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "test", ChannelIds: ids}}
	return ev
}

func channelTestSnapshot(uaid string, st *pb.ChannelState) *pb.Event {
	ev := schema.NewEvent(uaid, time.Now())
	ev.Body = &pb.Event_ChannelState{ChannelState: st}
	return ev
}

// channelTestScenario is a set of UAIDs with a story each; its events cover
// every kind of registration change.
type channelTestScenario struct {
	uaids map[string]string // name → uaid
	chans map[string]string // name → channel id
}

func newChannelTestScenario() *channelTestScenario {
	s := &channelTestScenario{uaids: map[string]string{}, chans: map[string]string{}}
	for _, n := range []string{"plain", "unreg", "reset", "revived", "rereg", "late"} {
		s.uaids[n] = schema.NewUAID()
	}
	for _, n := range []string{"a", "b", "c"} {
		s.chans[n] = channelTestChannelID()
	}
	return s
}

// first is the first batch of events; second the events after it.
func (s *channelTestScenario) first() []*pb.Event {
	u, c := s.uaids, s.chans
	return []*pb.Event{
		channelTestReg(u["plain"], c["a"]), channelTestReg(u["plain"], c["b"]),
		channelTestReg(u["unreg"], c["a"]), channelTestReg(u["unreg"], c["b"]), channelTestUnreg(u["unreg"], c["b"]),
		channelTestReg(u["reset"], c["a"]), channelTestReset(u["reset"], c["a"]),
		channelTestReg(u["revived"], c["a"]), channelTestReg(u["revived"], c["b"]), channelTestReset(u["revived"], c["a"], c["b"]),
		channelTestReg(u["rereg"], c["a"]), channelTestUnreg(u["rereg"], c["a"]),
	}
}

func (s *channelTestScenario) second() []*pb.Event {
	u, c := s.uaids, s.chans
	return []*pb.Event{
		channelTestReg(u["revived"], c["c"]), // revives; a and b stay gone
		channelTestReg(u["rereg"], c["a"]),   // registered again
		channelTestReg(u["late"], c["a"]), channelTestUnreg(u["late"], c["c"]),
		channelTestReg(u["plain"], c["a"]), // idempotent: no change
	}
}

// expect lists per UAID name the channels that must be gone / active after
// both batches.
func (s *channelTestScenario) expect() (gone, active map[string][]string, reset map[string]bool) {
	gone = map[string][]string{
		// "late" unregistered c without registering it: the projector
		// keeps no channel list, so c gets an unregistered record,
		// bounded per UAID and forgotten at the UAID expiry.
		"unreg": {"b"}, "reset": {"a", "b", "c"}, "revived": {"a", "b"}, "late": {"c"},
	}
	active = map[string][]string{
		"plain": {"a", "b"}, "unreg": {"a"}, "revived": {"c"}, "rereg": {"a"}, "late": {"a"},
	}
	return gone, active, map[string]bool{"reset": true}
}

func (s *channelTestScenario) checkStates(t *testing.T, states map[string]*pb.ChannelState) {
	t.Helper()
	gone, active, reset := s.expect()
	for name, uaid := range s.uaids {
		st := states[uaid]
		if st == nil {
			t.Errorf("%s: no snapshot", name)
			continue
		}
		if st.GetUaidReset() != reset[name] {
			t.Errorf("%s: uaid_reset = %v", name, st.GetUaidReset())
		}
		for _, ch := range gone[name] {
			if !schema.ChannelGone(st, s.chans[ch]) {
				t.Errorf("%s: channel %s not gone", name, ch)
			}
		}
		for _, ch := range active[name] {
			if !schema.ChannelActive(st, s.chans[ch]) {
				t.Errorf("%s: channel %s not active", name, ch)
			}
		}
	}
}

// channelTestEqual compares snapshots with the reference fold. A snapshot
// is written only when the state changes, so after events that change
// nothing its registrations offset is behind the reference's (harmless:
// folding those events again changes nothing either).
func channelTestEqual(t *testing.T, got, want map[string]*pb.ChannelState) {
	t.Helper()
	for uaid, w := range want {
		g := got[uaid]
		if g == nil {
			t.Errorf("no snapshot of %s", uaid)
			continue
		}
		if g.GetRegistrationsOffset() > w.GetRegistrationsOffset() || g.GetRegistrationsOffset() <= 0 {
			t.Errorf("snapshot of %s: registrations_offset %d, reference %d", uaid, g.GetRegistrationsOffset(), w.GetRegistrationsOffset())
		}
		g, w = proto.Clone(g).(*pb.ChannelState), proto.Clone(w).(*pb.ChannelState)
		g.RegistrationsOffset, w.RegistrationsOffset = 0, 0
		if !proto.Equal(g, w) {
			t.Errorf("snapshot of %s:\n got %v\nwant %v", uaid, g, w)
		}
	}
	for uaid := range got {
		if want[uaid] == nil {
			t.Errorf("unexpected snapshot of %s", uaid)
		}
	}
}

func TestChannelProjectorSnapshots(t *testing.T) {
	k := channelTestCluster(t)
	s := newChannelTestScenario()
	k.produce(t, append(s.first(), s.second()...)...)

	stop := k.startProjector(t, "g-snapshots")
	k.waitCommitted(t, "g-snapshots")
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	got, _ := k.snapshots(t)
	channelTestEqual(t, got, k.reference(t))
	s.checkStates(t, got)
}

// A second projector in the same group resumes at the committed offsets:
// nothing lost, nothing written again; a full replay (offsets rewound, as
// after a crash between producing and committing) writes nothing new.
func TestChannelProjectorRestart(t *testing.T) {
	k := channelTestCluster(t)
	s := newChannelTestScenario()
	const group = "g-restart"

	k.produce(t, s.first()...)
	stop := k.startProjector(t, group)
	k.waitCommitted(t, group)
	if err := stop(); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	_, count1 := k.snapshots(t)

	k.produce(t, s.second()...)
	stop = k.startProjector(t, group)
	k.waitCommitted(t, group)
	if err := stop(); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	got, count2 := k.snapshots(t)
	channelTestEqual(t, got, k.reference(t))
	s.checkStates(t, got)
	// Unchanged by the second batch. "plain" is not: its idempotent
	// re-register now writes one small record (the projector does not
	// remember registered channels).
	for _, name := range []string{"unreg", "reset"} {
		if uaid := s.uaids[name]; count2[uaid] != count1[uaid] {
			t.Errorf("%s: %d snapshots after restart, %d before: duplicated", name, count2[uaid], count1[uaid])
		}
	}

	// Rewind the group to the start: every event is below its snapshot's
	// registrations offset, so the replay must not write anything.
	before := k.endOffsets(t, schema.TopicChannels)
	rewind := make(kadm.Offsets)
	for p := range k.endOffsets(t, schema.TopicRegistrations) {
		rewind.Add(kadm.Offset{Topic: schema.TopicRegistrations, Partition: p, At: 0, LeaderEpoch: -1})
	}
	if resp, err := k.adm.CommitOffsets(channelTestCtx(t), group, rewind); err != nil || resp.Error() != nil {
		t.Fatalf("rewind: %v %v", err, resp.Error())
	}
	stop = k.startProjector(t, group)
	k.waitCommitted(t, group)
	if err := stop(); err != nil {
		t.Fatalf("replay Run: %v", err)
	}
	if after := k.endOffsets(t, schema.TopicChannels); !channelTestSameOffsets(before, after) {
		t.Errorf("replay wrote snapshots: channels end offsets %v → %v", before, after)
	}
}

func channelTestSameOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for p, o := range a {
		if b[p] != o {
			return false
		}
	}
	return true
}

// Registrations that fell off the log (retention) live on in the snapshot;
// the events after it are folded on top, and events still in the log but
// below the snapshot's offset are not folded again.
func TestChannelProjectorSnapshotThenRegistrations(t *testing.T) {
	k := channelTestCluster(t)
	uaid := schema.NewUAID()
	a, b, c := channelTestChannelID(), channelTestChannelID(), channelTestChannelID()
	other := schema.NewUAID() // its events stay in the log, below its snapshot

	k.produce(t, channelTestReg(uaid, a), channelTestReg(uaid, b), channelTestUnreg(uaid, b))
	old := k.reference(t)[uaid]
	p := schema.PartitionOf(uaid, channelTestPartitions)
	del := make(kadm.Offsets)
	del.Add(kadm.Offset{Topic: schema.TopicRegistrations, Partition: p, At: k.endOffsets(t, schema.TopicRegistrations)[p]})
	if resp, err := k.adm.DeleteRecords(channelTestCtx(t), del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}

	k.produce(t, channelTestReg(other, a), channelTestUnreg(other, a))
	otherSnap := channelTestFold(k.readAll(t, schema.TopicRegistrations))[other]
	// Deliberately disagree with the log: a is active in the snapshot
	// although the log unregistered it. Refolding would unregister it.
	otherSnap.Channels[0].Unregistered = false

	k.produce(t, channelTestSnapshot(uaid, old), channelTestSnapshot(other, otherSnap))
	k.produce(t, channelTestReg(uaid, c), channelTestUnreg(uaid, a), channelTestReg(other, b))

	stop := k.startProjector(t, "g-snap")
	k.waitCommitted(t, "g-snap")
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, _ := k.snapshots(t)
	st := got[uaid]
	if !schema.ChannelGone(st, a) || !schema.ChannelGone(st, b) || !schema.ChannelActive(st, c) {
		t.Errorf("snapshot + registrations: got %v, want a and b gone, c active", st)
	}
	if want := k.reference(t)[uaid].GetRegistrationsOffset(); st.GetRegistrationsOffset() != want {
		t.Errorf("registrations_offset %d, want %d", st.GetRegistrationsOffset(), want)
	}
	ost := got[other]
	if !schema.ChannelActive(ost, a) || !schema.ChannelActive(ost, b) {
		t.Errorf("events below the snapshot offset were folded again: %v", ost)
	}
}

// Corrupt records (garbage, tombstones, a future encoding, a snapshot on
// the wrong topic) are skipped on both topics; the rest is folded and the
// offsets pass them.
func TestChannelProjectorCorrupt(t *testing.T) {
	k := channelTestCluster(t)
	uaid := schema.NewUAID()
	a, b := channelTestChannelID(), channelTestChannelID()
	key := []byte(uaid)
	k.produceRaw(t, &kgo.Record{Topic: schema.TopicChannels, Key: key, Value: []byte{0xff, 0x01, 0x02}})
	k.produce(t, channelTestReg(uaid, a))
	for _, r := range []*kgo.Record{
		{Topic: schema.TopicRegistrations, Key: key, Value: []byte("not protobuf \xff\xff")},
		{Topic: schema.TopicRegistrations, Key: key, Value: nil},
		{Topic: schema.TopicRegistrations, Key: key, Value: []byte{0x0a, 0x01, 0x00},
			Headers: []kgo.RecordHeader{{Key: schema.HeaderVersion, Value: []byte("99")}}},
	} {
		k.produceRaw(t, r)
	}
	k.produce(t, channelTestReg(uaid, b), channelTestUnreg(uaid, a))

	stop := k.startProjector(t, "g-corrupt")
	k.waitCommitted(t, "g-corrupt")
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, _ := k.snapshots(t)
	if st := got[uaid]; !schema.ChannelGone(st, a) || !schema.ChannelActive(st, b) {
		t.Errorf("got %v, want a gone and b active", st)
	}
}

func TestNewChannelProjectorConfig(t *testing.T) {
	if _, err := NewChannelProjector(ChannelProjectorConfig{}); err == nil {
		t.Error("no client options: want an error")
	}
	p, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.Group != ChannelDefaultGroup {
		t.Errorf("group %q, want %q", p.cfg.Group, ChannelDefaultGroup)
	}
}

// A canceled context stops Run cleanly even while it cannot reach Kafka.
func TestChannelProjectorStops(t *testing.T) {
	p, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Logger: channelTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	cancel()
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
}
