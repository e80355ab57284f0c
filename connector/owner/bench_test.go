package owner

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	benchPending = 100_000
	benchPayload = 128 // bytes per message payload
	benchPerUAID = 10
)

// benchRecords builds n MessageAccepted records of partition p, benchPerUAID
// per UAID.
func benchRecords(tb testing.TB, p int32, n int) []*kgo.Record {
	clock := newFakeClock()
	l := newLog(tb, p, clock)
	payload := make([]byte, benchPayload)
	var uaid, ch string
	for i := range n {
		if i%benchPerUAID == 0 {
			uaid, ch = uaidIn(p), newChannel()
		}
		l.add(uaid, &pb.MessageAccepted{ChannelId: ch, Payload: payload, Encoding: "aes128gcm", TtlS: 86400, VapidSub: "mailto:ops@example.com"})
	}
	return l.recs[schema.TopicMessages]
}

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkFold measures the fold alone (decode + index), payloads kept
// in memory and payloads left in Kafka, per pending message.
func BenchmarkFold(b *testing.B) {
	recs := benchRecords(b, 0, benchPending)
	for _, keep := range []bool{true, false} {
		b.Run(fmt.Sprintf("payloads-in-memory=%v", keep), func(b *testing.B) {
			var perMsg float64
			var cpu time.Duration
			for b.Loop() {
				before := heapNow()
				c0 := cpuTime()
				ps, _ := newTestPart(b, 0, newFakeClock())
				if !keep {
					ps.env.limit = -1
					ps.env.reread = func(*partState, *uaidState, []int64) {}
				}
				ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{int64(len(recs)), 0, 0})
				ps.mu.Lock()
				for _, r := range recs {
					ps.foldGroup(tMessages, r)
				}
				ps.afterBatch()
				ps.mu.Unlock()
				cpu += cpuTime() - c0
				b.StopTimer()
				if n := len(ps.msgs.items()); n != len(recs) {
					b.Fatalf("pending %d", n)
				}
				perMsg = float64(heapNow()-before) / float64(len(recs))
				runtime.KeepAlive(ps)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(recs)), "ns/pending")
			b.ReportMetric(perMsg, "heapB/pending")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(len(recs)), "cpu-ns/pending")
		})
	}
}

// BenchmarkTakeover measures a whole takeover on kfake: a fresh owner
// joins, bootstraps and folds the pending messages of one partition from
// scratch until it is caught up, for 100,000 and 1,000,000 pending
// messages (benchPayload bytes each). With payloads=memory they all fit
// the default PayloadBudget; payloads=kafka keeps none in memory
// (PayloadBudget -1: they are re-read from Kafka at delivery), the index
// alone. Each case first produces its records into kfake:
//
//	go test ./connector/owner -run '^$' -bench Takeover -benchtime 2x
func BenchmarkTakeover(b *testing.B) {
	for _, tc := range []struct {
		pending int
		budget  int64
	}{{benchPending, 0}, {10 * benchPending, 0}, {10 * benchPending, -1}} {
		where := "memory"
		if tc.budget < 0 {
			where = "kafka"
		}
		b.Run(fmt.Sprintf("pending=%d/payloads=%s", tc.pending, where), func(b *testing.B) { benchTakeover(b, tc.pending, tc.budget) })
	}
}

func benchTakeover(b *testing.B, pending int, budget int64) {
	e := newTestEnv(b)
	recs := benchRecords(b, 0, pending)
	for _, r := range recs {
		e.prod.Produce(context.Background(), &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
	}
	if err := e.prod.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	recs = nil
	i := 0
	var perMsg float64
	var cpu time.Duration
	for b.Loop() {
		i++
		before := heapNow()
		c0 := cpuTime()
		cfg := e.config()
		cfg.Group = fmt.Sprintf("bench-%d", i) // from scratch: no commits
		cfg.Now = time.Now
		cfg.PayloadBudget = budget
		o, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		// Stats walks the partition under its lock: poll gently (the
		// error this adds is below 1% of the figure).
		poll := time.Duration(pending/20_000) * time.Millisecond
		for !takenOver(o, pending) {
			time.Sleep(poll)
		}
		cpu += cpuTime() - c0
		b.StopTimer()
		perMsg = float64(heapNow()-before) / float64(pending)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/takeover")
	b.ReportMetric(perMsg, "heapB/pending")
	// CPU of the whole process (owner and the in-process broker).
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/takeover")
}

// takenOver reports whether o owns every partition, partition 0 is caught
// up and holds pending messages.
func takenOver(o *Owner, pending int) bool {
	st := o.Stats()
	return len(st.Partitions) == testPartitions && st.Partitions[0].Ready && st.Pending == pending
}

// BenchmarkFoldSettled measures the fold of a replay whose messages were
// delivered and acknowledged (a Delivered and an Acked event each on
// pushlog.acks, as the live path writes them), per message:
//
//	go test ./connector/owner -run '^$' -bench FoldSettled
func BenchmarkFoldSettled(b *testing.B) {
	clock := newFakeClock()
	l := newLog(b, 0, clock)
	payload := make([]byte, benchPayload)
	var uaid, ch string
	for i := range benchPending {
		if i%benchPerUAID == 0 {
			uaid, ch = uaidIn(0), newChannel()
		}
		off := l.add(uaid, &pb.MessageAccepted{ChannelId: ch, Payload: payload, Encoding: "aes128gcm", TtlS: 86400, VapidSub: "mailto:ops@example.com"}).Offset
		ref := &pb.MessageRef{Partition: 0, Offset: off, ChannelId: ch, AcceptedMs: 1, VapidSub: "mailto:ops@example.com"}
		l.add(uaid, &pb.Delivered{Msg: ref, Node: "node-1", ConnId: "0123456789abcdef0123456789abcdef", Attempt: 1})
		l.add(uaid, &pb.Acked{Msg: ref, Code: 100})
	}
	msgs, acks := l.recs[schema.TopicMessages], l.recs[schema.TopicAcks]
	var cpu time.Duration
	for b.Loop() {
		c0 := cpuTime()
		ps, _ := newTestPart(b, 0, newFakeClock())
		ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{int64(len(msgs)), int64(len(acks)), 0})
		ps.mu.Lock()
		// Interleaved as a consumer returns them: a batch of each topic.
		for i := 0; i < len(msgs); i += 1000 {
			for _, r := range msgs[i:min(i+1000, len(msgs))] {
				ps.foldGroup(tMessages, r)
			}
			for _, r := range acks[2*i : min(2*i+2000, len(acks))] {
				ps.foldGroup(tAcks, r)
			}
		}
		ps.afterBatch()
		ps.mu.Unlock()
		cpu += cpuTime() - c0
		if n := len(ps.msgs.items()); n != 0 || !ps.ready {
			b.Fatalf("pending %d, ready %v", n, ps.ready)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(msgs)), "ns/message")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(len(msgs)), "cpu-ns/message")
}
