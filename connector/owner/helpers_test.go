package owner

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const testPartitions = 4

var allTopics = []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations, schema.TopicChannels, schema.TopicPresence}

// fakeClock is a settable clock shared by the test and the owner.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// fakeSession records what the owner delivers.
type fakeSession struct {
	id   string
	mu   sync.Mutex
	got  []link.Notification
	fail atomic.Bool
}

func newSession() *fakeSession { return &fakeSession{id: schema.NewUAID()} }

func (s *fakeSession) ConnID() string { return s.id }
func (s *fakeSession) Deliver(n link.Notification) error {
	if s.fail.Load() {
		return link.ErrSessionClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, n)
	return nil
}
func (s *fakeSession) notes() []link.Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]link.Notification(nil), s.got...)
}
func (s *fakeSession) offsets() []int64 {
	var out []int64
	for _, n := range s.notes() {
		out = append(out, n.Ref.GetOffset())
	}
	return out
}

// testEnv is an in-process Kafka with the pushlog topics and a producer.
type testEnv struct {
	t      testing.TB
	addrs  []string
	prod   *kgo.Client
	adm    *kadm.Client
	sealer *schema.Sealer
	clock  *fakeClock
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, allTopics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	key := make([]byte, schema.KeySize)
	_, _ = rand.Read(key)
	sealer, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, addrs: addrs, prod: prod, adm: kadm.NewClient(prod), sealer: sealer, clock: newFakeClock()}
}

func (e *testEnv) config() Config {
	return Config{
		ClientOpts:     []kgo.Opt{kgo.SeedBrokers(e.addrs...), kgo.FetchMaxWait(200 * time.Millisecond)},
		Producer:       e.prod,
		Partitions:     testPartitions,
		Sealer:         e.sealer,
		NodeID:         "test-node",
		CommitInterval: 50 * time.Millisecond,
		SweepInterval:  10 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:            e.clock.Now,
	}
}

// runningOwner is an Owner whose Run is in progress.
type runningOwner struct {
	*Owner
	cancel context.CancelFunc
	done   chan error
}

func (e *testEnv) start(mod func(*Config)) *runningOwner {
	e.t.Helper()
	cfg := e.config()
	if mod != nil {
		mod(&cfg)
	}
	o, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningOwner{Owner: o, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- o.Run(ctx) }()
	e.t.Cleanup(r.stop)
	return r
}

// The tests name UAIDs by their text, as clients and events do. A
// connection node parses that text once at its boundary, and a malformed
// UAID is simply not valid there (never reaching the owner); these wrappers
// of the typed Link methods do the same.

func (r *runningOwner) CheckUAID(ctx context.Context, uaid string) (link.UAIDInfo, error) {
	id, err := schema.ParseUAID(uaid)
	if err != nil {
		return link.UAIDInfo{}, nil
	}
	return r.Owner.CheckUAID(ctx, id)
}

func (r *runningOwner) Attach(ctx context.Context, uaid string, s link.Session) error {
	id, err := schema.ParseUAID(uaid)
	if err != nil {
		return err
	}
	return r.Owner.Attach(ctx, id, s)
}

func (r *runningOwner) Detach(uaid string, s link.Session) { r.Owner.Detach(mustUAID(uaid), s) }

func (r *runningOwner) Acked(uaid string, ref *pb.MessageRef) { r.Owner.Acked(mustUAID(uaid), ref) }

func (r *runningOwner) Redeliver(uaid string, s link.Session) { r.Owner.Redeliver(mustUAID(uaid), s) }

// mustUAID parses a UAID the test made.
func mustUAID(s string) schema.UAID {
	id, err := schema.ParseUAID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// stop ends Run and waits for it (idempotent).
func (r *runningOwner) stop() {
	r.cancel()
	if err, ok := <-r.done; ok {
		close(r.done)
		if err != nil {
			panic(err)
		}
	}
}

// waitReady waits until n partitions are owned and caught up.
func (e *testEnv) waitReady(r *runningOwner, n int) {
	e.t.Helper()
	waitFor(e.t, "partitions ready", func() bool {
		st := r.Stats()
		if len(st.Partitions) != n {
			return false
		}
		for _, p := range st.Partitions {
			if !p.Ready {
				return false
			}
		}
		return true
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *testEnv) produce(ev *pb.Event) *kgo.Record {
	e.t.Helper()
	rec, err := schema.Record(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	res := e.prod.ProduceSync(context.Background(), rec)
	if err := res.FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	return res[0].Record
}

func (e *testEnv) event(uaid string) *pb.Event { return schema.NewEvent(uaid, e.clock.Now()) }

func (e *testEnv) register(uaid, ch string) {
	ev := e.event(uaid)
	ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch}}
	e.produce(ev)
}

func (e *testEnv) unregister(uaid, ch string) {
	ev := e.event(uaid)
	ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: ch, Code: 200}}
	e.produce(ev)
}

func (e *testEnv) reset(uaid string) {
	ev := e.event(uaid)
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "test"}}
	e.produce(ev)
}

type msgOpt func(*pb.MessageAccepted)

func withTTL(s int64) msgOpt       { return func(m *pb.MessageAccepted) { m.TtlS = s } }
func withTopic(t string) msgOpt    { return func(m *pb.MessageAccepted) { m.Topic = t } }
func withPayload(b []byte) msgOpt  { return func(m *pb.MessageAccepted) { m.Payload = b } }
func withEncoding(s string) msgOpt { return func(m *pb.MessageAccepted) { m.Encoding = s } }
func withAesgcm(enc, ck string) msgOpt {
	return func(m *pb.MessageAccepted) { m.Encoding, m.Encryption, m.CryptoKey = "aesgcm", enc, ck }
}

// accept produces a MessageAccepted and returns its ref.
func (e *testEnv) accept(uaid, ch string, opts ...msgOpt) *pb.MessageRef {
	ma := &pb.MessageAccepted{ChannelId: ch, Payload: []byte("payload " + ch), Encoding: "aes128gcm", TtlS: 3600, VapidSub: "mailto:a@example.com"}
	for _, o := range opts {
		o(ma)
	}
	ev := e.event(uaid)
	ev.Body = &pb.Event_MessageAccepted{MessageAccepted: ma}
	rec := e.produce(ev)
	return &pb.MessageRef{Partition: rec.Partition, Offset: rec.Offset, ChannelId: ch, AcceptedMs: ev.TimeMs, VapidSub: ma.VapidSub}
}

// ack does what a connection node does on a client ack.
func (e *testEnv) ack(o *Owner, uaid string, ref *pb.MessageRef) {
	if o != nil {
		o.Acked(mustUAID(uaid), ref)
	}
	ev := e.event(uaid)
	ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}
	e.produce(ev)
}

func (e *testEnv) deleteMsg(uaid string, ref *pb.MessageRef) int64 {
	ev := e.event(uaid)
	ev.Body = &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: ref}}
	return e.produce(ev).Offset
}

// acksOf returns the events on pushlog.acks partition p.
func (e *testEnv) acksOf(p int32) []*pb.Event {
	e.t.Helper()
	var out []*pb.Event
	for off := int64(0); ; {
		fp, err := fetchAt(context.Background(), e.prod, schema.TopicAcks, p, off, 1<<20)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(fp.Records) == 0 {
			return out
		}
		for _, rec := range fp.Records {
			if ev, err := schema.Decode(rec); err == nil {
				out = append(out, ev)
			}
		}
		off = fp.Records[len(fp.Records)-1].Offset + 1
	}
}

// dropsOf returns offset -> reason of the Dropped events on acks p.
func (e *testEnv) dropsOf(p int32) map[int64]pb.DropReason {
	out := map[int64]pb.DropReason{}
	for _, ev := range e.acksOf(p) {
		if d := ev.GetDropped(); d != nil {
			out[d.GetMsg().GetOffset()] = d.GetReason()
		}
	}
	return out
}

func (e *testEnv) expiredOf(p int32) map[int64]bool {
	out := map[int64]bool{}
	for _, ev := range e.acksOf(p) {
		if x := ev.GetExpired(); x != nil {
			out[x.GetMsg().GetOffset()] = true
		}
	}
	return out
}

// uaidIn returns a fresh UAID that lives in partition p.
func uaidIn(p int32) string {
	for {
		u := schema.NewUAID()
		if schema.PartitionOf(u, testPartitions) == p {
			return u
		}
	}
}

func newChannel() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return schema.FormatChannelID(b)
}

// pendingOf returns the unsettled count of partition p.
func pendingOf(o *Owner, p int32) int {
	for _, ps := range o.Stats().Partitions {
		if ps.Partition == p {
			return ps.Pending
		}
	}
	return -1
}
