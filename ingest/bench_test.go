package ingest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
	srv, base, sealer := startIngestBench(b, "")
	vk := newTestVAPID(b)
	urls := benchEndpoints(b, sealer, base, vk.keyHash())
	var next atomic.Uint64
	jwtTok := vk.jwt(b, jwt.MapClaims{"aud": base, "exp": time.Now().Add(12 * time.Hour).Unix(), "sub": "mailto:bench@example.com"})
	hdr := http.Header{
		"Ttl":              {"2419200"},
		"Urgency":          {"normal"},
		"Content-Encoding": {"aes128gcm"},
		"Authorization":    {"vapid t=" + jwtTok + ", k=" + vk.k},
	}
	runPushLoad(b, func() http.Header { return hdr }, func() string { return urls[next.Add(1)%uint64(len(urls))] })
	if n := srv.vapid.slowVerifies.Load(); n > 2 {
		b.Errorf("%d JWT verifications, want at most 2 (cached the second time)", n)
	}
}

// BenchmarkIngestFreshJWT is BenchmarkIngestEmbedded with a JWT never seen
// before on every push, signed by one key, as npm web-push and pywebpush
// send by default: every push pays the signature check. The tokens are
// signed before the timer starts (signing costs as much as verifying).
//
//	go test ./ingest -run x -bench 'Ingest(FreshJWT|Embedded)' -benchtime 20000x
func BenchmarkIngestFreshJWT(b *testing.B) {
	// The aud is a fixed PublicURL, so one pool of tokens serves every
	// run of the benchmark whatever port it listens on.
	srv, base, sealer := startIngestBench(b, testPublicURL)
	p := freshJWTs(b, testPublicURL, freshPoolSize)
	urls := benchEndpoints(b, sealer, base, p.vk.keyHash())
	hdrs := make([]http.Header, len(p.tokens))
	for i, tok := range p.tokens {
		hdrs[i] = http.Header{
			"Ttl":              {"2419200"},
			"Urgency":          {"normal"},
			"Content-Encoding": {"aes128gcm"},
			"Authorization":    {"vapid t=" + tok + ", k=" + p.vk.k},
		}
	}
	var nextURL, nextTok atomic.Uint64
	runPushLoad(b, func() http.Header { return hdrs[nextTok.Add(1)%uint64(len(hdrs))] },
		func() string { return urls[nextURL.Add(1)%uint64(len(urls))] })
	// Past two rounds of the pool a token may come from the cache (it is
	// cached the second time it is verified).
	if n := srv.vapid.slowVerifies.Load(); b.N <= 2*len(p.tokens) && n != int64(b.N) {
		b.Errorf("%d JWT verifications for %d pushes with fresh JWTs", n, b.N)
	}
}

// startIngestBench runs a server on 127.0.0.1 producing to an in-process
// kfake broker until the benchmark ends; it returns the server, its base
// URL and its sealer. publicURL "" is the base URL.
func startIngestBench(b *testing.B, publicURL string) (*Server, string, *schema.Sealer) {
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
	b.Cleanup(producer.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	sealer := newSealer(b)
	// One VAPID key sends everything: its quota is raised out of reach
	// (the buckets are still kept, so their cost is measured).
	srv, err := New(Config{PublicURL: cmp.Or(publicURL, base), Sealer: sealer, Producer: producer, Partitions: testPartitions, Logger: quietLogger(),
		Quota: QuotaConfig{VAPIDRate: 1e9, VAPIDBurst: 1e9}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln, nil) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return srv, base, sealer
}

// benchEndpoints returns many v2 endpoints bound to keyHash, so pushes
// spread over every partition.
func benchEndpoints(b *testing.B, sealer *schema.Sealer, base string, keyHash []byte) []string {
	urls := make([]string, 1024)
	for i := range urls {
		tok, err := sealer.SealEndpoint(schema.Endpoint{UAID: schema.NewUAID(), ChannelID: testChannel, KeyHash: keyHash})
		if err != nil {
			b.Fatal(err)
		}
		urls[i] = base + "/wpush/v2/" + tok
	}
	return urls
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
	hdr := http.Header{"Ttl": {"60"}, "Content-Encoding": {"aes128gcm"}}
	runPushLoad(b, func() http.Header { return hdr }, func() string { return url })
}

// runPushLoad posts 4096-byte bodies from 64 keep-alive clients in parallel
// and reports pushes/s; every answer must be 201. Every body is distinct
// (a counter in its first bytes), as encrypted bodies are: identical ones
// would be answered from the retry index instead of appended.
func runPushLoad(b *testing.B, hdr func() http.Header, url func() string) {
	template := randomBody(b, 4096)
	var seq atomic.Uint64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}}
	defer client.CloseIdleConnections()
	b.SetParallelism(32) // many senders in flight, as behind a real push API
	b.ReportAllocs()
	b.ResetTimer()
	start, startCPU := time.Now(), cpuTime(rusageSelf)
	b.RunParallel(func(pb *testing.PB) {
		body := bytes.Clone(template)
		for pb.Next() {
			binary.BigEndian.PutUint64(body, seq.Add(1))
			req, err := http.NewRequest(http.MethodPost, url(), bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header = hdr() // read-only, shared
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
	elapsed, cpu := time.Since(start), cpuTime(rusageSelf)-startCPU
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pushes/s")
	// CPU time (server and clients, user+sys) per push: on a shared
	// machine wall-clock rates move with the neighbours' load, this not.
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/push")
	}
}

// BenchmarkPushHandler is BenchmarkIngestEmbedded without HTTP: each push
// goes straight to the server's handler (httptest request and recorder)
// from 32 goroutines, and still waits for its acks=all append to the
// in-process kfake broker. Its CPU per push is the push path's own cost
// (routing, checks, token opening, encoding, retry index, quota, kgo and
// kfake, the 201) without the loopback HTTP client and server around it.
//
//	go test ./ingest -run x -bench PushHandler -benchtime 20000x
func BenchmarkPushHandler(b *testing.B) {
	srv, base, sealer := startIngestBench(b, "")
	h := srv.Handler()
	vk := newTestVAPID(b)
	urls := benchEndpoints(b, sealer, base, vk.keyHash())
	jwtTok := vk.jwt(b, jwt.MapClaims{"aud": base, "exp": time.Now().Add(12 * time.Hour).Unix(), "sub": "mailto:bench@example.com"})
	hdr := http.Header{
		"Ttl":              {"2419200"},
		"Urgency":          {"normal"},
		"Content-Encoding": {"aes128gcm"},
		"Authorization":    {"vapid t=" + jwtTok + ", k=" + vk.k},
	}
	template := randomBody(b, 4096)
	var seq, next atomic.Uint64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	startCPU := cpuTime(rusageSelf)
	b.RunParallel(func(pb *testing.PB) {
		body := bytes.Clone(template)
		for pb.Next() {
			binary.BigEndian.PutUint64(body, seq.Add(1))
			req := httptest.NewRequest(http.MethodPost, urls[next.Add(1)%uint64(len(urls))][len(base):], bytes.NewReader(body))
			req.Header = hdr.Clone()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusCreated {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
		}
	})
	cpu := cpuTime(rusageSelf) - startCPU
	b.StopTimer()
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/push")
	}
}
