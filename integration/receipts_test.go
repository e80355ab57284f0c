package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReceipts: RFC 8030 §5.1 push receipts on real Kafka. A sender makes
// a receipt subscription and pushes with Push-Receipt; the user agent acks
// one message, the process is killed (-9) and restarted, it acks another,
// a third is delivered and never acked, a fourth (TTL 0 while offline) is
// dropped. Receipts arrive for exactly the acked and the dropped ones —
// over HTTP/2 server push (Debian's nghttp, h2c on this node and TLS h2 on
// a second ingest node of the same namespace) and as Server-Sent Events
// (curl) — and forged receipt URIs get clear 4xx.
func TestReceipts(t *testing.T) {
	nghttp := requireTool(t, "nghttp", "nghttp2-client")
	curl := requireTool(t, "curl", "curl")
	ctx := testContext(t, 4*time.Minute)
	began := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }
	idle := []string{"PUSHLOG_RECEIPT_IDLE=4s"}
	s := startServer(t, serverOpts{Env: append(idle, "PUSHLOG_GROUP_SESSION_TIMEOUT=6s", "PUSHLOG_GROUP_HEARTBEAT=1s")})
	phase("started")

	// The receipt subscription (201, Location, Link rel=...:receipt).
	resp := rcDo(t, http.MethodPost, s.HTTPURL+"/receipts", nil)
	receipt := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(receipt, s.HTTPURL+"/r/") ||
		resp.Header.Get("Link") != "<"+receipt+`>; rel="urn:ietf:params:push:receipt"` {
		t.Fatalf("POST /receipts = %d, Location %q, Link %q", resp.StatusCode, receipt, resp.Header.Get("Link"))
	}

	ua := uaDial(ctx, t, s.WSURL, "")
	uaid := ua.UAID
	sub := ua.subscribe(ctx, "")
	push := func(ttl string, hdr map[string]string) *http.Response {
		h := map[string]string{"TTL": ttl}
		for k, v := range hdr {
			h[k] = v
		}
		return rcDo(t, http.MethodPost, sub.Endpoint, h)
	}

	// Forged and foreign receipt URIs: 400 errno 131, nothing written.
	for name, v := range map[string]string{
		"forged":   s.HTTPURL + "/r/" + strings.Repeat("A", 64),
		"foreign":  "https://elsewhere.example/r/" + strings.TrimPrefix(receipt, s.HTTPURL+"/r/"),
		"endpoint": s.HTTPURL + "/r/" + sub.Endpoint[strings.LastIndexByte(sub.Endpoint, '/')+1:],
	} {
		r := push("60", map[string]string{"Push-Receipt": v})
		body, _ := io.ReadAll(r.Body)
		snCheckError(t, "Push-Receipt "+name, r.StatusCode, r.Header, body, http.StatusBadRequest, 131)
	}
	r := rcDo(t, http.MethodGet, s.HTTPURL+"/r/"+strings.Repeat("B", 64), nil)
	body, _ := io.ReadAll(r.Body)
	snCheckError(t, "GET of a forged receipt subscription", r.StatusCode, r.Header, body, http.StatusNotFound, 131)

	// Three pushes with receipts to the connected user agent: 202 with
	// the subscription's Link (RFC 8030 §5.1).
	var locs []string
	for range 3 {
		r := push("600", map[string]string{"Push-Receipt": receipt})
		if r.StatusCode != http.StatusAccepted || r.Header.Get("Link") != "<"+receipt+`>; rel="urn:ietf:params:push:receipt"` {
			t.Fatalf("push with Push-Receipt = %d, Link %q", r.StatusCode, r.Header.Get("Link"))
		}
		locs = append(locs, r.Header.Get("Location"))
	}
	got := map[string]uaMessage{}
	for len(got) < 3 {
		n := ua.next(ctx)
		got[s.HTTPURL+"/m/"+n.Version] = n
	}
	for _, l := range locs {
		if _, ok := got[l]; !ok {
			t.Fatalf("pushed %s, not delivered (got %v)", l, got)
		}
	}
	acked, unacked, second := locs[0], locs[2], locs[1]
	ua.ack(got[acked])
	ua.sync(ctx)
	snWaitAcked(ctx, t, s, uaid, sub.ChannelID, 1)
	phase("one of three acked, durably; kill -9")
	ua.close()
	s.kill9()
	s.restart()
	phase("restarted")

	// While offline: TTL 0 (the owner settles it at once: expired) and
	// two with one Topic (the first is replaced: dropped).
	var offline []string
	for _, h := range []map[string]string{{"TTL": "0"}, {"TTL": "600", "Topic": "t1"}, {"TTL": "600", "Topic": "t1"}} {
		h["Push-Receipt"] = receipt
		r := push(h["TTL"], h)
		if r.StatusCode != http.StatusAccepted {
			t.Fatalf("offline push %v = %d", h, r.StatusCode)
		}
		offline = append(offline, r.Header.Get("Location"))
	}
	ttl0, replaced, replacing := offline[0], offline[1], offline[2]
	ua = uaRedial(ctx, t, s.WSURL, uaid)
	again := map[string]uaMessage{}
	for len(again) < 3 {
		n := ua.next(ctx)
		again[s.HTTPURL+"/m/"+n.Version] = n
	}
	for _, l := range []string{acked, ttl0, replaced} {
		if _, ok := again[l]; ok {
			t.Fatalf("%s delivered after kill -9 (acked, TTL 0 offline or replaced)", l)
		}
	}
	ua.ack(again[second], again[replacing])
	ua.sync(ctx)
	snWaitAcked(ctx, t, s, uaid, sub.ChannelID, 3)
	phase("two more acked; the third of the first pushes stays unacked")

	want := map[string]string{acked: "acked", second: "acked", replacing: "acked",
		ttl0: "expired", replaced: "dropped:topic_replaced"}
	// Server-Sent Events with curl (the stream ends after the idle time).
	waitFor(ctx, t, "receipts over SSE", func() (bool, string) {
		out, _ := exec.CommandContext(ctx, curl, "-sN", "--max-time", "20", "-H", "Accept: text/event-stream", receipt).Output()
		got := rcParseSSE(t, out)
		return rcEqual(got, want), rcString(got)
	})
	if _, ok := want[unacked]; ok {
		t.Fatal("test bug")
	}
	phase("SSE receipts: exactly the acked and dropped messages")

	// HTTP/2 server push, h2c with prior knowledge (nghttp's default for
	// http:// URIs): PUSH_PROMISE of /m/{id}, then 410.
	out, err := exec.CommandContext(ctx, nghttp, "-nv", "--timeout=30", receipt).CombinedOutput()
	if err != nil {
		t.Fatalf("nghttp: %v\n%s", err, out)
	}
	if got := rcParseNghttp(t, out, s.HTTPURL); !rcEqual(got, want) {
		t.Fatalf("h2c server push receipts %s, want %s\n%s", rcString(got), rcString(want), out)
	}
	phase("h2c server-push receipts")

	// A second ingest-only node with TLS on the same namespace folds the
	// same events: TLS h2 server push gives the same receipts.
	dir := t.TempDir()
	cert, key := rcSelfSigned(t, dir)
	httpsAddr := rcStartTLS(ctx, t, s, cert, key, idle)
	tlsReceipt := "https://" + httpsAddr + strings.TrimPrefix(receipt, s.HTTPURL)
	waitFor(ctx, t, "receipts over TLS h2 server push", func() (bool, string) {
		out, err := exec.CommandContext(ctx, nghttp, "-nv", "--timeout=30", tlsReceipt).CombinedOutput()
		if err != nil {
			return false, err.Error() + ": " + string(out)
		}
		got := rcParseNghttp(t, out, s.HTTPURL)
		return rcEqual(got, want), rcString(got)
	})
	phase("TLS h2 server-push receipts from another node")
}

// rcStartTLS runs an ingest-only `pushlog serve` with TLS beside s (same
// Kafka and namespace) and waits for its HTTPS heartbeat; it returns its
// address.
func rcStartTLS(ctx context.Context, t *testing.T, s *server, cert, key string, extra []string) string {
	t.Helper()
	addr := freePort(t)
	keys, err := os.ReadFile(filepath.Join(s.opts.DataDir, "crypto-keys")) // the deployment's sealing keys
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pushlogBin, "serve")
	cmd.Env = append(append(append([]string(nil), s.env...), extra...),
		"PUSHLOG_HTTP_ADDR="+addr, "PUSHLOG_WS_ADDR="+freePort(t), "PUSHLOG_ROLES=ingest",
		"PUSHLOG_DATA_DIR="+t.TempDir(), "PUSHLOG_TLS_CERT="+cert, "PUSHLOG_TLS_KEY="+key,
		"PUSHLOG_PUBLIC_URL=https://"+addr, "PUSHLOG_CONSOLE_ADDR=off", "PUSHLOG_CRYPTO_KEYS="+strings.TrimSpace(string(keys)))
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start TLS node: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("TLS node output:\n%s", logs.String())
		}
	})
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	for ctx.Err() == nil {
		select {
		case <-done:
			t.Fatalf("TLS node exited:\n%s", logs.String())
		default:
		}
		if resp, err := cl.Get("https://" + addr + "/__lbheartbeat__"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("TLS node not ready:\n%s", logs.String())
	return ""
}

// requireTool finds a command; without it the test fails in CI and skips
// elsewhere.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s not found: deploy/test.sh installs Debian's %s", name, pkg)
		}
		t.Skipf("%s not found (apt-get install %s)", name, pkg)
	}
	return p
}

func rcDo(t *testing.T, method, url string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// waitFor retries check (the fold catches up after a restart) until ctx.
func waitFor(ctx context.Context, t *testing.T, what string, check func() (bool, string)) {
	t.Helper()
	last := ""
	for ctx.Err() == nil {
		ok, state := check()
		if ok {
			return
		}
		last = state
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: last %s", what, last)
}

type rcReceipt struct {
	Message, Outcome, Reason string
}

// rcParseSSE maps message URI to outcome[:reason] from an SSE body.
func rcParseSSE(t *testing.T, out []byte) map[string]string {
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var r rcReceipt
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.Fatalf("SSE data %q: %v", data, err)
		}
		got[r.Message] = r.Outcome + rcReason(r.Reason)
	}
	return got
}

func rcReason(r string) string {
	if r == "" {
		return ""
	}
	return ":" + r
}

var (
	rcPromised = regexp.MustCompile(`promised_stream_id=(\d+)`)
	rcHeader   = regexp.MustCompile(`recv \(stream_id=(\d+)\) ([:a-z0-9-]+): (.*)`)
)

// rcParseNghttp reads `nghttp -v` output: it prints a PUSH_PROMISE's
// request headers (under the associated stream) before the frame line
// naming the promised stream, then that stream's response headers. Each
// promised /m/{id} answered 410 gives base+path -> outcome[:reason]
// (the reason from the JSON body is not printed; the outcome header is).
func rcParseNghttp(t *testing.T, out []byte, base string) map[string]string {
	var lastPath string
	path, status, outcome := map[string]string{}, map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := rcHeader.FindStringSubmatch(line); m != nil {
			id, name, val := m[1], m[2], strings.TrimSpace(m[3])
			switch name {
			case ":path":
				lastPath = val
			case ":status":
				status[id] = val
			case "pushlog-receipt-outcome":
				outcome[id] = val
			case "pushlog-receipt-reason":
				outcome[id] += ":" + val
			}
			continue
		}
		if m := rcPromised.FindStringSubmatch(line); m != nil {
			path[m[1]] = lastPath
		}
	}
	got := map[string]string{}
	for id, p := range path {
		if status[id] != "410" || !strings.HasPrefix(p, "/m/") {
			t.Logf("promised stream %s (%s) answered %q, want 410", id, p, status[id])
			continue
		}
		got[base+p] = outcome[id]
	}
	return got
}

func rcEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func rcString(m map[string]string) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// rcSelfSigned writes a self-signed localhost certificate and key.
func rcSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
