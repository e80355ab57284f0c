package ops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

func newAdmin(t *testing.T) (*kgo.Client, *kadm.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("x"), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, kadm.NewClient(cl)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestLag: lag is end − committed, or end − log start without a commit.
func TestLag(t *testing.T) {
	cl, adm := newAdmin(t)
	names, _ := schema.NamesFor("t")
	if _, err := CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour, Partitions: 2, Create: true}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := cl.ProduceSync(ctx(t), &kgo.Record{Topic: names.Messages, Partition: 0}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// kgo's default partitioner hashes keys; records without a key go
	// anywhere, so count the per-partition ends instead of assuming.
	ends, err := adm.ListEndOffsets(ctx(t), names.Messages)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 5 {
		t.Fatalf("%d records", total)
	}
	group := names.Group("connectors")
	off := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			off.AddOffset(names.Messages, o.Partition, o.Offset-1, -1) // one behind
		}
	})
	if _, err := adm.CommitOffsets(ctx(t), group, off); err != nil {
		t.Fatal(err)
	}
	lags, err := Lag(ctx(t), adm, Groups(names))
	if err != nil {
		t.Fatal(err)
	}
	var conn, chans GroupLag
	for _, g := range lags {
		switch g.Role {
		case "connectors":
			conn = g
		case "channels":
			chans = g
		}
	}
	if !conn.Exists || conn.Total != int64(len(off[names.Messages])) {
		t.Fatalf("connectors lag %+v, want one per committed partition", conn)
	}
	if chans.Exists || chans.Total != 0 || len(chans.Partitions) != 2 {
		t.Fatalf("channels %+v", chans)
	}

	reg := prometheus.NewPedanticRegistry()
	mon := NewLagMonitor(adm, Groups(names)[:2], time.Hour, nil)
	reg.MustRegister(mon)
	mon.Refresh(ctx(t))
	want := `
# HELP pushlog_projector_lag Records the projector has not committed yet, over its topics.
# TYPE pushlog_projector_lag gauge
pushlog_projector_lag{projector="channels"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_projector_lag"); err != nil {
		t.Fatal(err)
	}
	if n, _ := testutil.GatherAndCount(reg, "pushlog_consumer_lag"); n != 2*3+2 {
		t.Fatalf("%d consumer lag series, want 8", n)
	}
}

// TestCheckTopics: created topics verify OK; a missing one is reported
// without --create.
func TestCheckTopics(t *testing.T) {
	_, adm := newAdmin(t)
	names, _ := schema.NamesFor("t")
	reps, err := CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if OK(reps) || !strings.Contains(reps[0].Problems[0].Problem, "does not exist") {
		t.Fatalf("missing topics: %+v", reps)
	}
	if _, err := CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour, Partitions: 3, Create: true}); err != nil {
		t.Fatal(err)
	}
	reps, err = CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !OK(reps) {
		t.Fatalf("created topics: %+v", reps)
	}
	reps, err = CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: 100 * time.Hour, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if len(r.Problems) == 0 {
			t.Errorf("%s: no problem with 3 partitions of 4 wanted", r.Topic)
		}
	}
}

// TestConfigMismatches covers the policy and retention rules.
func TestConfigMismatches(t *testing.T) {
	names, _ := schema.NamesFor("t")
	c := TopicCheck{Names: names, MaxTTL: 48 * time.Hour, Bootstrap: "k:9092"}
	specs := map[string]schema.TopicSpec{}
	for _, s := range names.Specs(c.MaxTTL) {
		specs[s.Name] = s
	}
	day := int64(24 * 3600 * 1000)
	tests := []struct {
		topic   string
		cfg     topicConfig
		problem string
	}{
		{names.Messages, topicConfig{"delete", 3 * day, 1}, ""},
		{names.Messages, topicConfig{"delete", -1, 1}, ""},
		{names.Messages, topicConfig{"delete", 2 * day, 1}, "retention.ms=259200000"},
		{names.Acks, topicConfig{"compact", 3 * day, 1}, "cleanup.policy=delete"},
		{names.Registrations, topicConfig{"delete", day, 1}, ""},
		{names.Channels, topicConfig{"compact", 0, 1}, ""},
		{names.Channels, topicConfig{"compact,delete", 0, 1}, "cleanup.policy=compact"},
		{names.Presence, topicConfig{"delete", 0, 1}, "cleanup.policy=compact"},
	}
	for _, tt := range tests {
		ms := configMismatches(specs[tt.topic], tt.cfg, c)
		if tt.problem == "" {
			if len(ms) != 0 {
				t.Errorf("%s %+v: %+v", tt.topic, tt.cfg, ms)
			}
			continue
		}
		if len(ms) != 1 || !strings.Contains(ms[0].Fix, tt.problem) || !strings.Contains(ms[0].Fix, "k:9092") {
			t.Errorf("%s %+v: %+v, want a fix with %s", tt.topic, tt.cfg, ms, tt.problem)
		}
	}
}
