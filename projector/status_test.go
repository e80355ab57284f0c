package projector

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const statusUAID = "0123456789abcdef0123456789abcdef"

func statusRecord(t testing.TB, partition int32, offset int64, timeMs int64, body any) *kgo.Record {
	ev := &pb.Event{TimeMs: timeMs, Uaid: statusUAID, Id: make([]byte, 16)}
	ref := &pb.MessageRef{Partition: 0, Offset: 5}
	switch b := body.(type) {
	case *pb.MessageAccepted:
		ev.Body = &pb.Event_MessageAccepted{MessageAccepted: b}
	case *pb.MessageRef:
		ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: b, Code: 100}}
	case string:
		switch b {
		case "delivered":
			ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Attempt: 1}}
		case "dropped":
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_PENDING_LIMIT}}
		case "seen":
			ev.Body = &pb.Event_UaidSeen{UaidSeen: &pb.UaidSeen{}}
		}
	}
	r, err := schema.Record(ev)
	if err != nil {
		t.Fatal(err)
	}
	r.Partition, r.Offset = partition, offset
	return r
}

func TestStatusTable(t *testing.T) {
	now := time.UnixMilli(1_000_000_000)
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute, Keep: time.Hour, MaxEntries: 3, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ms := now.UnixMilli()
	acc := &pb.MessageAccepted{TtlS: 60}
	tbl.Apply(statusRecord(t, 0, 5, ms, acc))
	tbl.Apply(statusRecord(t, 3, 0, ms+1, "seen")) // not about a message
	tbl.Apply(statusRecord(t, 2, 9, ms+2, "delivered"))
	if st, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 5}); !ok || st.State != schema.StateDelivered || st.AcceptedMs != ms {
		t.Fatalf("delivered: %+v %v", st, ok)
	}
	tbl.Apply(statusRecord(t, 2, 10, ms+3, "dropped"))
	if st, _ := tbl.Status(schema.MessageKey{Partition: 0, Offset: 5}); st.State != schema.StateDropped || st.SettledMs != ms+3 {
		t.Fatalf("dropped: %+v", st)
	}
	if tbl.Len() != 1 {
		t.Fatalf("len %d", tbl.Len())
	}
	// Kept an hour after settling, then 404 (and swept).
	now = now.Add(time.Hour)
	if _, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 5}); !ok {
		t.Fatal("forgotten before its keep time")
	}
	now = now.Add(time.Second)
	if _, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 5}); ok {
		t.Fatal("kept past its keep time")
	}
	tbl.Sweep()
	if tbl.Len() != 0 {
		t.Fatalf("sweep left %d", tbl.Len())
	}
	// An unsettled message is kept its TTL plus Keep.
	ms = now.UnixMilli()
	tbl.Apply(statusRecord(t, 0, 6, ms, acc))
	now = now.Add(time.Hour + 59*time.Second)
	if _, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 6}); !ok {
		t.Fatal("unsettled forgotten early")
	}
	now = now.Add(2 * time.Second)
	if _, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 6}); ok {
		t.Fatal("unsettled kept past TTL+keep")
	}
	// The bound forgets the oldest first.
	for off := int64(10); off < 14; off++ {
		tbl.Apply(statusRecord(t, 1, off, now.UnixMilli(), acc))
	}
	if tbl.Len() != 3 {
		t.Fatalf("bound 3, len %d", tbl.Len())
	}
	if _, ok := tbl.Status(schema.MessageKey{Partition: 1, Offset: 13}); !ok {
		t.Fatal("newest evicted")
	}
	// (0,6), expired but not swept, went first, then (1,10).
	if _, ok := tbl.Status(schema.MessageKey{Partition: 1, Offset: 10}); ok {
		t.Fatal("oldest kept past the bound")
	}
	if _, ok := tbl.Status(schema.MessageKey{Partition: 1, Offset: 11}); !ok {
		t.Fatal("the bound evicted more than the oldest")
	}
	// An ack of a message whose acceptance is not folded is held, and
	// completed by the acceptance later.
	tbl.Apply(statusRecord(t, 2, 50, now.UnixMilli(), &pb.MessageRef{Partition: 1, Offset: 99}))
	tbl.Apply(statusRecord(t, 1, 99, now.UnixMilli()-5, acc))
	if st, ok := tbl.Status(schema.MessageKey{Partition: 1, Offset: 99}); !ok || st.State != schema.StateAcked || st.AcceptedMs == 0 {
		t.Fatalf("ack then accept: %+v %v", st, ok)
	}
}

// TestStatusTableMemory measures the heap a message costs in the table
// (DefaultStatusEntries' doc).
func TestStatusTableMemory(t *testing.T) {
	const n = 200_000
	now := time.Now()
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Hour, MaxEntries: n, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	acc := statusRecord(t, 0, 0, now.UnixMilli(), &pb.MessageAccepted{TtlS: 60, VapidKeyHash: make([]byte, 32), KeyBound: true})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range int64(n) {
		acc.Partition, acc.Offset = int32(i%12), i
		tbl.Apply(acc)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes a message (%d messages)", per, tbl.Len())
	if per > 250 {
		t.Fatalf("%.0f bytes a message; DefaultStatusEntries' doc says about 170", per)
	}
	runtime.KeepAlive(tbl)
}

// TestStatusTableReady: the table is ready once it folded every partition
// up to the end offsets Run found.
func TestStatusTableReady(t *testing.T) {
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	tbl.targets = map[string]map[int32]int64{"m": {0: 3, 1: 1}, "a": {}}
	if tbl.Ready() {
		t.Fatal("ready before folding")
	}
	for _, r := range []*kgo.Record{{Topic: "m", Partition: 0, Offset: 1}, {Topic: "m", Partition: 1, Offset: 0}, {Topic: "a", Partition: 0, Offset: 9}} {
		tbl.Apply(r)
	}
	if tbl.Ready() {
		t.Fatal("ready with partition 0 at 2 of 3")
	}
	tbl.Apply(&kgo.Record{Topic: "m", Partition: 0, Offset: 2})
	if !tbl.Ready() {
		t.Fatal("not ready at the end offsets")
	}
}

// TestStatusTableFollowers: followers see every folded event with the
// status around it (what push receipts decide from), and Behind tells a
// message the fold has not read yet from one it read.
func TestStatusTableFollowers(t *testing.T) {
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var seen []schema.StatusChange
	tbl.Follow(func(c schema.StatusChange) { seen = append(seen, c) })
	key := schema.MessageKey{Partition: 0, Offset: 5}
	if !tbl.Behind(t.Context(), key) {
		t.Fatal("a message before any read is not behind")
	}
	ack := statusRecord(t, 1, 0, 30, &pb.MessageRef{Partition: 0, Offset: 5})
	ack.Topic = tbl.cfg.Names.Acks
	acc := statusRecord(t, 0, 5, 10, &pb.MessageAccepted{TtlS: 60})
	acc.Topic = tbl.cfg.Names.Messages
	for _, r := range []*kgo.Record{ack, acc, statusRecord(t, 3, 0, 1, "seen")} {
		tbl.Apply(r)
	}
	for _, tc := range []struct {
		name          string
		got           schema.StatusChange
		before, after schema.MessageState
		beforeAcc     int64
	}{
		{"ack first", seen[0], schema.StatePending, schema.StateAcked, 0},
		{"then its message", seen[1], schema.StateAcked, schema.StateAcked, 0},
	} {
		if tc.got.Key != key || tc.got.Before.State != tc.before || tc.got.After.State != tc.after || tc.got.Before.AcceptedMs != tc.beforeAcc {
			t.Errorf("%s: %+v", tc.name, tc.got)
		}
	}
	if len(seen) != 2 || seen[1].After.AcceptedMs != 10 || seen[1].After.AckCode != 100 {
		t.Fatalf("followers saw %d changes, last %+v", len(seen), seen[len(seen)-1])
	}
	if tbl.Behind(t.Context(), key) || !tbl.Behind(t.Context(), schema.MessageKey{Partition: 0, Offset: 6}) || !tbl.Behind(t.Context(), schema.MessageKey{Partition: 1, Offset: 0}) {
		t.Fatal("Behind: read through offset 5 of partition 0 only")
	}
}

// TestStatusTableBehindPastEnd: a message the fold has not read is behind
// (503) only while the messages topic's end, listed after the question,
// is past it; an id at or past the end (never written, or of an earlier
// topic) is not (404, never 503 for good). Many questions at once share
// listings, each started after its questions.
func TestStatusTableBehindPastEnd(t *testing.T) {
	k := channelTestCluster(t)
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(k.addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for range 3 {
		r := &kgo.Record{Topic: schema.TopicMessages, Partition: 0, Value: []byte("x")}
		if err := prod.ProduceSync(t.Context(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if !tbl.Behind(t.Context(), schema.MessageKey{Partition: 0, Offset: 99}) {
		t.Fatal("not running: an unread id is behind (503), not unknown")
	}
	tbl.setAdmin(t.Context(), k.adm)
	tbl.Apply(&kgo.Record{Topic: tbl.cfg.Names.Messages, Partition: 0, Offset: 0})
	for _, tc := range []struct {
		key  schema.MessageKey
		want bool
	}{
		{schema.MessageKey{Partition: 0, Offset: 0}, false}, // read
		{schema.MessageKey{Partition: 0, Offset: 1}, true},  // in the topic, not read
		{schema.MessageKey{Partition: 0, Offset: 2}, true},
		{schema.MessageKey{Partition: 0, Offset: 3}, false}, // the end: never written
		{schema.MessageKey{Partition: 0, Offset: 1 << 62}, false},
		{schema.MessageKey{Partition: 1, Offset: 0}, false},   // empty partition
		{schema.MessageKey{Partition: 9999, Offset: 0}, true}, // not listed: cannot tell
		{schema.MessageKey{Partition: -1, Offset: 0}, true},   // not listed: cannot tell
		{schema.MessageKey{Partition: 1, Offset: -5}, false},  // before the start of the topic
	} {
		if got := tbl.Behind(t.Context(), tc.key); got != tc.want {
			t.Errorf("%+v: behind %v, want %v", tc.key, got, tc.want)
		}
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			key := schema.MessageKey{Partition: 0, Offset: int64(1 + i%4)}
			if got, want := tbl.Behind(t.Context(), key), key.Offset < 3; got != want {
				t.Errorf("concurrent %+v: behind %v, want %v", key, got, want)
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if !tbl.Behind(ctx, schema.MessageKey{Partition: 0, Offset: 5}) {
		t.Error("a question whose context ended is behind (503)")
	}
	tbl.clearAdmin()
	if !tbl.Behind(t.Context(), schema.MessageKey{Partition: 0, Offset: 5}) {
		t.Error("after Run: an unread id is behind (503)")
	}
}

// TestStatusTableEarlyOutcomeSurvivesBound: an outcome folded before its
// message (the acks topic read ahead of the messages topic, e.g. while
// catching up) survives the table's bound until its MessageAccepted
// arrives, so the followers (push receipts) see the message settled and
// GET /m/{id} answers its outcome; past the early bound the oldest held
// outcome is forgotten, counted and logged. Outcomes of messages the fold
// started reading after are not held (their acceptance never comes).
func TestStatusTableEarlyOutcomeSurvivesBound(t *testing.T) {
	now := time.UnixMilli(1_000_000_000)
	ms := now.UnixMilli()
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute, Keep: time.Hour, MaxEntries: 3, MaxEarly: 2,
		Now: func() time.Time { return now }, Metrics: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var settled []schema.MessageKey
	tbl.Follow(func(c schema.StatusChange) {
		if c.Accepted != nil && c.After.State.Settled() {
			settled = append(settled, c.Key) // what receipts emit at once
		}
	})
	messages := func(partition int32, offset int64) *kgo.Record {
		r := statusRecord(t, partition, offset, ms, &pb.MessageAccepted{TtlS: 60})
		r.Topic = tbl.cfg.Names.Messages
		return r
	}
	ack := func(offset int64) *kgo.Record {
		r := statusRecord(t, 9, offset, ms+1, &pb.MessageRef{Partition: 0, Offset: offset})
		r.Topic = tbl.cfg.Names.Acks
		return r
	}
	// Partition 0's fold starts at offset 100: an ack of offset 50 waits
	// for nothing.
	tbl.folded[0] = 100
	tbl.Apply(ack(50))
	tbl.Apply(ack(100))
	// 3 other messages (partition 1) fill the bound: the acks are pushed out.
	for off := range int64(3) {
		tbl.Apply(messages(1, off))
	}
	if _, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 50}); ok {
		t.Error("the ack of a message before the fold's start is held past the bound")
	}
	tbl.Apply(messages(0, 100))
	if st, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 100}); !ok || st.State != schema.StateAcked || st.AcceptedMs != ms {
		t.Fatalf("ack, bound, then its message: %+v %v", st, ok)
	}
	if len(settled) != 1 || settled[0] != (schema.MessageKey{Partition: 0, Offset: 100}) {
		t.Fatalf("followers saw the message settled: %v, want [{0 100}]", settled)
	}
	// Past the early bound (2) the oldest held outcome goes, loudly.
	for off := int64(101); off < 104; off++ {
		tbl.Apply(ack(off))
	}
	for off := int64(3); off < 6; off++ {
		tbl.Apply(messages(1, off))
	}
	if _, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: 101}); ok {
		t.Error("the oldest held outcome kept past the early bound")
	}
	for _, off := range []int64{102, 103} {
		if st, ok := tbl.Status(schema.MessageKey{Partition: 0, Offset: off}); !ok || st.State != schema.StateAcked {
			t.Errorf("held outcome %d: %+v %v", off, st, ok)
		}
	}
	if got := testutil.ToFloat64(tbl.evictions.WithLabelValues("early_bound")); got != 1 {
		t.Errorf("early_bound evictions %v, want 1", got)
	}
	if got := testutil.ToFloat64(tbl.evictions.WithLabelValues("bound")); got != 5 {
		t.Errorf("bound evictions %v, want 5 (the ack before the start, 4 messages)", got)
	}
	if got := testutil.ToFloat64(tbl.earlyGauge); got != 2 {
		t.Errorf("early entries %v, want 2", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "forgot outcomes of messages not folded yet") {
		t.Errorf("no warning for the dropped outcome: %q", logs.String())
	}
	// Held outcomes expire like any status.
	now = now.Add(time.Hour + time.Minute)
	tbl.Sweep()
	if got := testutil.ToFloat64(tbl.earlyGauge); got != 0 {
		t.Errorf("early entries after their keep time: %v", got)
	}
}

// earlyTestTable is a status table with small bounds, and helpers that
// fold a MessageAccepted at (partition, offset) of the messages topic and
// an Acked of that message from the acks topic.
func earlyTestTable(t *testing.T, maxEntries, maxEarly int) (tbl *StatusTable, message, ack func(partition int32, offset int64)) {
	t.Helper()
	now := time.UnixMilli(1_000_000_000)
	ms := now.UnixMilli()
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute, Keep: time.Hour, MaxEntries: maxEntries, MaxEarly: maxEarly,
		Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var ackOffset int64
	message = func(partition int32, offset int64) {
		r := statusRecord(t, partition, offset, ms, &pb.MessageAccepted{TtlS: 60})
		r.Topic = tbl.cfg.Names.Messages
		tbl.Apply(r)
	}
	ack = func(partition int32, offset int64) {
		r := statusRecord(t, 9, ackOffset, ms+1, &pb.MessageRef{Partition: partition, Offset: offset})
		r.Topic = tbl.cfg.Names.Acks
		ackOffset++
		tbl.Apply(r)
	}
	return tbl, message, ack
}

// TestStatusTableEarlyReheldEvictionOrder: an outcome released from the
// early set (another outcome of its message came) and held again counts
// from its second hold: at the early bound the oldest hold goes, not the
// re-held one through its stale first slot.
func TestStatusTableEarlyReheldEvictionOrder(t *testing.T) {
	tbl, _, ack := earlyTestTable(t, 1, 3)
	key := func(off int64) schema.MessageKey { return schema.MessageKey{Partition: 0, Offset: off} }
	ack(0, 1)
	ack(0, 2) // 1 held
	ack(0, 3) // 2 held
	ack(0, 1) // 1 released into the table, 3 held
	ack(0, 4) // 1 held again: holds 2, 3, 1
	if got := len(tbl.early); got != 3 {
		t.Fatalf("%d held, want 3", got)
	}
	ack(0, 5) // 4 held past the bound: the oldest hold (2) goes
	if _, ok := tbl.Status(key(2)); ok {
		t.Error("the oldest hold (2) kept past the early bound")
	}
	for _, off := range []int64{1, 3, 4, 5} {
		if st, ok := tbl.Status(key(off)); !ok || st.State != schema.StateAcked {
			t.Errorf("outcome %d: %+v %v (the re-held one evicted through its stale slot?)", off, st, ok)
		}
	}
	if got := testutil.ToFloat64(tbl.evictions.WithLabelValues("early_bound")); got != 1 {
		t.Errorf("early_bound evictions %v, want 1", got)
	}
}

// TestStatusTableEarlyOrderBounded: behind one long-held outcome, keys
// held and released again and again do not grow earlyOrder (Sweep never
// moves its head past the held one); once nothing is held it starts over.
func TestStatusTableEarlyOrderBounded(t *testing.T) {
	tbl, message, ack := earlyTestTable(t, 1, 100)
	ack(2, 0)
	ack(0, 1000) // the ack of 2/0 held, for good
	const churn = 5000
	for i := range int64(churn) {
		off := 1000 + i
		if i > 0 {
			ack(0, off) // the previous message leaves the table (settled, accepted)
		}
		message(1, i)   // this ack held
		message(0, off) // and released by its message
		if i%100 == 0 {
			tbl.Sweep()
		}
		// At most 2 held at once: compaction keeps 2*2+1024 slots, plus the one appended.
		if n, bound := len(tbl.earlyOrder), 2*2+1025; n > bound {
			t.Fatalf("after %d holds earlyOrder has %d slots for %d held (bound %d)", i+1, n, len(tbl.early), bound)
		}
	}
	if st, ok := tbl.Status(schema.MessageKey{Partition: 2, Offset: 0}); !ok || st.State != schema.StateAcked {
		t.Fatalf("the long-held outcome: %+v %v", st, ok)
	}
	if got := testutil.ToFloat64(tbl.evictions.WithLabelValues("early_bound")); got != 0 {
		t.Errorf("early_bound evictions %v, want 0", got)
	}
	message(2, 0)
	if len(tbl.early) != 0 || len(tbl.earlyOrder) != 0 || tbl.earlyHead != 0 {
		t.Errorf("nothing held: earlyOrder %d slots, head %d, %d held", len(tbl.earlyOrder), tbl.earlyHead, len(tbl.early))
	}
}
