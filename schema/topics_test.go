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
