package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// BenchmarkIngestEmbedded measures accepted pushes per second end to end:
// keep-alive HTTP clients -> Run on 127.0.0.1 -> VAPID (one reused JWT, so
// the cache answers) and header checks -> acks=all idempotent produce to an
// in-process kfake broker -> 201. Each push is a 4096-byte aes128gcm body to
// a key-bound (v2) endpoint, as npm web-push sends it.
//
//	go test ./ingest -run x -bench Ingest -benchtime 5s
func BenchmarkIngestEmbedded(b *testing.B) {
	cluster := newCluster(b)
	// The producer the embedded server should use: acks=all idempotent,
	// no linger (requests waiting on ProduceSync already batch while one
	// produce is in flight) and no compression (push bodies are encrypted,
	// so incompressible).
	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.DisableClientMetrics())
	if err != nil {
		b.Fatal(err)
	}
	defer producer.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	sealer := newSealer(b)
	// One VAPID key sends everything: its quota is raised out of reach
	// (the buckets are still kept, so their cost is measured).
	srv, err := New(Config{PublicURL: base, Sealer: sealer, Producer: producer, Partitions: testPartitions, Logger: quietLogger(),
		Quota: QuotaConfig{VAPIDRate: 1e9, VAPIDBurst: 1e9}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	vk := newTestVAPID(b)
	// Many subscriptions, so pushes spread over every partition.
	urls := make([]string, 1024)
	for i := range urls {
		tok, err := sealer.SealEndpoint(schema.Endpoint{UAID: schema.NewUAID(), ChannelID: testChannel, KeyHash: vk.keyHash()})
		if err != nil {
			b.Fatal(err)
		}
		urls[i] = base + "/wpush/v2/" + tok
	}
	var next atomic.Uint64
	jwtTok := vk.jwt(b, jwt.MapClaims{"aud": base, "exp": time.Now().Add(12 * time.Hour).Unix(), "sub": "mailto:bench@example.com"})
	hdr := http.Header{
		"Ttl":              {"2419200"},
		"Urgency":          {"normal"},
		"Content-Encoding": {"aes128gcm"},
		"Authorization":    {"vapid t=" + jwtTok + ", k=" + vk.k},
	}
	runPushLoad(b, hdr, func() string { return urls[next.Add(1)%uint64(len(urls))] })
	if n := srv.vapid.slowVerifies.Load(); n != 1 {
		b.Errorf("%d JWT verifications, want 1 (cache)", n)
	}
}

// BenchmarkIngestHTTPFloor is the same client load against a handler that
// only drains the body and answers 201: the loopback HTTP ceiling of the
// machine, to read BenchmarkIngestEmbedded against.
func BenchmarkIngestHTTPFloor(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", "http://127.0.0.1/m/x")
		w.WriteHeader(http.StatusCreated)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/wpush/v1/x"
	runPushLoad(b, http.Header{"Ttl": {"60"}, "Content-Encoding": {"aes128gcm"}}, func() string { return url })
}

// runPushLoad posts 4096-byte bodies from 64 keep-alive clients in parallel
// and reports pushes/s; every answer must be 201. Every body is distinct
// (a counter in its first bytes), as encrypted bodies are: identical ones
// would be answered from the retry index instead of appended.
func runPushLoad(b *testing.B, hdr http.Header, url func() string) {
	template := randomBody(b, 4096)
	var seq atomic.Uint64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}}
	defer client.CloseIdleConnections()
	b.SetParallelism(32) // many senders in flight, as behind a real push API
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		body := bytes.Clone(template)
		for pb.Next() {
			binary.BigEndian.PutUint64(body, seq.Add(1))
			req, err := http.NewRequest(http.MethodPost, url(), bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header = hdr // read-only, shared
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pushes/s")
}
