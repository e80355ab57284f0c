package ingest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushlog/pushlog/schema"
)

func TestDelete(t *testing.T) {
	e := newEnv(t)
	rr := e.do(http.MethodPost, e.endpoint(testUAID, testChannel, nil), map[string]string{"TTL": "600"}, nil)
	if rr.Code != http.StatusCreated {
		t.Fatalf("push: %d %s", rr.Code, rr.Body)
	}
	loc := rr.Header().Get("Location")
	m := e.openLocation(loc)
	id := strings.TrimPrefix(loc, testPublicURL+"/m/")

	del := e.do(http.MethodDelete, "/m/"+id, nil, nil)
	if del.Code != http.StatusNoContent || del.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", del.Code, del.Body)
	}
	rec, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset+1)
	if string(rec.Key) != testUAID || ev.GetUaid() != testUAID {
		t.Errorf("delete event keyed %q uaid %q", rec.Key, ev.GetUaid())
	}
	ref := ev.GetMessageDeleted().GetMsg()
	if ref.GetPartition() != m.Partition || ref.GetOffset() != m.Offset || ref.GetChannelId() != testChannel {
		t.Errorf("MessageDeleted %v, want %+v", ref, m)
	}

	wrongPart, _ := e.sealer.SealMessageID(schema.MessageID{UAID: testUAID, ChannelID: testChannel,
		Partition: (m.Partition + 1) % testPartitions, Offset: 0})
	beyond, _ := e.sealer.SealMessageID(schema.MessageID{UAID: testUAID, ChannelID: testChannel, Partition: testPartitions + 3})
	endpointTok := strings.TrimPrefix(e.endpoint(testUAID, testChannel, nil), "/wpush/v1/")
	for name, bad := range map[string]string{
		"garbage":               "garbage",
		"flipped":               flip(id, 15),
		"endpoint token":        endpointTok,
		"another partition":     wrongPart,
		"beyond the partitions": beyond,
	} {
		rr := e.do(http.MethodDelete, "/m/"+bad, nil, nil)
		if rr.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, rr.Code)
			continue
		}
		if b := errBody(t, rr); b.Errno != errnoInvalidToken {
			t.Errorf("%s: errno %d", name, b.Errno)
		}
	}
}

// TestBreaker: failed produces answer 503 errno 201 with Retry-After and
// never 201; after FailureThreshold failures the breaker opens and answers
// without touching Kafka; once Kafka is back a half-open probe closes it.
func TestBreaker(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.ProduceTimeout = 200 * time.Millisecond
		c.Breaker = BreakerConfig{FailureThreshold: 2, OpenTimeout: 300 * time.Millisecond}
	})
	path := e.endpoint(testUAID, testChannel, nil)
	hdr := map[string]string{"TTL": "60"}
	if rr := e.do(http.MethodPost, path, hdr, nil); rr.Code != http.StatusCreated {
		t.Fatalf("warm-up push: %d %s", rr.Code, rr.Body)
	}
	var failing atomic.Bool
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if failing.Load() {
			return nil, errors.New("injected produce failure"), true
		}
		return nil, nil, false
	})
	failing.Store(true)

	expect503 := func(what string) {
		t.Helper()
		rr := e.do(http.MethodPost, path, hdr, nil)
		if rr.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s: status %d, want 503: %s", what, rr.Code, rr.Body)
		}
		if b := errBody(t, rr); b.Errno != errnoUnavailable {
			t.Errorf("%s: errno %d", what, b.Errno)
		}
		if ra := rr.Header().Get("Retry-After"); ra != "1" {
			t.Errorf("%s: Retry-After %q, want 1", what, ra)
		}
	}
	expect503("first failure")
	expect503("second failure")
	if st := e.srv.breaker.State(); st != gobreaker.StateOpen {
		t.Fatalf("breaker %s after 2 failures, want open", st)
	}
	calls := e.srv.produceCalls.Load()
	expect503("while open")
	if e.srv.produceCalls.Load() != calls {
		t.Fatal("an open breaker still waited on Kafka")
	}
	del := e.do(http.MethodDelete, "/m/"+strings.Repeat("A", 60), nil, nil)
	if del.Code != http.StatusBadRequest {
		t.Errorf("malformed delete while open: %d", del.Code)
	}

	failing.Store(false)
	recoverStart := time.Now()
	defer func() { t.Logf("recovered after %v", time.Since(recoverStart)) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rr := e.do(http.MethodPost, path, hdr, nil)
		if rr.Code == http.StatusCreated {
			m := e.openLocation(rr.Header().Get("Location"))
			if _, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset); ev.GetMessageAccepted() == nil {
				t.Fatal("201 after recovery without its event")
			}
			break
		}
		if rr.Code != http.StatusServiceUnavailable {
			t.Fatalf("during recovery: %d %s", rr.Code, rr.Body)
		}
		if time.Now().After(deadline) {
			t.Fatal("breaker never closed after Kafka came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := e.srv.breaker.State(); st != gobreaker.StateClosed {
		t.Errorf("breaker %s after a successful probe", st)
	}
}

// TestBreakerDeadBroker: with the Kafka cluster gone, pushes and deletes get
// 503 within ProduceTimeout (kgo would wait for the broker forever).
func TestBreakerDeadBroker(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.ProduceTimeout = 200 * time.Millisecond
		c.Breaker = BreakerConfig{FailureThreshold: 2, OpenTimeout: time.Hour}
	})
	path := e.endpoint(testUAID, testChannel, nil)
	if rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
		t.Fatalf("warm-up push: %d", rr.Code)
	}
	id := strings.TrimPrefix(e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil).Header().Get("Location"), testPublicURL+"/m/")
	e.cluster.Close()
	for i := 0; i < 4; i++ {
		rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil)
		if rr.Code != http.StatusServiceUnavailable || rr.Header().Get("Retry-After") != "3600" {
			t.Fatalf("push %d with Kafka down: %d Retry-After %q", i, rr.Code, rr.Header().Get("Retry-After"))
		}
	}
	if got := e.srv.produceCalls.Load(); got != 4 { // warm-up, id push, 2 failures
		t.Errorf("%d produce attempts, want 4", got)
	}
	if rr := e.do(http.MethodDelete, "/m/"+id, nil, nil); rr.Code != http.StatusServiceUnavailable {
		t.Errorf("delete with Kafka down: %d", rr.Code)
	}
}

func TestHealthAndVersion(t *testing.T) {
	var kafkaErr atomic.Pointer[error]
	e := newEnv(t, func(c *Config) {
		c.Health = map[string]func(context.Context) error{
			"kafka": func(context.Context) error {
				if p := kafkaErr.Load(); p != nil {
					return *p
				}
				return nil
			},
		}
		c.Version = VersionInfo{Source: "https://example.com/pushlog", Version: "1.2.3", Commit: "abc", Build: "ci-7"}
	})
	check := func(path string, status int) map[string]any {
		t.Helper()
		rr := e.do(http.MethodGet, path, nil, nil)
		if rr.Code != status {
			t.Fatalf("%s: %d, want %d: %s", path, rr.Code, status, rr.Body)
		}
		var m map[string]any
		if err := json.Unmarshal(rr.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return m
	}
	for _, p := range []string{"/__heartbeat__", "/health"} {
		m := check(p, 200)
		if m["status"] != "OK" || m["version"] != "1.2.3" || m["checks"].(map[string]any)["kafka"] != "OK" || m["circuit_breaker"] != "closed" {
			t.Errorf("%s: %v", p, m)
		}
	}
	bad := errors.New("no brokers")
	kafkaErr.Store(&bad)
	m := check("/__heartbeat__", 503)
	if m["status"] != "ERROR" || !strings.Contains(m["checks"].(map[string]any)["kafka"].(string), "no brokers") {
		t.Errorf("failing heartbeat: %v", m)
	}
	check("/__lbheartbeat__", 200)
	v := check("/__version__", 200)
	if v["source"] != "https://example.com/pushlog" || v["version"] != "1.2.3" || v["commit"] != "abc" || v["build"] != "ci-7" {
		t.Errorf("version: %v", v)
	}
	if rr := e.do(http.MethodHead, "/__lbheartbeat__", nil, nil); rr.Code != 200 {
		t.Errorf("HEAD lbheartbeat: %d", rr.Code)
	}
}

// TestRoutingErrors: echo's own 404/405 leave in the autopush JSON shape.
func TestRoutingErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/nope", 404},
		{http.MethodPost, "/wpush/v3/abc", 404},
		{http.MethodPost, "/wpush/abc", 404},
		{http.MethodGet, "/wpush/v1/abc", 405},
		{http.MethodPut, "/m/abc", 405},
		{http.MethodPost, "/__heartbeat__", 405},
	} {
		rr := e.do(tc.method, tc.path, nil, nil)
		if rr.Code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rr.Code, tc.status)
			continue
		}
		errBody(t, rr)
	}
}

func TestNewValidates(t *testing.T) {
	good := func() Config {
		return Config{PublicURL: testPublicURL, Sealer: newSealer(t), Producer: newProducer(t, []string{"127.0.0.1:1"}), Partitions: 4}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		errSub string
	}{
		{"no PublicURL", func(c *Config) { c.PublicURL = "" }, "PublicURL"},
		{"relative PublicURL", func(c *Config) { c.PublicURL = "push.example.com" }, "PublicURL"},
		{"PublicURL with query", func(c *Config) { c.PublicURL = "https://a.example?x=1" }, "PublicURL"},
		{"ws PublicURL", func(c *Config) { c.PublicURL = "ws://a.example" }, "PublicURL"},
		{"no Sealer", func(c *Config) { c.Sealer = nil }, "Sealer"},
		{"no Producer", func(c *Config) { c.Producer = nil }, "Producer"},
		{"no Partitions", func(c *Config) { c.Partitions = 0 }, "Partitions"},
		{"MaxBody below RFC", func(c *Config) { c.MaxBody = 4095 }, "MaxBody"},
		{"negative MaxTTL", func(c *Config) { c.MaxTTL = -time.Second }, "MaxTTL"},
		{"negative ProduceTimeout", func(c *Config) { c.ProduceTimeout = -1 }, "ProduceTimeout"},
		{"nil health check", func(c *Config) { c.Health = map[string]func(context.Context) error{"kafka": nil} }, "kafka"},
		{"negative MaxCryptoHeaders", func(c *Config) { c.MaxCryptoHeaders = -1 }, "MaxCryptoHeaders"},
		{"negative VAPIDCacheBytes", func(c *Config) { c.VAPIDCacheBytes = -1 }, "VAPIDCacheBytes"},
		{"negative DedupEntries", func(c *Config) { c.DedupEntries = -1 }, "DedupEntries"},
		{"MaxEvent above Kafka's default", func(c *Config) { c.MaxEvent = 2 << 20 }, "MaxEvent"},
		{"worst case above MaxEvent", func(c *Config) { c.MaxBody = 65000 }, "exceed MaxEvent"},
		{"worst case above MaxEvent (sub)", func(c *Config) { c.MaxVAPIDSub = 1 << 20; c.MaxEvent = MaxEventLimit }, "exceed MaxEvent"},
	} {
		c := good()
		tc.mutate(&c)
		_, err := New(c)
		if err == nil || !strings.Contains(err.Error(), tc.errSub) {
			t.Errorf("%s: err %v, want mention of %s", tc.name, err, tc.errSub)
		}
	}
	s, err := New(good())
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.MaxBody != DefaultMaxBody || s.cfg.MaxTTL != DefaultMaxTTL || s.cfg.ProduceTimeout != DefaultProduceTimeout || s.vapid.origins[0] != testPublicURL || len(s.vapid.origins) != 1 {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
	c := good()
	c.PublicURL = "HTTP://127.0.0.1:8082/"
	s, err = New(c)
	if err != nil || s.vapid.origins[0] != "http://127.0.0.1:8082" || s.base != "HTTP://127.0.0.1:8082" {
		t.Errorf("origin %q base %q err %v", s.vapid.origins, s.base, err)
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and its key as PEM.
func writeSelfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pushlog test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// startRun runs the server on 127.0.0.1:0 and returns its base URL and a
// stop function that checks Run returned cleanly.
func startRun(t *testing.T, e *env, tlsCfg *tls.Config) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx, ln, tlsCfg) }()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String(), func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
}

// TestRunTLS: npm web-push only speaks HTTPS; a push over TLS (HTTP/1.1 and
// HTTP/2) is accepted, and Run shuts down when its context ends.
func TestRunTLS(t *testing.T) {
	certFile, keyFile, pool := writeSelfSigned(t)
	tlsCfg, err := LoadTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTLS(certFile, filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("LoadTLS accepted a missing key file")
	}
	e := newEnv(t)
	base, stop := startRun(t, e, tlsCfg)
	defer stop()
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		req, _ := http.NewRequest(http.MethodPost, base+e.endpoint(testUAID, testChannel, nil), strings.NewReader(strings.Repeat("x", 4096)))
		req.Header.Set("TTL", "2419200")
		req.Header.Set("Content-Encoding", "aes128gcm")
		req.Header.Set("Urgency", "normal")
		req.Header.Set("Authorization", e.vapid.header(t, testPublicURL))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || (resp.ProtoMajor == 2) != h2 {
			t.Errorf("h2=%v: %d over %s", h2, resp.StatusCode, resp.Proto)
		}
		tr.CloseIdleConnections()
	}
}

// TestLowercaseHeadersOnTheWire sends pywebpush's request byte for byte
// shape: lowercase "ttl: 0" and "vapid t=…,k=…" without a space.
func TestLowercaseHeadersOnTheWire(t *testing.T) {
	e := newEnv(t)
	base, stop := startRun(t, e, nil)
	defer stop()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth := strings.Replace(e.vapid.header(t, testPublicURL), ", k=", ",k=", 1)
	body := strings.Repeat("y", 100)
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\nttl: 0\r\ncontent-encoding: aes128gcm\r\nauthorization: %s\r\ncontent-length: %d\r\n\r\n%s",
		e.endpoint(testUAID, testChannel, nil), auth, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("TTL") != "0" {
		t.Fatalf("status %d TTL %q", resp.StatusCode, resp.Header.Get("TTL"))
	}
}

// TestOverload: beyond MaxInFlight requests waiting on Kafka, a push gets 503
// errno 201 at once instead of queueing.
func TestOverload(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxInFlight = 1
		c.ProduceTimeout = 5 * time.Second
		c.Breaker = BreakerConfig{FailureThreshold: 100}
	})
	path := e.endpoint(testUAID, testChannel, nil)
	if rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
		t.Fatalf("warm-up push: %d", rr.Code)
	}
	var failing atomic.Bool
	failing.Store(true)
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if failing.Load() {
			return nil, errors.New("injected produce failure"), true
		}
		return nil, nil, false
	})
	first := make(chan int, 1)
	go func() { first <- e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil).Code }()
	for e.srv.inFlight.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	calls := e.srv.produceCalls.Load()
	rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil)
	if rr.Code != http.StatusServiceUnavailable || errBody(t, rr).Errno != errnoUnavailable || rr.Header().Get("Retry-After") == "" {
		t.Fatalf("overloaded push: %d %s", rr.Code, rr.Body)
	}
	if e.srv.produceCalls.Load() != calls {
		t.Error("an overloaded push reached Kafka")
	}
	failing.Store(false)
	if code := <-first; code != http.StatusCreated {
		t.Errorf("the in-flight push got %d once Kafka answered", code)
	}
}
