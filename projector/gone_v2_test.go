package projector

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Gone facts age out after the expiry (bounded memory; an expired UAID's
// record is tombstoned by then), and a tombstone of a UAID record forgets
// it at once.
func TestGoneSetAging(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	g, err := NewGoneSet(GoneSetConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Logger: channelTestLogger(),
		Expiry: time.Hour, Now: func() time.Time { return time.UnixMilli(now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	old, fresh, expired := schema.NewUAID(), schema.NewUAID(), schema.NewUAID()
	a := channelTestChannelID()
	g.goneTestApply(t, old, goneTestReg(old, a, 0))
	g.goneTestApply(t, old, goneTestUnreg(old, a, 1))
	g.goneTestApply(t, expired, goneTestResetAt(expired, 2))
	now.Add((50 * time.Minute).Milliseconds())
	g.goneTestApply(t, fresh, goneTestResetAt(fresh, 3))
	if g.Len() != 3 {
		t.Fatalf("Len = %d, want 3", g.Len())
	}
	// The projector tombstones the expired UAID's record.
	eid, _ := schema.ParseUAID(expired)
	g.applyChannels(schema.ChannelsFact{UAID: eid, Kind: schema.ChannelsUAID, Deleted: true, RegOffset: -1}, false)
	if gone, reset := g.Gone(expired, a); gone || reset {
		t.Fatal("tombstoned UAID still gone")
	}
	now.Add((20 * time.Minute).Milliseconds())
	g.maybeSweep()
	if gone, _ := g.Gone(old, a); gone {
		t.Error("fact older than the expiry still held")
	}
	if gone, reset := g.Gone(fresh, a); !gone || !reset {
		t.Error("fresh fact aged out")
	}
	if g.Len() != 1 || g.aged.Load() != 1 {
		t.Errorf("Len = %d, aged %d; want 1, 1", g.Len(), g.aged.Load())
	}
}

// The unregistered channels kept per UAID are bounded (a register /
// unregister loop, or a flooded format-1 snapshot).
func TestGoneSetChannelsBounded(t *testing.T) {
	g := goneTestSet(t)
	uaid := schema.NewUAID()
	for i := range goneMaxChannels + 50 {
		ch := channelTestChannelID()
		g.goneTestApply(t, uaid, goneTestReg(uaid, ch, int64(2*i)))
		g.goneTestApply(t, uaid, goneTestUnreg(uaid, ch, int64(2*i+1)))
	}
	if g.Len() != goneMaxChannels || g.capped.Load() != 50 {
		t.Fatalf("Len %d, capped %d; want %d, 50", g.Len(), g.capped.Load(), goneMaxChannels)
	}
	snap := &pb.ChannelState{RegistrationsOffset: 1}
	var last string
	for range goneMaxChannels + 10 {
		last = channelTestChannelID()
		snap.Channels = append(snap.Channels, &pb.Channel{ChannelId: last, Unregistered: true})
	}
	other := schema.NewUAID()
	g.goneTestApply(t, other, goneTestStep{snap: snap, bootstrap: true})
	if gone, _ := g.Gone(other, last); !gone || g.Len() != 2*goneMaxChannels {
		t.Fatalf("snapshot: newest gone %v, Len %d", gone, g.Len())
	}
}
