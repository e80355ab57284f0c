package projector

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// TestChannelFoldStateless checks what fold writes and keeps for each
// event now that it keeps no channel list: active UAIDs leave nothing in
// memory, resets take their channels from the UserReset event (an older
// event without them writes only the UAID record), and replays below the
// loaded offset are skipped.
func TestChannelFoldStateless(t *testing.T) {
	p, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Logger: channelTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	uaid := schema.NewUAID()
	a, b := channelTestChannelID(), channelTestChannelID()
	// kinds summarizes records: "C" a registered channel, "U" unregistered,
	// "R" a reset UAID record, "L" a live (revived) UAID record.
	kinds := func(t *testing.T, recs []*kgo.Record) string {
		t.Helper()
		out := ""
		for _, r := range recs {
			f, err := schema.DecodeChannels(r)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case f.Kind == schema.ChannelsUAID && f.State.GetUaidReset():
				out += "R"
			case f.Kind == schema.ChannelsUAID:
				out += "L"
			case f.Unregistered():
				out += "U"
			default:
				out += "C"
			}
		}
		return out
	}
	for _, tc := range []struct {
		name           string
		loadedNext     int64 // the partition's replay mark
		evs            []*pb.Event
		want           []string // record kinds per event
		resets, unregs int      // what the partition keeps after
	}{
		{name: "registers keep nothing", evs: []*pb.Event{channelTestReg(uaid, a), channelTestReg(uaid, b), channelTestReg(uaid, a)},
			want: []string{"C", "C", "C"}},
		{name: "unregister once", evs: []*pb.Event{channelTestReg(uaid, a), channelTestUnreg(uaid, a), channelTestUnreg(uaid, a)},
			want: []string{"C", "U", ""}, unregs: 1},
		{name: "reset lists channels", evs: []*pb.Event{channelTestReg(uaid, a), channelTestReg(uaid, b), channelTestReset(uaid, a, b), channelTestReset(uaid, a, b)},
			want: []string{"C", "C", "UUR", ""}, resets: 1, unregs: 1},
		{name: "older reset without channels", evs: []*pb.Event{channelTestReg(uaid, a), channelTestReset(uaid)},
			want: []string{"C", "R"}, resets: 1},
		{name: "revived", evs: []*pb.Event{channelTestReg(uaid, a), channelTestReset(uaid, a), channelTestReg(uaid, a)},
			want: []string{"C", "UR", "LC"}},
		{name: "replay below the loaded offset", loadedNext: 2, evs: []*pb.Event{channelTestReg(uaid, a), channelTestUnreg(uaid, a), channelTestReg(uaid, b)},
			want: []string{"", "", "C"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			part := newChannelPartition(0)
			part.next = tc.loadedNext
			for i, ev := range tc.evs {
				r, err := schema.Record(ev)
				if err != nil {
					t.Fatal(err)
				}
				r.Offset = int64(i)
				if got := kinds(t, p.fold(part, r, time.Now(), nil)); got != tc.want[i] {
					t.Errorf("event %d: records %q, want %q", i, got, tc.want[i])
				}
			}
			if len(part.resets) != tc.resets || len(part.gone) != tc.unregs || len(part.legacy) != 0 {
				t.Errorf("kept %d resets, %d UAIDs with unregistered channels, %d legacy; want %d, %d, 0", len(part.resets), len(part.gone), len(part.legacy), tc.resets, tc.unregs)
			}
		})
	}
}
