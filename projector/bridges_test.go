package projector

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func bridgeTestEvent(uaid string, body any) *pb.Event {
	ev := schema.NewEvent(uaid, time.Now())
	switch b := body.(type) {
	case *pb.BridgeRegistered:
		ev.Body = &pb.Event_BridgeRegistered{BridgeRegistered: b}
	case *pb.ChannelRegistered:
		ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: b}
	case *pb.ChannelUnregistered:
		ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: b}
	case *pb.UserReset:
		ev.Body = &pb.Event_UserReset{UserReset: b}
	}
	return ev
}

func TestBridgeTable(t *testing.T) {
	k := channelTestCluster(t)
	names := schema.DefaultNames()
	const (
		ch1 = "00000000-0000-4000-8000-000000000001"
		ch2 = "00000000-0000-4000-8000-000000000002"
		ch3 = "00000000-0000-4000-8000-000000000003"
		ch4 = "00000000-0000-4000-8000-000000000004"
	)
	a, b, c := schema.NewUAID(), schema.NewUAID(), schema.NewUAID()
	// pushlog.channels: channels of a older than the registrations'
	// retention (ch1, ch2) and of b, which is not bridged.
	manual, err := kgo.NewClient(kgo.SeedBrokers(k.addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	for _, e := range []struct{ uaid, ch string }{{a, ch1}, {a, ch2}, {b, ch1}} {
		r, err := names.ChannelEntryRecord(e.uaid, &pb.ChannelEntry{ChannelId: e.ch, RegistrationsOffset: 1},
			schema.PartitionOf(e.uaid, channelTestPartitions))
		if err != nil {
			t.Fatal(err)
		}
		if err := manual.ProduceSync(channelTestCtx(t), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	k.produce(t,
		bridgeTestEvent(a, &pb.BridgeRegistered{RouterType: "fcm", AppId: "app", Token: "tok-1"}),
		bridgeTestEvent(a, &pb.ChannelRegistered{ChannelId: ch3}),
		bridgeTestEvent(a, &pb.ChannelUnregistered{ChannelId: ch2}),
		bridgeTestEvent(a, &pb.BridgeRegistered{RouterType: "fcm", AppId: "app", Token: "tok-2"}),
		bridgeTestEvent(b, &pb.ChannelRegistered{ChannelId: ch2}),
		bridgeTestEvent(c, &pb.BridgeRegistered{RouterType: "apns", AppId: "ios", Token: "tok-c"}),
		bridgeTestEvent(c, &pb.ChannelRegistered{ChannelId: ch1}),
		bridgeTestEvent(c, &pb.UserReset{Reason: "unregistered"}),
	)
	tbl, err := NewBridgeTable(BridgeTableConfig{ClientOpts: k.opts(), Logger: channelTestLogger(), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := channelTestCtx(t)
	if tbl.Ready() {
		t.Fatal("ready before Run")
	}
	go func() { _ = tbl.Run(ctx) }()
	if err := tbl.WaitReady(ctx); err != nil || !tbl.Ready() {
		t.Fatal(err)
	}
	got, ok := tbl.Lookup(a)
	if !ok || got.Token != "tok-2" || got.RouterType != "fcm" || got.AppID != "app" || !slices.Equal(got.Channels, []string{ch1, ch3}) {
		t.Fatalf("a: %+v %v", got, ok)
	}
	for _, u := range []string{b, c} {
		if r, ok := tbl.Lookup(u); ok {
			t.Fatalf("%s known: %+v", u, r)
		}
	}
	// followed after the bootstrap
	k.produce(t, bridgeTestEvent(a, &pb.ChannelRegistered{ChannelId: ch4}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := tbl.Lookup(a); slices.Contains(r.Channels, ch4) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("live registration not folded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// local writes are seen at once
	tbl.Apply(bridgeTestEvent(a, &pb.ChannelUnregistered{ChannelId: ch4}))
	if r, _ := tbl.Lookup(a); slices.Contains(r.Channels, ch4) {
		t.Fatal("local unregister not applied")
	}
}

func TestBridgeTableBound(t *testing.T) {
	tbl, err := NewBridgeTable(BridgeTableConfig{MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tbl.Apply(bridgeTestEvent(schema.NewUAID(), &pb.BridgeRegistered{RouterType: "fcm", AppId: "app", Token: "tok-1"}))
	}
	if tbl.Len() != 2 {
		t.Fatalf("%d entries, bound 2", tbl.Len())
	}
}
