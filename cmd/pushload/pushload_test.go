package main

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/schema"
)

// conns against a connection node on the in-memory link: every connection
// says hello, registers, is held and closed without a drop.
func TestConnsAgainstNode(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BlackholeProduce(),
		kfake.SeedTopics(1, schema.TopicRegistrations, schema.TopicPresence, schema.TopicAcks))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	key := make([]byte, schema.KeySize)
	_, _ = rand.Read(key)
	sealer, _ := schema.NewSealer([][]byte{key})
	srv, err := connector.New(connector.Config{
		PublicURL: "http://127.0.0.1:1", Sealer: sealer, Producer: producer, Link: newMemLink(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	cmd := connsCmd{URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/", N: 30, Hold: 100 * time.Millisecond,
		Concurrency: 5, Register: true, Timeout: 5 * time.Second}
	if err := cmd.Run(context.Background()); err != nil {
		t.Fatalf("conns: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Connections() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left open", srv.Connections())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kafka mode against the embedded broker: every record of the window is
// acknowledged and read back, and the quantiles are reported.
func TestKafkaMode(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cmd := &kafkaCmd{Brokers: strings.Join(cluster.ListenAddrs(), ","), Rate: 200, Duration: time.Second, Warmup: 200 * time.Millisecond, Size: 300}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cmd.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.get("records") != "200" || r.get("lost") != "0" || r.get("failed") != "0" || r.get("e2e_p99_ms") == "0.000" {
		t.Fatalf("report %s", r)
	}
	if _, err := (&kafkaCmd{Brokers: "x", Rate: 1, Duration: time.Second, Size: 4}).run(ctx); err == nil {
		t.Fatal("a 4-byte record was accepted")
	}
}
