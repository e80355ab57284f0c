package projector

import (
	"encoding/hex"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// What a channel's key says in pushlog.channels.
const (
	unregTestAbsent       = "absent" // no record, or a forget tombstone
	unregTestActive       = "active"
	unregTestUnregistered = "unregistered" // a value record with unregistered set
)

// unregTestLast returns the last record of every key (what compaction
// keeps), tombstones included.
func unregTestLast(recs []*kgo.Record) map[string]*kgo.Record {
	out := make(map[string]*kgo.Record, len(recs))
	for _, r := range recs {
		out[string(r.Key)] = r
	}
	return out
}

// unregTestState says what the last record of uaid:ch means.
func unregTestState(t *testing.T, last map[string]*kgo.Record, uaid, ch string) string {
	t.Helper()
	r := last[uaid+":"+ch]
	if r == nil {
		return unregTestAbsent
	}
	f, err := schema.DecodeChannels(r)
	if err != nil {
		t.Fatalf("%s: %v", r.Key, err)
	}
	switch {
	case f.Deleted && f.Forget:
		return unregTestAbsent
	case f.Deleted:
		return "tombstone" // what the projector must no longer write
	case f.Unregistered():
		return unregTestUnregistered
	}
	return unregTestActive
}

// unregTestScenario is one UAID's story and what its channels' records
// must say after it and after the UAID expiry.
type unregTestScenario struct {
	name        string
	uaid        string
	evs         []*pb.Event
	want, after map[string]string // channel → state
	neverKeys   []string          // channels that must never have a record
}

func unregTestScenarios(t *testing.T) []*unregTestScenario {
	t.Helper()
	var out []*unregTestScenario
	add := func(name string, build func(s *unregTestScenario)) {
		s := &unregTestScenario{name: name, uaid: schema.NewUAID(), want: map[string]string{}, after: map[string]string{}}
		build(s)
		out = append(out, s)
	}
	add("unregister writes a value record", func(s *unregTestScenario) {
		a, b := channelTestChannelID(), channelTestChannelID()
		s.evs = []*pb.Event{channelTestReg(s.uaid, a), channelTestReg(s.uaid, b), channelTestUnreg(s.uaid, a)}
		s.want[a], s.after[a] = unregTestUnregistered, unregTestAbsent
		s.want[b], s.after[b] = unregTestActive, unregTestActive
	})
	add("re-register overwrites it as active", func(s *unregTestScenario) {
		a := channelTestChannelID()
		s.evs = []*pb.Event{channelTestReg(s.uaid, a), channelTestUnreg(s.uaid, a), channelTestReg(s.uaid, a)}
		s.want[a], s.after[a] = unregTestActive, unregTestActive
	})
	// The projector no longer remembers registered channels, so an
	// unregister of an unknown one that reaches the log (the connection
	// node drops them unless its channel list was partial) writes one
	// record, bounded by MaxUnregisteredKept and forgotten at the expiry.
	add("unknown unregister writes one expiring record", func(s *unregTestScenario) {
		a, never := channelTestChannelID(), channelTestChannelID()
		s.evs = []*pb.Event{channelTestReg(s.uaid, a), channelTestUnreg(s.uaid, never)}
		s.want[a], s.after[a] = unregTestActive, unregTestActive
		s.want[never], s.after[never] = unregTestUnregistered, unregTestAbsent
	})
	add("reset marks every channel unregistered", func(s *unregTestScenario) {
		a, b := channelTestChannelID(), channelTestChannelID()
		s.evs = []*pb.Event{channelTestReg(s.uaid, a), channelTestReg(s.uaid, b), channelTestReset(s.uaid, a, b)}
		s.want[a], s.after[a] = unregTestUnregistered, unregTestAbsent
		s.want[b], s.after[b] = unregTestUnregistered, unregTestAbsent
	})
	add("churn keeps the newest MaxUnregisteredKept", func(s *unregTestScenario) {
		for i := range MaxUnregisteredKept + 5 {
			ch := channelTestChannelID()
			s.evs = append(s.evs, channelTestReg(s.uaid, ch), channelTestUnreg(s.uaid, ch))
			s.want[ch], s.after[ch] = unregTestUnregistered, unregTestAbsent
			if i < 5 {
				s.want[ch] = unregTestAbsent // the oldest, forgotten
			}
		}
	})
	return out
}

// produceOnPartitions writes channels records on the partitions they name
// (the UAID's, not the key's hash), as the projector does.
func (k *channelTestKafka) produceOnPartitions(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	prod, err := kgo.NewClient(kgo.SeedBrokers(k.addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(channelTestCtx(t), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// An unregister of a registered channel writes a value record that stays
// until the UAID expiry (a tombstone would leave with compaction, and the
// endpoint would stop answering 410); then it is forgotten. Re-registering
// overwrites it; at most MaxUnregisteredKept are kept per UAID.
func TestChannelProjectorUnregisteredRecords(t *testing.T) {
	k := channelTestCluster(t)
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	scenarios := unregTestScenarios(t)
	var evs []*pb.Event
	for _, s := range scenarios {
		evs = append(evs, s.evs...)
	}
	k.produce(t, evs...)
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-unreg", UAIDExpiry: time.Hour, Now: func() time.Time { return time.UnixMilli(now.Load()) }})
	k.waitCommitted(t, "g-unreg")

	check := func(phase string, want func(*unregTestScenario) map[string]string) {
		t.Helper()
		recs := k.readRaw(t, schema.TopicChannels)
		last := unregTestLast(recs)
		for _, s := range scenarios {
			for ch, w := range want(s) {
				if got := unregTestState(t, last, s.uaid, ch); got != w {
					t.Errorf("%s: %s: channel %s is %s, want %s", phase, s.name, ch, got, w)
				}
			}
			for _, ch := range s.neverKeys {
				for _, r := range recs {
					if string(r.Key) == s.uaid+":"+ch {
						t.Errorf("%s: %s: a record for a channel never registered", phase, s.name)
					}
				}
			}
		}
		for _, r := range recs {
			if f, err := schema.DecodeChannels(r); err == nil && f.Kind == schema.ChannelsChannel && f.Deleted && !f.Forget {
				t.Fatalf("%s: a channel tombstone without %s (%s): compaction would forget the unregister", phase, schema.HeaderForget, r.Key)
			}
		}
	}
	check("projected", func(s *unregTestScenario) map[string]string { return s.want })
	if got := p.extra.unregCapped.Load(); got != 5 {
		t.Errorf("unregistered_capped_total %d, want 5", got)
	}
	// Bytes stay small: an unregistered record is no larger than a register's.
	for _, r := range k.readRaw(t, schema.TopicChannels) {
		if f, err := schema.DecodeChannels(r); err == nil && f.Kind == schema.ChannelsChannel && len(r.Value) > 64 {
			t.Errorf("a %d-byte channels record %s", len(r.Value), r.Key)
		}
	}

	now.Add((2 * time.Hour).Milliseconds())
	wantExpired := int64(1 + 1 + 2 + MaxUnregisteredKept) // the unknown unregister's record too
	channelTestEventually(t, "unregistered channels forgotten", func() bool { return p.extra.unregExpired.Load() >= wantExpired })
	if got := p.extra.unregExpired.Load(); got != wantExpired {
		t.Errorf("unregistered_expired_total %d, want %d", got, wantExpired)
	}
	check("after the expiry", func(s *unregTestScenario) map[string]string { return s.after })
}

// Data of older writers is upgraded when a projector loads a partition: a
// channel tombstone meaning "unregistered" gets a value record (compaction
// would otherwise remove the fact), unless it is already past the UAID
// expiry, when it is forgotten.
func TestChannelProjectorMigratesTombstones(t *testing.T) {
	k := channelTestCluster(t)
	start := time.Now()
	var now atomic.Int64
	now.Store(start.UnixMilli())
	const expiry = 24 * time.Hour
	uaid := schema.NewUAID()
	part := schema.PartitionOf(uaid, channelTestPartitions)
	ids := make(map[string][16]byte)
	for _, name := range []string{"recent", "old", "live"} {
		id, _ := schema.ParseChannelID(channelTestChannelID())
		ids[name] = id
	}
	names := schema.DefaultNames()
	liveID := ids["live"]
	live, err := names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: schema.FormatChannelID(liveID[:]), RegistrationsOffset: 1, ChangedMs: start.UnixMilli()}, part)
	if err != nil {
		t.Fatal(err)
	}
	k.produceOnPartitions(t, live,
		names.ChannelTombstone(uaid, ids["recent"], 2, start.Add(-time.Hour).UnixMilli(), part),
		names.ChannelTombstone(uaid, ids["old"], 3, start.Add(-2*expiry).UnixMilli(), part),
	)
	k.produce(t, channelTestReg(uaid, channelTestChannelID())) // the partition is loaded
	p := k.startProjectorWith(t, ChannelProjectorConfig{Group: "g-migrate-tomb", UAIDExpiry: expiry, Now: func() time.Time { return time.UnixMilli(now.Load()) }})
	k.waitCommitted(t, "g-migrate-tomb")
	// Past the sweep interval (expiry/100): the sweep forgets "old".
	now.Add((expiry / 50).Milliseconds())
	channelTestEventually(t, "the expired tombstone forgotten", func() bool { return p.extra.unregExpired.Load() == 1 })

	last := unregTestLast(k.readRaw(t, schema.TopicChannels))
	for name, want := range map[string]string{"recent": unregTestUnregistered, "old": unregTestAbsent, "live": unregTestActive} {
		id := ids[name]
		if got := unregTestState(t, last, uaid, schema.FormatChannelID(id[:])); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	id := ids["recent"]
	f, err := schema.DecodeChannels(last[uaid+":"+schema.FormatChannelID(id[:])])
	if err != nil || f.ChangedMs != start.Add(-time.Hour).UnixMilli() || f.RegOffset != 2 {
		t.Errorf("migrated record %+v (%v): want the tombstone's time and offset", f, err)
	}
}

// After compaction removed every tombstone and retention every
// registration, a gone set started from the channels topic alone still
// answers 410 errno 106 for an unregistered channel (the regression the
// value records fix), 103 for a reset UAID, and nothing for live, re-
// registered or never-registered channels.
func TestGoneSetFromCompactedChannels(t *testing.T) {
	k := channelTestCluster(t)
	unreg, rereg, reset, plain := schema.NewUAID(), schema.NewUAID(), schema.NewUAID(), schema.NewUAID()
	a, b, never := channelTestChannelID(), channelTestChannelID(), channelTestChannelID()
	k.produce(t,
		channelTestReg(unreg, a), channelTestReg(unreg, b), channelTestUnreg(unreg, a), channelTestUnreg(unreg, never),
		channelTestReg(rereg, a), channelTestUnreg(rereg, a), channelTestReg(rereg, a),
		channelTestReg(reset, a), channelTestReset(reset, a),
		channelTestReg(plain, a),
	)
	stop := k.startProjector(t, "g-gone-compacted")
	k.waitCommitted(t, "g-gone-compacted")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A fresh cluster holding what compaction leaves: the last record of
	// each key, no tombstones; no registrations at all.
	compacted := channelTestCluster(t)
	var kept []*kgo.Record
	for _, r := range unregTestLast(k.readRaw(t, schema.TopicChannels)) {
		if r.Value != nil {
			kept = append(kept, &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers})
		}
	}
	compacted.produceOnPartitions(t, kept...)
	g := compacted.startGoneSet(t)
	for _, q := range []struct {
		name        string
		uaid, ch    string
		gone, reset bool
	}{
		{"unregistered", unreg, a, true, false},
		{"still registered", unreg, b, false, false},
		{"never registered, unregistered: bounded and expiring", unreg, never, true, false},
		{"re-registered", rereg, a, false, false},
		{"reset", reset, a, true, true},
		{"live", plain, a, false, false},
	} {
		if gone, r := g.Gone(q.uaid, q.ch); gone != q.gone || r != q.reset {
			t.Errorf("%s: Gone = %v, %v; want %v, %v", q.name, gone, r, q.gone, q.reset)
		}
	}
}

// The gone set folds the channel records of every writer: the value
// record and an older writer's tombstone add the channel, a registered
// value or a forget tombstone remove it.
func TestGoneSetChannelRecords(t *testing.T) {
	names := schema.DefaultNames()
	uaid := schema.NewUAID()
	u, _ := schema.ParseUAID(uaid)
	ch, _ := schema.ParseChannelID(channelTestChannelID())
	chID := schema.FormatChannelID(ch[:])
	entry, err := names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: chID, RegistrationsOffset: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	unreg, err := names.UnregisteredRecord(uaid, ch, 2, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := goneTestSet(t)
	for _, step := range []struct {
		name string
		rec  *kgo.Record
		gone bool
	}{
		{"registered", entry, false},
		{"unregistered value", unreg, true},
		{"forget tombstone", names.ChannelForget(uaid, ch, 2, 0), false},
		{"older writers' tombstone", names.ChannelTombstone(uaid, ch, 3, 6, 0), true},
		{"registered again", entry, false},
		{"unregistered again", unreg, true},
	} {
		f, err := schema.DecodeChannels(step.rec)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		g.applyChannels(f, true)
		if gone, _ := g.Gone(hex.EncodeToString(u[:]), chID); gone != step.gone {
			t.Fatalf("%s: gone %v, want %v", step.name, gone, step.gone)
		}
	}
	if g.Len() != 1 {
		t.Fatalf("Len %d, want 1", g.Len())
	}
}
