package embedded

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestTrimmerKeepsWhatMustBeKept(t *testing.T) {
	const (
		messages   = "pushlog.messages"
		acks       = "pushlog.acks"
		channels   = "pushlog.channels"
		connectors = "pushlog-connectors"
	)
	ctx := context.Background()
	now := time.Now()
	dir := filepath.Join(t.TempDir(), "kafka")
	c := startTest(t, dir, 8<<10)
	defer c.Close()
	cl := client(t, c)
	adm := kadm.NewClient(cl)
	createTopic(t, cl, messages, false)
	createTopic(t, cl, acks, false)
	createTopic(t, cl, channels, true)
	// 100 records: 0..59 two hours old, 60..99 new (the replay window
	// of an hour starts at 60).
	for i := range 100 {
		ts := now
		if i < 60 {
			ts = now.Add(-2 * time.Hour)
		}
		v := fmt.Sprintf("record-%06d-%0180d", i, i)
		for _, topic := range []string{messages, acks, channels} {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte{byte(i % 3)}, Value: []byte(v), Timestamp: ts}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	segsBefore := countSegments(t, dir, messages)

	commit := func(group, topic string, at int64) {
		t.Helper()
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: at, LeaderEpoch: -1})
		if r, err := adm.CommitOffsets(ctx, group, offs); err != nil || r.Error() != nil {
			t.Fatalf("commit %s %s@%d: %v %v", group, topic, at, err, r.Error())
		}
	}
	reg := prometheus.NewRegistry()
	tr, err := NewTrimmer(TrimConfig{
		Admin: adm, Dir: dir,
		Topics:   []string{messages, acks, channels},
		Required: map[string][]string{connectors: {messages, acks}},
		Retain:   time.Hour, Metrics: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := func(topic string) int64 {
		t.Helper()
		s, err := adm.ListStartOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := s.Lookup(topic, 0)
		return o.Offset
	}
	steps := []struct {
		name    string
		before  func()
		want    map[string]int64 // start offsets after the round
		trimmed int64            // of messages in the round
	}{
		// The connectors group has no commit: nothing may go (it would
		// read from the start).
		{name: "required group without commit", want: map[string]int64{messages: 0, acks: 0, channels: 0}},
		// An unacked pending message at 30, below the replay window:
		// the group's low watermark holds the trim point there.
		{name: "unsettled message below the window", before: func() { commit(connectors, messages, 30) },
			want: map[string]int64{messages: 30, acks: 0, channels: 0}, trimmed: 30},
		// Another group (analytics, an operator's consumer) behind it.
		{name: "another group behind", before: func() { commit(connectors, messages, 80); commit("other", messages, 40) },
			want: map[string]int64{messages: 40, acks: 0, channels: 0}, trimmed: 10},
		// Every group past the window: the window holds it.
		{name: "replay window", before: func() { commit("other", messages, 100); commit(connectors, acks, 100) },
			want: map[string]int64{messages: 60, acks: 60, channels: 0}, trimmed: 20},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		res, err := tr.TrimOnce(ctx)
		if err != nil {
			t.Fatalf("%s: trim: %v", st.name, err)
		}
		if res[messages] != st.trimmed {
			t.Errorf("%s: trimmed %d of messages, want %d", st.name, res[messages], st.trimmed)
		}
		for topic, want := range st.want {
			if got := start(topic); got != want {
				t.Errorf("%s: %s starts at %d, want %d", st.name, topic, got, want)
			}
		}
	}
	// The record at the trim point is still readable.
	rd := client(t, c, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{messages: {0: kgo.NewOffset().AtStart()}}))
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fs := rd.PollFetches(fctx)
	if recs := fs.Records(); len(recs) == 0 || recs[0].Offset != 60 || !strings.HasPrefix(string(recs[0].Value), "record-000060-") {
		t.Fatalf("first record after trimming: %v %v", recs, fs.Errors())
	}
	// The broker deleted the segments wholly below the trim point.
	if after := countSegments(t, dir, messages); after >= segsBefore {
		t.Errorf("segments %d before, %d after trimming", segsBefore, after)
	}
	// The last record always stays, even when everything is settled and
	// old: an empty partition would restart its offsets at zero.
	tr.cfg.Now = func() time.Time { return now.Add(3 * time.Hour) }
	commit(connectors, messages, 100)
	if _, err := tr.TrimOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := start(messages); got != 99 {
		t.Errorf("fully settled partition starts at %d, want 99 (keep the last record)", got)
	}
	if ends := readEnds(dir); ends[messages][0] != 100 {
		t.Errorf("recorded ends %v", ends)
	}
	if got := testutil.ToFloat64(collectorFor(tr, "trimmed_offsets_total", messages)); got != 99 {
		t.Errorf("trimmed offsets metric %v, want 99", got)
	}
	if n, err := testutil.GatherAndCount(reg, "pushlog_embedded_trim_pinned_partitions", "pushlog_embedded_disk_bytes"); err != nil || n < 2 {
		t.Errorf("metrics: %d series, %v", n, err)
	}
	// The trimmed log still verifies, and restarts from the snapshot.
	c.Close()
	if r, err := Verify(dir); err != nil || r.Err() != nil {
		t.Fatalf("verify trimmed log: %v %v", err, r.Err())
	}
}

// countSegments counts a one-partition topic's segment files.
func countSegments(t *testing.T, dir, topic string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "partitions", topic+"-0", "*.dat"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// collectorFor is a gauge reading one labelled series of the trimmer.
func collectorFor(tr *Trimmer, name, topic string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x_" + name}, func() float64 {
		if v, ok := tr.trimmed.Load(topic); ok {
			return float64(v.(interface{ Load() int64 }).Load())
		}
		return -1
	})
}
