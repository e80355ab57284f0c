package node

import (
	"bytes"
	"context"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/broadcasts"
)

// TestLiveBroadcastsSeed: --broadcasts is a seed. Ids the topic lacks are
// written to it (source seed); an id the topic holds keeps the topic's
// version (a change made since wins over a restart with old flags); later
// changes are folded.
func TestLiveBroadcastsSeed(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(50 * time.Millisecond)}
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	names, _ := schema.NamesFor("seed")
	ctx := t.Context()
	if err := schema.EnsureTopics(ctx, kadm.NewClient(prod), names.Specs(time.Hour), 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := broadcasts.Write(ctx, prod, names, map[string]string{"a": "v3"}, "cli"); err != nil {
		t.Fatal(err)
	}
	sealer, err := schema.NewSealer([][]byte{bytes.Repeat([]byte{1}, schema.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n, err := New(Config{
		Server: connector.Config{Names: names, NodeID: "n1", PublicURL: "http://127.0.0.1:1", Sealer: sealer, Producer: prod,
			Broadcasts: map[string]string{"a": "v1", "b": "v1"}},
		Link:       fakeLink{},
		Listener:   ln,
		Broadcasts: &BroadcastsConfig{ClientOpts: opts},
		Logger:     quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.parts.broadcasts(rctx) }()
	defer func() { cancel(); <-done }()
	n.bcast.waitReady(ctx)
	want := map[string]string{"a": "v3", "b": "v1"}
	waitTable(t, names, opts, want)
	// A change by another source is folded into this node's table.
	if err := broadcasts.Write(ctx, prod, names, map[string]string{"b": "v2"}, "admin"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.bcast.table.Snapshot()["b"] != "v2" {
		if time.Now().After(deadline) {
			t.Fatalf("table %v", n.bcast.table.Snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTable waits until the topic holds want.
func waitTable(t *testing.T, names schema.Names, opts []kgo.Opt, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := broadcasts.Load(t.Context(), opts, names)
		if err == nil && maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %v (%v), want %v", got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLiveBroadcastsBadSeed: New refuses a seed outside the format.
func TestLiveBroadcastsBadSeed(t *testing.T) {
	sealer, err := schema.NewSealer([][]byte{bytes.Repeat([]byte{1}, schema.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = New(Config{
		Server:     connector.Config{NodeID: "n1", PublicURL: "http://127.0.0.1:1", Sealer: sealer, Producer: prod, Broadcasts: map[string]string{"a b": "1"}},
		Link:       fakeLink{},
		Listener:   ln,
		Broadcasts: &BroadcastsConfig{ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}},
		Logger:     quiet(),
	})
	if err == nil {
		t.Fatal("a seed outside the format was accepted")
	}
}
