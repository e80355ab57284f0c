package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSealingKeysNeverSilentlyReplaced(t *testing.T) {
	withEvents := func(t *testing.T, dir string) {
		p := filepath.Join(dir, "kafka", "partitions", "pushlog.messages-0")
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "0.dat"), []byte("batch"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		events  bool
		newKeys bool
		wantErr string
	}{
		{name: "fresh directory generates a key"},
		{name: "events without the key file refuse", events: true, wantErr: "--new-keys"},
		{name: "--new-keys starts over deliberately", events: true, newKeys: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.events {
				withEvents(t, dir)
			}
			c := serveConfig{DataDir: dir, NewKeys: tc.newKeys}
			keys, err := c.sealingKeys(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--crypto-keys") {
					t.Fatalf("err %v, want one naming %s and --crypto-keys", err, tc.wantErr)
				}
				if _, err := os.Stat(filepath.Join(dir, "crypto-keys")); !os.IsNotExist(err) {
					t.Fatalf("a key file was written: %v", err)
				}
				return
			}
			if err != nil || len(keys) != 1 {
				t.Fatalf("keys %d, err %v", len(keys), err)
			}
			again, err := c.sealingKeys(t.Context())
			if err != nil || string(again[0]) != string(keys[0]) {
				t.Fatalf("second start got another key (%v)", err)
			}
		})
	}
}

// TestSealingKeysExternalKafka: with --kafka-brokers, a missing key file is
// replaced only when the namespace's topics hold no records (or with
// --new-keys); --crypto-keys never looks at Kafka.
func TestSealingKeysExternalKafka(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, adm *kadm.Client, cl *kgo.Client)
		newKeys bool
		wantErr string
	}{
		{name: "no topics yet generates a key"},
		{name: "empty topics generate a key", setup: func(t *testing.T, adm *kadm.Client, _ *kgo.Client) {
			createTopics(t, adm, "pushlog.messages", "pushlog.channels", "pushlog.registrations")
		}},
		{name: "records in messages refuse", setup: func(t *testing.T, adm *kadm.Client, cl *kgo.Client) {
			createTopics(t, adm, "pushlog.messages", "pushlog.channels")
			produceOne(t, cl, "pushlog.messages")
		}, wantErr: "pushlog.messages"},
		{name: "records in channels refuse", setup: func(t *testing.T, adm *kadm.Client, cl *kgo.Client) {
			createTopics(t, adm, "pushlog.channels")
			produceOne(t, cl, "pushlog.channels")
		}, wantErr: "pushlog.channels"},
		{name: "another namespace's records do not count", setup: func(t *testing.T, adm *kadm.Client, cl *kgo.Client) {
			createTopics(t, adm, "other.messages")
			produceOne(t, cl, "other.messages")
		}},
		{name: "records deleted by retention do not count", setup: func(t *testing.T, adm *kadm.Client, cl *kgo.Client) {
			createTopics(t, adm, "pushlog.messages")
			produceOne(t, cl, "pushlog.messages")
			offs := kadm.Offsets{}
			offs.Add(kadm.Offset{Topic: "pushlog.messages", Partition: 0, At: 1})
			resp, err := adm.DeleteRecords(t.Context(), offs)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				t.Fatal(err)
			}
			if s, err := adm.ListStartOffsets(t.Context(), "pushlog.messages"); err != nil || s["pushlog.messages"][0].Offset != 1 {
				t.Fatalf("start offsets %v (%v)", s, err)
			}
		}},
		{name: "--new-keys starts over deliberately", setup: func(t *testing.T, adm *kadm.Client, cl *kgo.Client) {
			createTopics(t, adm, "pushlog.messages")
			produceOne(t, cl, "pushlog.messages")
		}, newKeys: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic("unused"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if tc.setup != nil {
				tc.setup(t, kadm.NewClient(cl), cl)
			}
			dir := t.TempDir()
			c := serveConfig{DataDir: dir, Namespace: "pushlog", KafkaBrokers: cluster.ListenAddrs(), NewKeys: tc.newKeys}
			keys, err := c.sealingKeys(t.Context())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--new-keys") || !strings.Contains(err.Error(), "--crypto-keys") {
					t.Fatalf("err %v, want one naming %s, --new-keys and --crypto-keys", err, tc.wantErr)
				}
				if _, err := os.Stat(filepath.Join(dir, "crypto-keys")); !os.IsNotExist(err) {
					t.Fatalf("a key file was written: %v", err)
				}
				return
			}
			if err != nil || len(keys) != 1 {
				t.Fatalf("keys %d, err %v", len(keys), err)
			}
		})
	}
	t.Run("--crypto-keys does not ask Kafka", func(t *testing.T) {
		c := serveConfig{DataDir: t.TempDir(), Namespace: "pushlog", KafkaBrokers: []string{"127.0.0.1:1"},
			CryptoKeys: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if keys, err := c.sealingKeys(ctx); err != nil || len(keys) != 1 {
			t.Fatalf("keys %d, err %v", len(keys), err)
		}
	})
}

func createTopics(t *testing.T, adm *kadm.Client, topics ...string) {
	t.Helper()
	resp, err := adm.CreateTopics(t.Context(), 2, 1, nil, topics...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func produceOne(t *testing.T, cl *kgo.Client, topic string) {
	t.Helper()
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Partition: 0, Value: []byte("sealed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}
