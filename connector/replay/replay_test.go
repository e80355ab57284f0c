package replay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

func TestParseOffsets(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[int32]int64
		err  bool
	}{
		{in: "0:5", want: map[int32]int64{0: 5}},
		{in: "0:5, 3:0", want: map[int32]int64{0: 5, 3: 0}},
		{in: "", err: true},
		{in: "0", err: true},
		{in: "0:-1", err: true},
		{in: "-1:3", err: true},
		{in: "0:1,0:2", err: true},
		{in: "a:1", err: true},
		{in: "0:1x", err: true},
	} {
		got, err := ParseOffsets(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
		}
		for p, o := range tc.want {
			if got[p] != o {
				t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

func FuzzParseOffsets(f *testing.F) {
	for _, s := range []string{"0:5", "0:5,3:0", "", "0:-1", "1:2:3", ",,", "99999999999:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseOffsets(s)
		if err != nil {
			return
		}
		for p, o := range got {
			if p < 0 || o < 0 {
				t.Fatalf("%q: negative %d:%d accepted", s, p, o)
			}
		}
	})
}

// TestPlanAndApply: on kfake, a Since replay rewinds messages and acks of
// an empty group, never forward, and is refused while a member is live.
func TestPlanAndApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names, _ := schema.NamesFor("rt")
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, names.Messages, names.Acks))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(names.Messages), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	old := time.Now().Add(-time.Hour)
	since := time.Now().Add(-30 * time.Minute)
	for i := range 6 {
		ts := old
		if i >= 3 {
			ts = time.Now()
		}
		for _, topic := range []string{names.Messages, names.Acks} {
			r := &kgo.Record{Topic: topic, Partition: 0, Timestamp: ts, Value: []byte("x")}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	adm := kadm.NewClient(cl)
	group := names.Group("connectors")
	// The owners had committed messages 5, acks 6 on partition 0, and 0/0 on partition 1.
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: names.Messages, Partition: 0, At: 5, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: names.Acks, Partition: 0, At: 6, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(ctx, group, offs); err != nil {
		t.Fatal(err)
	}
	req := Request{Names: names, Since: since, ClockSkew: time.Minute}
	plan, err := MakePlan(ctx, adm, nil, req)
	if err != nil {
		t.Fatal(err)
	}
	var p0 PartitionPlan
	for _, pp := range plan.Parts {
		if pp.Partition == 0 {
			p0 = pp
		}
	}
	if p0.New != 3 || p0.AcksNew != 3 || p0.Rewound() != 2 || p0.Reread() != 3 {
		t.Fatalf("partition 0 plan %+v", p0)
	}
	var out strings.Builder
	plan.Print(&out)
	if !strings.Contains(out.String(), "5 → 3") {
		t.Fatalf("print:\n%s", out.String())
	}
	if err := Apply(ctx, adm, plan); err != nil {
		t.Fatal(err)
	}
	got, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := got.Lookup(names.Messages, 0); o.At != 3 {
		t.Fatalf("messages committed %d, want 3", o.At)
	}
	// A later start never moves offsets forward.
	plan, err = MakePlan(ctx, adm, nil, Request{Names: names, Since: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, pp := range plan.Parts {
		if pp.Moves() {
			t.Fatalf("forward move planned: %+v", pp)
		}
	}

	// A live member: refused.
	member, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(names.Messages))
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	for {
		member.PollFetches(ctx) // joins
		if _, err := GroupState(ctx, adm, group); errors.Is(err, ErrGroupLive) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("member never joined")
		}
	}
	if _, err := MakePlan(ctx, adm, nil, req); !errors.Is(err, ErrGroupLive) {
		t.Fatalf("plan under a live group: %v", err)
	}
	if err := Apply(ctx, adm, plan); !errors.Is(err, ErrGroupLive) {
		t.Fatalf("apply under a live group: %v", err)
	}
}
