package schema_test

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func TestChannelsRecordsRoundTrip(t *testing.T) {
	names := schema.DefaultNames()
	uaid := "0123456789abcdef0123456789abcdef"
	ch, _ := schema.ParseChannelID(chTestA)
	now := time.UnixMilli(1700000000000)
	entry, err := names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: chTestA, KeyHash: []byte{1}, RegistrationsOffset: 7, ChangedMs: 5}, 3)
	if err != nil {
		t.Fatal(err)
	}
	state, err := names.UaidStateRecord(uaid, &pb.UaidState{UaidReset: true, ResetMs: 9, RegistrationsOffset: 8}, 3, now)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := names.SeenRecord(uaid, now, 3, now)
	if err != nil {
		t.Fatal(err)
	}
	unreg, err := names.UnregisteredRecord(uaid, ch, 12, 13, 3)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		rec     *kgo.Record
		kind    schema.ChannelsKind
		deleted bool
		roff    int64
		unreg   bool // ChannelsFact.Unregistered
		forget  bool
	}{
		{"entry", entry, schema.ChannelsChannel, false, 7, false, false},
		{"unregistered entry", unreg, schema.ChannelsChannel, false, 12, true, false},
		{"channel tombstone (older writers)", names.ChannelTombstone(uaid, ch, 9, 11, 3), schema.ChannelsChannel, true, 9, true, false},
		{"forget tombstone", names.ChannelForget(uaid, ch, 12, 3), schema.ChannelsChannel, true, 12, false, true},
		{"uaid state", state, schema.ChannelsUAID, false, 8, false, false},
		{"uaid tombstone", names.UaidTombstone(uaid, 10, 3), schema.ChannelsUAID, true, 10, false, false},
		{"seen", seen, schema.ChannelsSeen, false, -1, false, false},
		{"seen tombstone", names.SeenTombstone(uaid, 3), schema.ChannelsSeen, true, -1, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rec.Partition != 3 || tt.rec.Topic != names.Channels {
				t.Fatalf("record on %s/%d, want %s/3 (explicit partition)", tt.rec.Topic, tt.rec.Partition, names.Channels)
			}
			f, err := schema.DecodeChannels(tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			if f.Kind != tt.kind || f.Deleted != tt.deleted || f.RegOffset != tt.roff || f.Unregistered() != tt.unreg || f.Forget != tt.forget {
				t.Fatalf("decoded %+v (unregistered %v)", f, f.Unregistered())
			}
			if u, _ := schema.ParseUAID(uaid); f.UAID != u {
				t.Fatal("uaid")
			}
			if tt.kind == schema.ChannelsChannel && f.Channel != ch {
				t.Fatal("channel")
			}
		})
	}
	if f, _ := schema.DecodeChannels(names.ChannelTombstone(uaid, ch, 9, 11, 3)); f.ChangedMs != 11 {
		t.Fatalf("tombstone time %d", f.ChangedMs)
	}
	if f, _ := schema.DecodeChannels(unreg); f.ChangedMs != 13 {
		t.Fatalf("unregistered time %d", f.ChangedMs)
	}
}

// TestFoldChannelsFactUnregistered: the format-1 view shows an unregistered
// record (either writer) as unregistered, a re-registration as active, and
// a forgotten channel not at all.
func TestFoldChannelsFactUnregistered(t *testing.T) {
	names := schema.DefaultNames()
	uaid := "0123456789abcdef0123456789abcdef"
	ch, _ := schema.ParseChannelID(chTestA)
	entry, _ := names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: chTestA, RegistrationsOffset: 1}, 0)
	unreg, _ := names.UnregisteredRecord(uaid, ch, 2, 5, 0)
	steps := []struct {
		name   string
		rec    *kgo.Record
		exists bool
		gone   bool
	}{
		{"registered", entry, true, false},
		{"unregistered value", unreg, true, true},
		{"registered again", entry, true, false},
		{"older writers' tombstone", names.ChannelTombstone(uaid, ch, 3, 6, 0), true, true},
		{"forgotten", names.ChannelForget(uaid, ch, 3, 0), false, false},
	}
	states := map[string]*pb.ChannelState{}
	for _, s := range steps {
		f, err := schema.DecodeChannels(s.rec)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		schema.FoldChannelsFact(states, f)
		st := states[uaid]
		exists := len(st.GetChannels()) == 1
		if exists != s.exists || schema.ChannelGone(st, chTestA) != s.gone {
			t.Fatalf("%s: state %v", s.name, st)
		}
	}
}

func TestDecodeChannelsRejects(t *testing.T) {
	uaid := "0123456789abcdef0123456789abcdef"
	other := "fedcba9876543210fedcba9876543210"
	reg := func(u string) []byte {
		ev := &pb.Event{Uaid: u, Body: &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: chTestA}}}
		r, err := schema.Record(ev)
		if err != nil {
			t.Fatal(err)
		}
		return r.Value
	}
	snap := func(u string) []byte {
		r, err := schema.Record(&pb.Event{Uaid: u, Body: &pb.Event_ChannelState{ChannelState: &pb.ChannelState{}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Value
	}
	for _, tc := range []struct {
		name  string
		key   string
		value []byte
	}{
		{"short key", "abc", nil},
		{"bad uaid", "zz23456789abcdef0123456789abcdef", nil},
		{"bad suffix", uaid + "/x", nil},
		{"bad channel", uaid + ":not-a-uuid", nil},
		{"garbage value", uaid, []byte{0xff, 0x01}},
		{"registration on the channels topic", uaid, reg(uaid)},
		{"value of another uaid", uaid, snap(other)},
		{"snapshot under a channel key", uaid + ":" + chTestA, snap(uaid)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := schema.DecodeChannels(&kgo.Record{Key: []byte(tc.key), Value: tc.value}); !errors.Is(err, schema.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// FuzzDecodeChannels: any key and value (Kafka holds whatever was written)
// decode or fail cleanly, and what decodes folds without panicking.
func FuzzDecodeChannels(f *testing.F) {
	names := schema.DefaultNames()
	uaid := "0123456789abcdef0123456789abcdef"
	e, _ := names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: chTestA, RegistrationsOffset: 3}, 0)
	s, _ := names.UaidStateRecord(uaid, &pb.UaidState{UaidReset: true}, 0, time.Now())
	ch, _ := schema.ParseChannelID(chTestA)
	u, _ := names.UnregisteredRecord(uaid, ch, 4, 5, 0)
	for _, r := range []*kgo.Record{e, s, u} {
		f.Add(r.Key, r.Value, "3", false)
	}
	f.Add([]byte(uaid+":seen"), []byte(nil), "x", false)
	f.Add([]byte(uaid), []byte{0xff}, "-1", false)
	f.Add([]byte(uaid+":"+chTestA), []byte(nil), "7", true)
	f.Fuzz(func(t *testing.T, key, value []byte, roff string, forget bool) {
		r := &kgo.Record{Key: key, Value: value, Headers: []kgo.RecordHeader{{Key: schema.HeaderRegOffset, Value: []byte(roff)}}}
		if forget {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: schema.HeaderForget, Value: []byte("1")})
		}
		fact, err := schema.DecodeChannels(r)
		if err != nil {
			return
		}
		if fact.RegOffset < -1 {
			t.Fatalf("negative offset %d", fact.RegOffset)
		}
		if fact.Forget && (!fact.Deleted || fact.Kind != schema.ChannelsChannel || fact.Unregistered()) {
			t.Fatalf("forget on %+v", fact)
		}
		schema.FoldChannelsFact(map[string]*pb.ChannelState{}, fact)
	})
}
