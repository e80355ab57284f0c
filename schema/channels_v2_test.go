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
	tests := []struct {
		name    string
		rec     *kgo.Record
		kind    schema.ChannelsKind
		deleted bool
		roff    int64
	}{
		{"entry", entry, schema.ChannelsChannel, false, 7},
		{"channel tombstone", names.ChannelTombstone(uaid, ch, 9, 11, 3), schema.ChannelsChannel, true, 9},
		{"uaid state", state, schema.ChannelsUAID, false, 8},
		{"uaid tombstone", names.UaidTombstone(uaid, 10, 3), schema.ChannelsUAID, true, 10},
		{"seen", seen, schema.ChannelsSeen, false, -1},
		{"seen tombstone", names.SeenTombstone(uaid, 3), schema.ChannelsSeen, true, -1},
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
			if f.Kind != tt.kind || f.Deleted != tt.deleted || f.RegOffset != tt.roff {
				t.Fatalf("decoded %+v", f)
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
	for _, r := range []*kgo.Record{e, s} {
		f.Add(r.Key, r.Value, "3")
	}
	f.Add([]byte(uaid+":seen"), []byte(nil), "x")
	f.Add([]byte(uaid), []byte{0xff}, "-1")
	f.Fuzz(func(t *testing.T, key, value []byte, roff string) {
		r := &kgo.Record{Key: key, Value: value, Headers: []kgo.RecordHeader{{Key: schema.HeaderRegOffset, Value: []byte(roff)}}}
		fact, err := schema.DecodeChannels(r)
		if err != nil {
			return
		}
		if fact.RegOffset < -1 {
			t.Fatalf("negative offset %d", fact.RegOffset)
		}
		schema.FoldChannelsFact(map[string]*pb.ChannelState{}, fact)
	})
}
