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
