package projector

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// startProjectorWith runs a projector with cfg's extra settings.
func (k *channelTestKafka) startProjectorWith(t *testing.T, cfg ChannelProjectorConfig) *ChannelProjector {
	t.Helper()
	cfg.ClientOpts, cfg.Logger = k.opts(), channelTestLogger()
	p, err := NewChannelProjector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

// TestChannelBytesPerRegister measures what one register writes to the
// channels topic as a UAID's channel count grows: constant in format 2,
// where format 1 rewrote the whole list (issue 10 finding 1).
func TestChannelBytesPerRegister(t *testing.T) {
	k := channelTestCluster(t)
	uaid := schema.NewUAID()
	const n = 300
	var evs []*pb.Event
	var legacy []int // format-1 snapshot size after each register
	st := &pb.ChannelState{}
	for i := range n {
		ev := channelTestReg(uaid, channelTestChannelID())
		evs = append(evs, ev)
		schema.ApplyRegistration(st, ev, int64(i))
		snap := channelTestSnapshot(uaid, st)
		legacy = append(legacy, proto.Size(snap)+len(uaid))
	}
	k.produce(t, evs...)
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-bytes"})
	k.waitCommitted(t, "g-bytes")

	var sizes []int
	for _, r := range k.readRaw(t, schema.TopicChannels) {
		sizes = append(sizes, len(r.Key)+len(r.Value))
	}
	if len(sizes) != n {
		t.Fatalf("%d records for %d registers", len(sizes), n)
	}
	lo, hi := sizes[0], sizes[0]
	for _, s := range sizes {
		lo, hi = min(lo, s), max(hi, s)
	}
	if hi-lo > 2 { // varints of the offsets may grow by a byte or two
		t.Errorf("bytes per register vary from %d to %d: not O(1)", lo, hi)
	}
	if got := p.extra.bytes.Load(); got != int64(sumInts(sizes)) {
		t.Errorf("written_bytes_total %d, records hold %d", got, sumInts(sizes))
	}
	t.Logf("bytes written per register: format 2 %d-%d (constant; %d in all for %d registers); format 1 wrote %d at 1 channel, %d at 100, %d at %d (%d in all)",
		lo, hi, sumInts(sizes), n, legacy[0], legacy[99], legacy[n-1], n, sumInts(legacy))
}

func sumInts(v []int) int {
	s := 0
	for _, x := range v {
		s += x
	}
	return s
}

// Format-1 snapshots (an existing data directory) are migrated: their
// registered channels and a UAID record are written in format 2; an
// oversized one (the flood of issue 10 finding 1) is quarantined, counted
// and logged, and the projector keeps serving everyone else.
func TestChannelProjectorMigration(t *testing.T) {
	k := channelTestCluster(t)
	plain, reset, flood := schema.NewUAID(), schema.NewUAID(), schema.NewUAID()
	a, b, c := channelTestChannelID(), channelTestChannelID(), channelTestChannelID()
	huge := &pb.ChannelState{}
	for range MaxMigratedChannels + 1 {
		huge.Channels = append(huge.Channels, &pb.Channel{ChannelId: channelTestChannelID(), Unregistered: true})
	}
	k.produce(t,
		channelTestSnapshot(plain, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: a}, {ChannelId: b, Unregistered: true}}}),
		channelTestSnapshot(reset, &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: a, Unregistered: true}}, UaidReset: true, ResetMs: 5}),
		channelTestSnapshot(flood, huge),
	)
	// New registrations of every UAID after the upgrade, in every partition
	// a snapshot lives in (so each one is loaded).
	k.produce(t, channelTestReg(plain, c), channelTestReg(flood, c), channelTestReg(reset, b))
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-migrate"})
	k.waitCommitted(t, "g-migrate")

	if got := p.extra.quarantined.Load(); got != 1 {
		t.Errorf("quarantined %d, want 1 (the oversized snapshot)", got)
	}
	if got := p.extra.migrated.Load(); got != 2 {
		t.Errorf("migrated %d UAIDs, want 2", got)
	}
	// The format-2 records alone (format-1 snapshots removed, as
	// compaction does once the UAID record supersedes them).
	v2 := map[string]*pb.ChannelState{}
	for _, r := range k.readRaw(t, schema.TopicChannels) {
		f, err := schema.DecodeChannels(r)
		if err != nil || f.Snapshot != nil {
			continue
		}
		schema.FoldChannelsFact(v2, f)
	}
	for _, tc := range []struct {
		name, uaid     string
		active, gone   []string
		reset, unknown bool
	}{
		{name: "plain", uaid: plain, active: []string{a, c}},
		{name: "reset, revived", uaid: reset, active: []string{b}},
		{name: "flood: rebuilt from the log", uaid: flood, active: []string{c}},
	} {
		st := v2[tc.uaid]
		if st == nil {
			t.Errorf("%s: no format-2 records", tc.name)
			continue
		}
		for _, ch := range tc.active {
			if !schema.ChannelActive(st, ch) {
				t.Errorf("%s: %s not active in %v", tc.name, ch, st)
			}
		}
		if st.GetUaidReset() != tc.reset {
			t.Errorf("%s: reset %v", tc.name, st.GetUaidReset())
		}
	}
	// The 2 registered channels are migrated as registered; the
	// unregistered one keeps a value record (format 1 kept it for ever; it
	// answers 410 until the UAID expiry now).
	if st := v2[plain]; len(st.GetChannels()) != 3 || !schema.ChannelGone(st, b) {
		t.Errorf("plain: %d channels migrated, want the 2 registered ones and the unregistered one: %v", len(st.GetChannels()), st)
	}
}

// A reset UAID's record leaves the channels topic (a tombstone) after the
// UAID expiry; live UAIDs are untouched.
func TestChannelProjectorExpiresResetUAIDs(t *testing.T) {
	k := channelTestCluster(t)
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	gone, live := schema.NewUAID(), schema.NewUAID()
	gch := channelTestChannelID()
	k.produce(t, channelTestReg(gone, gch), channelTestReset(gone, gch), channelTestReg(live, channelTestChannelID()))
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-expiry", UAIDExpiry: time.Hour, Now: func() time.Time { return time.UnixMilli(now.Load()) }})
	k.waitCommitted(t, "g-expiry")
	now.Add((2 * time.Hour).Milliseconds())
	channelTestEventually(t, "reset UAID tombstoned", func() bool { return p.extra.expired.Load() == 1 })
	var tombs []string
	states := map[string]*pb.ChannelState{}
	for _, r := range k.readRaw(t, schema.TopicChannels) {
		f, err := schema.DecodeChannels(r)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == schema.ChannelsUAID && f.Deleted {
			tombs = append(tombs, string(r.Key))
		}
		schema.FoldChannelsFact(states, f)
	}
	if len(tombs) != 1 || tombs[0] != gone {
		t.Fatalf("UAID tombstones %v, want [%s]", tombs, gone)
	}
	if states[gone] != nil || states[live] == nil {
		t.Fatalf("after expiry: gone %v, live %v", states[gone], states[live])
	}
}

func TestChannelPoison(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{kerr.MessageTooLarge, true},
		{fmt.Errorf("produce: %w", kerr.RecordListTooLarge), true},
		{kerr.InvalidRecord, true},
		{kerr.NotLeaderForPartition, false},
		{kgo.ErrRecordTimeout, false},
		{context.DeadlineExceeded, false},
	} {
		if got := channelPoison(tc.err); got != tc.want {
			t.Errorf("channelPoison(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// The floods of issue 10 finding 1 on one UAID (thousands of registers and
// of unregisters of channels never registered) project into small records:
// each unknown unregister writes one small record (the projector keeps no
// channel list; the connection node drops them unless its list was
// partial) and at most MaxUnregisteredKept stay (older ones are forgotten
// with a tombstone), nothing approaches Kafka's record limit,
// and the projector commits everything without stopping.
func TestChannelProjectorFlood(t *testing.T) {
	k := channelTestCluster(t)
	uaid, other := schema.NewUAID(), schema.NewUAID()
	const regs, unknown = 3000, 5000
	var evs []*pb.Event
	for range unknown {
		evs = append(evs, channelTestUnreg(uaid, channelTestChannelID()))
	}
	for range regs {
		evs = append(evs, channelTestReg(uaid, channelTestChannelID()))
	}
	evs = append(evs, channelTestReg(other, channelTestChannelID()))
	k.produce(t, evs...)
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-flood"})
	k.waitCommitted(t, "g-flood")
	recs := k.readRaw(t, schema.TopicChannels)
	if want := regs + 1 + unknown + (unknown - MaxUnregisteredKept); len(recs) != want {
		t.Fatalf("%d records, want %d (one per register, one per unknown unregister, a forget past %d)", len(recs), want, MaxUnregisteredKept)
	}
	p.mu.Lock()
	for _, part := range p.parts {
		if n := len(part.gone[[16]byte(channelTestMustUAID(t, uaid))]) / goneSlot; n > MaxUnregisteredKept {
			t.Errorf("%d unregistered channels kept in memory, want at most %d", n, MaxUnregisteredKept)
		}
	}
	p.mu.Unlock()
	for _, r := range recs {
		if len(r.Value) > 1024 {
			t.Fatalf("a %d-byte record", len(r.Value))
		}
	}
	if q := p.extra.quarantined.Load(); q != 0 {
		t.Fatalf("quarantined %d", q)
	}
}

// TestChannelStateMemory measures the projector's heap per UAID with 5
// registered channels (it runs in the same process as the owner in the
// embedded default): PUSHLOG_MEASURE_UAIDS sets the count. It keeps
// nothing for them (issue 10: the owner's record is an idle UAID's only
// cost); it was ~110-196 bytes when it kept every UAID's channel list.
func TestChannelStateMemory(t *testing.T) {
	n := 100000
	if s := os.Getenv("PUSHLOG_MEASURE_UAIDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("PUSHLOG_MEASURE_UAIDS=%q", s)
		}
		n = v
	}
	p, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Logger: channelTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	part := newChannelPartition(0)
	reg := &pb.ChannelRegistered{}
	ev := &pb.Event{TimeMs: 1, Body: &pb.Event_ChannelRegistered{ChannelRegistered: reg}}
	r := &kgo.Record{}
	var id, ch [16]byte
	before := int64(channelHeapAfterGC())
	for i := range n {
		binary.BigEndian.PutUint64(id[:8], uint64(i)+1)
		ev.Uaid = hex.EncodeToString(id[:])
		for c := range 5 {
			binary.BigEndian.PutUint64(ch[:8], uint64(i))
			binary.BigEndian.PutUint64(ch[8:], uint64(c))
			reg.ChannelId = schema.FormatChannelID(ch[:])
			v, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			r.Value = v
			p.fold(part, r, time.UnixMilli(1), nil)
			r.Offset++
		}
	}
	per := float64(int64(channelHeapAfterGC())-before) / float64(n) // may dip below 0: nothing is kept
	t.Logf("channel projector: %.1f bytes of heap per UAID with 5 channels (%d UAIDs)", per, n)
	if len(part.resets) != 0 || len(part.gone) != 0 || len(part.legacy) != 0 {
		t.Fatalf("state kept for active UAIDs: %d reset, %d with unregistered, %d legacy", len(part.resets), len(part.gone), len(part.legacy))
	}
	if per > 20 {
		t.Errorf("%.1f bytes per UAID, want at most 20 (nothing is kept)", per)
	}
	runtime.KeepAlive(part)
}

func channelHeapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A record Kafka refuses for itself (MESSAGE_TOO_LARGE: the crash of issue
// 10 finding 1) is quarantined, counted and logged; the projector commits
// past it and keeps projecting everyone else.
func TestChannelProjectorQuarantinesRefusedRecords(t *testing.T) {
	k := channelTestCluster(t)
	if _, err := k.adm.AlterTopicConfigs(channelTestCtx(t), []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("1000")}}, schema.TopicChannels); err != nil {
		t.Fatal(err)
	}
	poison, other := schema.NewUAID(), schema.NewUAID()
	big := channelTestReg(poison, channelTestChannelID())
	huge := make([]byte, 4000) // random: compression cannot shrink it under the limit
	_, _ = rand.Read(huge)
	big.GetChannelRegistered().KeyHash = huge
	k.produce(t, big)
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-poison"})
	k.waitCommitted(t, "g-poison")
	if got := p.extra.quarantined.Load(); got != 1 {
		t.Fatalf("quarantined %d, want 1", got)
	}
	a := channelTestChannelID()
	k.produce(t, channelTestReg(other, a), channelTestReg(poison, channelTestChannelID()))
	k.waitCommitted(t, "g-poison")
	got, _ := k.snapshots(t)
	if !schema.ChannelActive(got[other], a) || len(got[poison].GetChannels()) != 1 {
		t.Fatalf("after the poison record: other %v, poison %v", got[other], got[poison])
	}
}

func channelTestMustUAID(t *testing.T, uaid string) [16]byte {
	t.Helper()
	id, err := schema.ParseUAID(uaid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
