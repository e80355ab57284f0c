package owner

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// timedSession records when each notification reached it, by the push
// index in its payload's first bytes.
type timedSession struct {
	id  string
	got chan delivery
}

type delivery struct {
	i    int
	at   time.Time
	uaid string
	ref  *pb.MessageRef
}

func (s *timedSession) ConnID() string { return s.id }
func (s *timedSession) Deliver(n link.Notification) error {
	s.got <- delivery{i: int(binary.BigEndian.Uint32(n.Data)), at: time.Now(), uaid: n.UAID, ref: n.Ref}
	return nil
}

// BenchmarkPushToDeliver measures the owner's part of push → socket on
// kfake: pushes are produced on an open-loop schedule at a fixed rate to
// attached sessions, with the owner's default fetch, commit and sweep
// settings, and each is acknowledged as the connection node would (an
// Acked event), so the acks read-back and the commits run as in
// production. Latency is from the produce call to Deliver; the quantiles
// are reported per rate:
//
//	go test ./connector/owner -run '^$' -bench PushToDeliver -benchtime 1x
func BenchmarkPushToDeliver(b *testing.B) {
	for _, tc := range []struct {
		rate int
		dur  time.Duration
	}{{100, 5 * time.Second}, {5000, 2 * time.Second}} {
		b.Run(fmt.Sprintf("rate=%d", tc.rate), func(b *testing.B) {
			for range b.N {
				benchPushToDeliver(b, tc.rate, tc.dur)
			}
		})
	}
}

func benchPushToDeliver(b *testing.B, rate int, dur time.Duration) {
	b.StopTimer()
	e := newTestEnv(b)
	const agents = 100
	uaids := make([]string, agents)
	chans := make([]string, agents)
	for i := range uaids {
		uaids[i], chans[i] = uaidIn(int32(i%testPartitions)), newChannel()
		e.register(uaids[i], chans[i])
	}
	r := e.start(func(c *Config) {
		c.ClientOpts = []kgo.Opt{kgo.SeedBrokers(e.addrs...)}
		c.CommitInterval, c.SweepInterval, c.Now = DefaultCommitInterval, DefaultSweepInterval, time.Now
	})
	e.waitReady(r, testPartitions)
	got := make(chan delivery, rate*int(dur/time.Second)+16)
	for _, u := range uaids {
		if err := r.Attach(context.Background(), u, &timedSession{id: schema.NewUAID(), got: got}); err != nil {
			b.Fatal(err)
		}
	}
	n := int(float64(rate) * dur.Seconds())
	sent := make([]atomic.Int64, n) // Unix ns of each produce call
	ctx := context.Background()
	// As pushlog serve's producer: a push waits for its own append, no
	// batching delay.
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.addrs...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	b.StartTimer()
	start := time.Now()
	go func() {
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
			u := i % agents
			ev := schema.NewEvent(uaids[u], time.Now())
			payload := make([]byte, benchPayload)
			binary.BigEndian.PutUint32(payload, uint32(i))
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: chans[u], Payload: payload, Encoding: "aes128gcm", TtlS: 60}}
			rec, err := schema.Record(ev)
			if err != nil {
				panic(err)
			}
			sent[i].Store(time.Now().UnixNano())
			prod.Produce(ctx, rec, nil)
		}
	}()
	lat := make([]time.Duration, 0, n)
	timeout := time.After(dur + 30*time.Second)
	for i := 0; i < n; i++ {
		select {
		case d := <-got:
			lat = append(lat, d.at.Sub(time.Unix(0, sent[d.i].Load())))
			// Acknowledged as the connection node does.
			ack := schema.NewEvent(d.uaid, time.Now())
			ack.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: d.ref, Code: 100}}
			if arec, err := schema.Record(ack); err == nil {
				prod.Produce(ctx, arec, nil)
			}
		case <-timeout:
			b.Fatalf("%d of %d delivered", i, n)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(int(f*float64(len(lat))), len(lat)-1)].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(0, "ns/op")
}
