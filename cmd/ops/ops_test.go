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

// plainAdmin is an Admin that runs every request on adm as it is.
type plainAdmin struct{ adm *kadm.Client }

func (p plainAdmin) Do(_ context.Context, fn func(*kadm.Client) error) error { return fn(p.adm) }

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
	mon := NewLagMonitor(plainAdmin{adm}, Groups(names)[:2], time.Hour, nil)
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

// TestHeadLag: the head lag counts records not read yet (end − read
// position), apart from the committed lag; for the connectors group, whose
// commit is its oldest unsettled message, it is known only where its
// positions are.
func TestHeadLag(t *testing.T) {
	cl, adm := newAdmin(t)
	names, _ := schema.NamesFor("h")
	if _, err := CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour, Partitions: 1, Create: true}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		for _, topic := range []string{names.Messages, names.Registrations} {
			if err := cl.ProduceSync(ctx(t), &kgo.Record{Topic: topic, Partition: 0}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	off := kadm.Offsets{}
	off.AddOffset(names.Messages, 0, 2, -1) // oldest unsettled message at 2
	if _, err := adm.CommitOffsets(ctx(t), names.Group("connectors"), off); err != nil {
		t.Fatal(err)
	}
	chans := kadm.Offsets{}
	chans.AddOffset(names.Registrations, 0, 7, -1)
	if _, err := adm.CommitOffsets(ctx(t), names.Group("channels"), chans); err != nil {
		t.Fatal(err)
	}
	read9 := func() map[string]map[int32]int64 {
		return map[string]map[int32]int64{names.Messages: {0: 9}, names.Acks: {0: 0}, names.Registrations: {0: 10}}
	}
	tests := []struct {
		name              string
		role, topic       string
		positions         func() map[string]map[int32]int64
		wantLag, wantHead int64
		wantPos           int64
	}{
		{"connectors, positions unknown here", "connectors", names.Messages, nil, 8, -1, -1},
		{"connectors, read up to 9 with 2 unsettled since", "connectors", names.Messages, read9, 8, 1, 9},
		{"connectors, nothing on acks", "connectors", names.Acks, read9, 0, 0, 0},
		{"connectors, registrations read to the end, never committed", "connectors", names.Registrations, read9, 10, 0, 10},
		{"channels commit what they fold", "channels", names.Registrations, nil, 3, 3, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var groups []Group
			for _, g := range Groups(names) {
				if g.Role == tt.role {
					g.Positions = tt.positions
					groups = append(groups, g)
				}
			}
			lags, err := Lag(ctx(t), adm, groups)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range lags[0].Partitions {
				if p.Topic != tt.topic {
					continue
				}
				if p.Lag != tt.wantLag || p.HeadLag != tt.wantHead || p.Position != tt.wantPos {
					t.Fatalf("lag %d, head lag %d at %d; want %d, %d at %d", p.Lag, p.HeadLag, p.Position, tt.wantLag, tt.wantHead, tt.wantPos)
				}
				return
			}
			t.Fatalf("no partition of %s", tt.topic)
		})
	}

	reg := prometheus.NewPedanticRegistry()
	mon := NewLagMonitor(plainAdmin{adm}, Groups(names)[:2], time.Hour, nil)
	reg.MustRegister(mon)
	mon.Refresh(ctx(t))
	if n, _ := testutil.GatherAndCount(reg, "pushlog_consumer_head_lag", "pushlog_consumer_group_head_lag"); n != 2 {
		t.Fatalf("%d head lag series without the owner's positions, want 2 (channels only)", n)
	}
	mon.WatchPositions("connectors", read9)
	mon.Refresh(ctx(t))
	want := `
# HELP pushlog_consumer_group_head_lag Sum of pushlog_consumer_head_lag per group (connectors: over the partitions this process owns).
# TYPE pushlog_consumer_group_head_lag gauge
pushlog_consumer_group_head_lag{group="h-connectors"} 1
pushlog_consumer_group_head_lag{group="h-channels"} 3
# HELP pushlog_consumer_group_lag Sum of pushlog_consumer_lag per group.
# TYPE pushlog_consumer_group_lag gauge
pushlog_consumer_group_lag{group="h-connectors"} 18
pushlog_consumer_group_lag{group="h-channels"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_consumer_group_head_lag", "pushlog_consumer_group_lag"); err != nil {
		t.Fatal(err)
	}
}
