package embedded

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// startLocal starts a broker with a Local attached.
func startLocal(t testing.TB) (*kfake.Cluster, *Local) {
	t.Helper()
	l := NewLocal(nil)
	c, err := Start(Config{Dir: t.TempDir(), Local: l})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(c.Close)
	adm := kadm.NewClient(localClient(t, c, nil))
	if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, "t"); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	return c, l
}

func localClient(t testing.TB, c *kfake.Cluster, dial func(context.Context, string, string) (net.Conn, error), opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0), kgo.MetadataMinAge(50 * time.Millisecond), kgo.DefaultProduceTopic("t")}
	if dial != nil {
		base = append(base, kgo.Dialer(dial))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestLocalPipesAndTCP: records produced through the pipe are read over
// TCP and the other way round, so both ways in reach the same broker.
func TestLocalPipesAndTCP(t *testing.T) {
	c, l := startLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	piped := localClient(t, c, l.Dial)
	tcp := localClient(t, c, nil)
	if err := piped.ProduceSync(ctx, &kgo.Record{Value: []byte("piped")}).FirstErr(); err != nil {
		t.Fatalf("produce through the pipe: %v", err)
	}
	if err := tcp.ProduceSync(ctx, &kgo.Record{Value: []byte("tcp")}).FirstErr(); err != nil {
		t.Fatalf("produce over tcp: %v", err)
	}
	for _, tc := range transports(l) {
		t.Run(tc.name, func(t *testing.T) {
			cons := localClient(t, c, tc.dial, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			var got []string
			for len(got) < 2 {
				fs := cons.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					t.Fatalf("poll: %v", err)
				}
				fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
			}
			if got[0] != "piped" || got[1] != "tcp" {
				t.Fatalf("read %q, want [piped tcp]", got)
			}
		})
	}
}

// TestLocalDialOtherAddress: an address that is not the broker's is
// dialled over TCP (and fails like any dial would).
func TestLocalDialOtherAddress(t *testing.T) {
	_, l := startLocal(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := l.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial other address: %v", err)
	}
	defer conn.Close()
	if _, ok := conn.(*net.TCPConn); !ok {
		t.Fatalf("dial of another address gave %T, want a TCP connection", conn)
	}
}

// TestLocalDialAfterClose: after the broker closed, a dial fails at once
// instead of waiting for an Accept that never comes.
func TestLocalDialAfterClose(t *testing.T) {
	c, l := startLocal(t)
	addr := c.ListenAddrs()[0]
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := l.Dial(ctx, "tcp", addr)
	if !errors.Is(err, errLocalClosed) {
		t.Fatalf("dial after close: %v, want errLocalClosed", err)
	}
}

// BenchmarkProduceRoundTrip is one acks=all produce request and response
// through the pipe and over loopback TCP, with the process's CPU time
// per round trip (user+system, all goroutines: client and broker).
func BenchmarkProduceRoundTrip(b *testing.B) {
	c, l := startLocal(b)
	for _, bc := range transports(l) {
		b.Run(bc.name, func(b *testing.B) {
			cl := localClient(b, c, bc.dial, kgo.RequiredAcks(kgo.AllISRAcks()))
			ctx := context.Background()
			rec := &kgo.Record{Value: make([]byte, 256)}
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				b.Fatal(err)
			}
			before := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := cl.ProduceSync(ctx, &kgo.Record{Value: rec.Value}).FirstErr(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkProduceConcurrent is 16 goroutines producing acks=all while a
// consumer reads the topic: the process's CPU time per record, pipe and
// loopback TCP.
func BenchmarkProduceConcurrent(b *testing.B) {
	c, l := startLocal(b)
	for _, bc := range transports(l) {
		b.Run(bc.name, func(b *testing.B) {
			cl := localClient(b, c, bc.dial, kgo.RequiredAcks(kgo.AllISRAcks()))
			cons := localClient(b, c, bc.dial, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			val := make([]byte, 256)
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr(); err != nil {
				b.Fatal(err)
			}
			go func() {
				for ctx.Err() == nil {
					cons.PollFetches(ctx)
				}
			}()
			b.SetParallelism(8) // × GOMAXPROCS goroutines
			before := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := cl.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// transport is one way a client reaches the broker: nil dial is TCP.
type transport struct {
	name string
	dial func(context.Context, string, string) (net.Conn, error)
}

func transports(l *Local) []transport {
	return []transport{{"tcp", nil}, {"pipe", l.Dial}}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// flakyListener fails its first Accepts as a process out of descriptors.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// TestLocalAcceptErrorRetried: an Accept error other than a closed
// listener is not passed to the broker (whose accept loop would stop and
// close the listener, cutting the process's own clients off too).
func TestLocalAcceptErrorRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyListener{Listener: ln}
	flaky.fails.Store(3)
	m := &mergedListener{Listener: flaky, local: NewLocal(nil), tcp: make(chan accepted)}
	defer m.Close()
	go m.acceptTCP()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := m.Accept()
	if err != nil {
		t.Fatalf("Accept passed on an error it should have retried: %v", err)
	}
	conn.Close()
}
