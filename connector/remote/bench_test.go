package remote

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/link"
)

// BenchmarkDeliveryLatency measures what a forwarded delivery adds to the
// push-to-socket path: the owner's Deliver on a session of another node
// (encode, link queue, TCP on loopback, decode, session lookup) until the
// connection node's session has the notification, against the same
// Deliver on a local session. One delivery in flight at a time.
//
//	go test ./connector/remote -run '^$' -bench DeliveryLatency -benchtime 20000x
func BenchmarkDeliveryLatency(b *testing.B) {
	for _, size := range []int{128, 4096} {
		b.Run(fmt.Sprintf("local/payload=%d", size), func(b *testing.B) {
			s := &recSession{id: "c1", got: make(chan link.Notification, 1)}
			benchLatency(b, s, s, size)
		})
		b.Run(fmt.Sprintf("forwarded/payload=%d", size), func(b *testing.B) {
			own := startNode(b, "owner", "", nil)
			cn := startNode(b, "conn", "", nil)
			client := cn.sessions.add(testUAID, "c1")
			if err := cn.Attach(ctx5(b), own.Addr(), testUAID, "c1"); err != nil {
				b.Fatal(err)
			}
			proxy := recv(b, own.owner.attachedCh, "attach")
			benchLatency(b, proxy, client, size)
		})
	}
}

func benchLatency(b *testing.B, s link.Session, client *recSession, size int) {
	n := testNote(testUAID, 1)
	n.Data = make([]byte, size)
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		n.Ref.Offset = int64(i)
		t0 := time.Now()
		if err := s.Deliver(n); err != nil {
			b.Fatal(err)
		}
		<-client.got
		samples = append(samples, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
}
