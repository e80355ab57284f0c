package schema

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestEnsureTopics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, _ := NamesFor("t1")
	specs := names.Specs(time.Hour)
	if err := EnsureTopics(ctx, adm, specs, 3, 1); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, adm, specs, 3, 1); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if err := EnsureTopics(ctx, adm, specs, 4, 1); !errors.Is(err, ErrPartitionMismatch) {
		t.Fatalf("wrong partition count accepted: %v", err)
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, names.Messages, names.Channels)
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range cfgs {
		for _, kv := range rc.Configs {
			if kv.Key != "cleanup.policy" {
				continue
			}
			want := "delete"
			if rc.Name == names.Channels {
				want = "compact"
			}
			if kv.Value == nil || *kv.Value != want {
				t.Errorf("%s cleanup.policy = %v, want %s", rc.Name, kv.Value, want)
			}
		}
	}
}

func TestMinInsyncReplicas(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		setting, replication int16
		want                 int16
	}{
		{"auto, broker default replication", MinInsyncAuto, -1, 0},
		{"auto, one replica", MinInsyncAuto, 1, 0},
		{"auto, two replicas", MinInsyncAuto, 2, 0},
		{"auto, three replicas", MinInsyncAuto, 3, 2},
		{"auto, five replicas", MinInsyncAuto, 5, 2},
		{"broker default", MinInsyncBroker, 3, 0},
		{"explicit", 3, 5, 3},
		{"explicit, broker default replication", 2, -1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MinInsyncReplicas(tc.setting, tc.replication); got != tc.want {
				t.Errorf("MinInsyncReplicas(%d, %d) = %d, want %d", tc.setting, tc.replication, got, tc.want)
			}
		})
	}
}

func TestSpecConfigsMinInsync(t *testing.T) {
	specs := WithMinInsync(Topics(time.Hour), 2)
	for _, s := range specs {
		v := s.Configs()["min.insync.replicas"]
		if v == nil || *v != "2" {
			t.Errorf("%s: min.insync.replicas = %v, want 2", s.Name, v)
		}
	}
	for _, s := range Topics(time.Hour) {
		if _, ok := s.Configs()["min.insync.replicas"]; ok {
			t.Errorf("%s: min.insync.replicas set without a setting", s.Name)
		}
	}
}

// TestMinInsyncFor: with the auto setting and the broker's default
// replication (-1), the decision follows the brokers' real default, capped
// at the broker count; explicit settings never ask the brokers.
func TestMinInsyncFor(t *testing.T) {
	tests := []struct {
		name        string
		brokers     int
		brokerCfg   map[string]string
		setting     int16
		replication int16
		want        int16
	}{
		{"auto, default 3 on 3 brokers", 3, nil, MinInsyncAuto, -1, 2},
		{"auto, default 3 on 1 broker", 1, nil, MinInsyncAuto, -1, 0},
		{"auto, default 1 on 3 brokers", 3, map[string]string{"default.replication.factor": "1"}, MinInsyncAuto, -1, 0},
		{"auto, default 5 on 5 brokers", 5, map[string]string{"default.replication.factor": "5"}, MinInsyncAuto, -1, 2},
		{"auto, replication 0 is the default too", 3, nil, MinInsyncAuto, 0, 2},
		{"auto, explicit replication 3", 1, nil, MinInsyncAuto, 3, 2},
		{"auto, explicit replication 2", 3, nil, MinInsyncAuto, 2, 0},
		{"broker setting", 3, nil, MinInsyncBroker, -1, 0},
		{"explicit setting", 3, nil, 3, -1, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []kfake.Opt{kfake.NumBrokers(tc.brokers)}
			if tc.brokerCfg != nil {
				opts = append(opts, kfake.BrokerConfigs(tc.brokerCfg))
			}
			c, err := kfake.NewCluster(opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			got, err := MinInsyncFor(t.Context(), kadm.NewClient(cl), tc.setting, tc.replication)
			if err != nil || got != tc.want {
				t.Fatalf("MinInsyncFor = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestEnsureTopicsBrokerDefaultReplication is the reviewer's case: topics
// created with --replication -1 on a cluster that replicates 3 times get
// min.insync.replicas 2 and really have 3 replicas.
func TestEnsureTopicsBrokerDefaultReplication(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names, _ := NamesFor("rf")
	n, err := MinInsyncFor(t.Context(), adm, MinInsyncAuto, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(t.Context(), adm, WithMinInsync(names.Specs(time.Hour), n), 2, -1); err != nil {
		t.Fatal(err)
	}
	details, err := adm.ListTopics(t.Context(), names.All()...)
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := adm.DescribeTopicConfigs(t.Context(), names.All()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range names.All() {
		if r := len(details[topic].Partitions[0].Replicas); r != 3 {
			t.Errorf("%s: %d replicas, want 3", topic, r)
		}
		rc, err := cfgs.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, kv := range rc.Configs {
			if kv.Key == "min.insync.replicas" && kv.Value != nil {
				got = *kv.Value
			}
		}
		if got != "2" {
			t.Errorf("%s: min.insync.replicas %q, want 2", topic, got)
		}
	}
}

func TestDefaultReplicationOf(t *testing.T) {
	s := func(v string) *string { return &v }
	tests := []struct {
		name    string
		configs []kadm.Config
		brokers int
		want    int16
		wantErr bool
	}{
		{"not reported: Kafka's default 1", nil, 3, 1, false},
		{"reported 3", []kadm.Config{{Key: "default.replication.factor", Value: s("3")}}, 3, 3, false},
		{"capped at the brokers", []kadm.Config{{Key: "default.replication.factor", Value: s("3")}}, 2, 2, false},
		{"garbage", []kadm.Config{{Key: "default.replication.factor", Value: s("x")}}, 3, 0, true},
		{"zero", []kadm.Config{{Key: "default.replication.factor", Value: s("0")}}, 3, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := defaultReplicationOf(tc.configs, tc.brokers)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
