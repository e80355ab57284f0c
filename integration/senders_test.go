package integration

// Standard sender libraries, unmodified, against a running pushlog: npm
// `web-push`, Python `pywebpush` and Go `webpush-go`, each with its own
// defaults, delivered to `pushlog listen`, which decrypts. The exact bytes
// sent must be the bytes decrypted. The Firefox tests (firefox_test.go)
// deliver the same libraries' pushes to a real browser.
//
// The libraries are installed by deploy/clients/install.sh (Debian's
// Firefox, npm web-push into .cache/npm, pywebpush into .cache/venv); a
// missing one fails the test in CI and skips it elsewhere.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"
)

// senderTestTimeout bounds each sender test, including pushlog's start.
const senderTestTimeout = 2 * time.Minute

// --- finding the installed clients -----------------------------------------

// senderRepoRoot is the module root (tests run in integration/).
func senderRepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// senderMissing reports a client that is not installed: a failure in CI,
// a skip with the install command elsewhere.
func senderMissing(t testing.TB, what string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s is not installed (%v): run deploy/clients/install.sh", what, err)
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// senderClientPath returns the value of env, else def (relative to the repo
// root), checking that it exists.
func senderClientPath(t testing.TB, what, env, def string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(senderRepoRoot(t), def)
	}
	if _, err := os.Stat(p); err != nil {
		senderMissing(t, what, err)
	}
	return p
}

// senderNodeModules is the node_modules folder holding npm web-push.
func senderNodeModules(t testing.TB) string {
	t.Helper()
	dir := senderClientPath(t, "npm web-push", "PUSHLOG_WEBPUSH_NODE_MODULES", ".cache/npm/node_modules")
	if _, err := os.Stat(filepath.Join(dir, "web-push", "package.json")); err != nil {
		senderMissing(t, "npm web-push", err)
	}
	return dir
}

func senderNode(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		senderMissing(t, "node", err)
	}
	return p
}

// senderPython is the venv's python with pywebpush.
func senderPython(t testing.TB) string {
	t.Helper()
	return senderClientPath(t, "pywebpush (the venv)", "PUSHLOG_PYTHON", ".cache/venv/bin/python")
}

// --- TLS for the push API ----------------------------------------------------

// senderCA is a throwaway CA and a certificate it issued for 127.0.0.1:
// npm web-push only speaks HTTPS, so the ingest listener serves TLS and
// every sender trusts this CA (NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, a
// Go cert pool).
type senderCA struct {
	CAFile, CertFile, KeyFile string
	Pool                      *x509.CertPool
}

func senderNewCA(t testing.TB) *senderCA {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pushlog integration test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKeyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	ca := &senderCA{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		Pool:     x509.NewCertPool(),
	}
	ca.Pool.AddCert(caCert)
	senderWritePEM(t, ca.CAFile, "CERTIFICATE", caDER)
	senderWritePEM(t, ca.CertFile, "CERTIFICATE", leafDER)
	senderWritePEM(t, ca.KeyFile, "PRIVATE KEY", leafKeyDER)
	return ca
}

func senderWritePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (ca *senderCA) client() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}},
	}
}

// senderStartTLSServer runs `pushlog serve` on real Kafka with its push API
// on HTTPS (the test CA's certificate) and its own namespace, so topics and
// consumer groups are this test's alone. It mirrors the harness's
// startServer, whose readiness probe speaks plain HTTP.
func senderStartTLSServer(t testing.TB, ca *senderCA, extraEnv ...string) *server {
	t.Helper()
	httpAddr, wsAddr := freePort(t), freePort(t)
	opts := serverOpts{DataDir: t.TempDir()}
	env := append(os.Environ(),
		"PUSHLOG_DATA_DIR="+opts.DataDir,
		"PUSHLOG_HTTP_ADDR="+httpAddr,
		"PUSHLOG_WS_ADDR="+wsAddr,
		"PUSHLOG_PARTITIONS=4",
		"PUSHLOG_LOG_LEVEL=debug",
		"KAFKA_BROKERS="+kafkaBrokers(t),
		"PUSHLOG_NAMESPACE="+freshNamespace(),
		"PUSHLOG_TLS_CERT="+ca.CertFile,
		"PUSHLOG_TLS_KEY="+ca.KeyFile,
		"PUSHLOG_PUBLIC_URL=https://"+httpAddr,
	)
	env = append(env, extraEnv...)
	s := &server{t: t, opts: opts, env: env, HTTPURL: "https://" + httpAddr, WSURL: "ws://" + wsAddr + "/"}
	s.logs = &lockedBuffer{}
	s.cmd = exec.Command(pushlogBin, "serve")
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start pushlog: %v", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	senderWaitTLSReady(t, s, ca, wsAddr, 60*time.Second)
	return s
}

func senderWaitTLSReady(t testing.TB, s *server, ca *senderCA, wsAddr string, timeout time.Duration) {
	t.Helper()
	client := ca.client()
	client.Timeout = 2 * time.Second
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			t.Fatalf("pushlog exited during start-up:\n%s", s.logs.String())
		default:
		}
		if resp, err := client.Get(s.HTTPURL + "/__lbheartbeat__"); err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", wsAddr); err == nil {
				c.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pushlog (TLS) not ready after %s:\n%s", timeout, s.logs.String())
}

func senderRandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// --- VAPID keys ----------------------------------------------------------------

// senderVAPID is an application server key pair in the raw base64url form
// every library takes (65-byte public point, 32-byte private scalar).
type senderVAPID struct {
	Subject    string `json:"subject"`
	PublicKey  string `json:"publicKey"`
	PrivateKey string `json:"privateKey"`
}

func senderNewVAPID(t testing.TB) senderVAPID {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return senderVAPID{
		Subject:    "mailto:integration@pushlog.example",
		PublicKey:  base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()),
		PrivateKey: base64.RawURLEncoding.EncodeToString(k.Bytes()),
	}
}

// --- sending -------------------------------------------------------------------

// senderJob is one push for a library script (integration/clients/*); the
// JSON names are the scripts'. Zero values leave the library's defaults.
type senderJob struct {
	Subscription json.RawMessage `json:"subscription"`
	Payload      []byte          `json:"payload"` // standard base64 in JSON
	VAPID        senderVAPID     `json:"vapid"`
	Encoding     string          `json:"encoding,omitempty"`
	TTL          *int            `json:"ttl,omitempty"`
	Topic        string          `json:"topic,omitempty"`
	Urgency      string          `json:"urgency,omitempty"`
	// UntilStatus makes web-push-send.js resend until it gets that status
	// or TimeoutMs passes (the gone set is projected asynchronously).
	UntilStatus int `json:"untilStatus,omitempty"`
	TimeoutMs   int `json:"timeoutMs,omitempty"`
}

// senderResult is the push service's answer as the library saw it.
type senderResult struct {
	Status   int            `json:"status"`
	Headers  map[string]any `json:"headers"`
	Body     string         `json:"body"`
	Attempts int            `json:"attempts"`
	Error    string         `json:"error"`
}

// header returns a response header (the scripts' maps have any case).
func (r senderResult) header(name string) string {
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) {
			switch v := v.(type) {
			case string:
				return v
			case []any:
				if len(v) > 0 {
					return fmt.Sprint(v[0])
				}
			default:
				return fmt.Sprint(v)
			}
		}
	}
	return ""
}

// errno is the autopush-style errno of an error body (0 if none).
func (r senderResult) errno() int {
	var body struct {
		Errno int `json:"errno"`
	}
	_ = json.Unmarshal([]byte(r.Body), &body)
	return body.Errno
}

// senderRunScript runs a sender script with the job on stdin and decodes
// its one-line JSON answer.
func senderRunScript(t testing.TB, cmd *exec.Cmd, job senderJob) senderResult {
	t.Helper()
	in, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res senderResult
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); err != nil {
		t.Fatalf("%s: no JSON answer (%v; run: %v)\nstdout: %s\nstderr: %s", cmd.Path, err, runErr, stdout.String(), stderr.String())
	}
	if res.Error != "" || runErr != nil {
		t.Fatalf("%s failed (%v): %s\nstderr: %s", filepath.Base(cmd.Args[len(cmd.Args)-1]), runErr, res.Error, stderr.String())
	}
	return res
}

// senderNodeSend sends with npm web-push (integration/clients/web-push-send.js).
func senderNodeSend(ctx context.Context, t testing.TB, ca *senderCA, job senderJob) senderResult {
	t.Helper()
	nodeModules := senderNodeModules(t)
	cmd := exec.CommandContext(ctx, senderNode(t), filepath.Join("clients", "web-push-send.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules, "NODE_EXTRA_CA_CERTS="+ca.CAFile)
	return senderRunScript(t, cmd, job)
}

// senderPythonSend sends with pywebpush (integration/clients/pywebpush_send.py).
func senderPythonSend(ctx context.Context, t testing.TB, ca *senderCA, job senderJob) senderResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, senderPython(t), filepath.Join("clients", "pywebpush_send.py"))
	cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+ca.CAFile, "PYTHONDONTWRITEBYTECODE=1")
	return senderRunScript(t, cmd, job)
}

// senderGoSend sends with webpush-go and its defaults (TTL 0, the body
// padded to 4096 bytes), trusting only the test CA.
func senderGoSend(ctx context.Context, t testing.TB, ca *senderCA, subJSON []byte, payload []byte, vapid senderVAPID, opts webpushgo.Options) senderResult {
	t.Helper()
	var sub webpushgo.Subscription
	if err := json.Unmarshal(subJSON, &sub); err != nil {
		t.Fatalf("subscription for webpush-go: %v", err)
	}
	opts.HTTPClient = ca.client()
	opts.Subscriber = vapid.Subject
	opts.VAPIDPublicKey = vapid.PublicKey
	opts.VAPIDPrivateKey = vapid.PrivateKey
	resp, err := webpushgo.SendNotificationWithContext(ctx, payload, &sub, &opts)
	if err != nil {
		t.Fatalf("webpush-go: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("webpush-go: read answer: %v", err)
	}
	res := senderResult{Status: resp.StatusCode, Body: string(body), Attempts: 1, Headers: map[string]any{}}
	for k := range resp.Header {
		res.Headers[k] = resp.Header.Get(k)
	}
	return res
}

// senderCheckCreated checks a 201 as PROTOCOL.md §1 describes it.
func senderCheckCreated(t testing.TB, who string, res senderResult, wantTTL string) {
	t.Helper()
	if res.Status != http.StatusCreated {
		t.Fatalf("%s: status %d, want 201; body %s", who, res.Status, res.Body)
	}
	if loc := res.header("Location"); !strings.Contains(loc, "/m/") {
		t.Errorf("%s: Location %q, want …/m/{id}", who, loc)
	}
	if got := res.header("TTL"); got != wantTTL {
		t.Errorf("%s: TTL %q echoed, want %q", who, got, wantTTL)
	}
}

// --- pushlog listen --------------------------------------------------------------

// senderListener is a `pushlog listen --json` process: a user agent that
// registers one channel, writes the subscription JSON and prints each
// decrypted message as a JSON line.
type senderListener struct {
	Subscription []byte
	msgs         chan senderListenMsg
	logs         *lockedBuffer
	done         chan struct{}
}

type senderListenMsg struct {
	ChannelID string `json:"channelID"`
	Version   string `json:"version"`
	Data      string `json:"data"`
	Binary    bool   `json:"binary"`
	Encoding  string `json:"encoding"`
	Error     string `json:"error"`
}

// bytes returns the decrypted message as listen printed it.
func (m senderListenMsg) bytes() ([]byte, error) {
	if m.Binary {
		if b, err := base64.StdEncoding.DecodeString(m.Data); err == nil {
			return b, nil
		}
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(m.Data, "="))
	}
	return []byte(m.Data), nil
}

// senderListen starts `pushlog listen` bound to serverKey (a v2
// subscription) and waits until it has subscribed, so it is connected.
func senderListen(ctx context.Context, t testing.TB, s *server, serverKey string, count int) *senderListener {
	t.Helper()
	dir := t.TempDir()
	subFile := filepath.Join(dir, "subscription.json")
	args := []string{"listen", "--url", s.WSURL, "--json", "--count", strconv.Itoa(count), "--subscription", subFile}
	if serverKey != "" {
		args = append(args, "--server-key", serverKey)
	}
	cmd := exec.Command(pushlogBin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	l := &senderListener{msgs: make(chan senderListenMsg, 16), logs: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = l.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pushlog listen: %v", err)
	}
	go l.read(stdout)
	go func() { _ = cmd.Wait(); close(l.done) }()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			_ = cmd.Process.Kill()
			<-l.done
		}
		if t.Failed() {
			t.Logf("pushlog listen output:\n%s", l.logs.String())
		}
	})
	for {
		if b, err := os.ReadFile(subFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			l.Subscription = bytes.TrimSpace(b)
			return l
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pushlog listen did not subscribe: %v\n%s\nserver:\n%s", ctx.Err(), l.logs.String(), s.logs.String())
		case <-l.done:
			t.Fatalf("pushlog listen exited before subscribing:\n%s", l.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *senderListener) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m senderListenMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			fmt.Fprintf(l.logs, "(test) stdout line that is not JSON: %q\n", sc.Text())
			continue
		}
		l.msgs <- m
	}
	close(l.msgs)
}

// next waits for the next decrypted message.
func (l *senderListener) next(ctx context.Context, t testing.TB) senderListenMsg {
	t.Helper()
	select {
	case m, ok := <-l.msgs:
		if !ok {
			t.Fatalf("pushlog listen ended before the message arrived:\n%s", l.logs.String())
		}
		return m
	case <-ctx.Done():
		t.Fatalf("no message at pushlog listen: %v\n%s", ctx.Err(), l.logs.String())
	}
	return senderListenMsg{}
}

// expect waits for the next message and checks it is exactly want.
func (l *senderListener) expect(ctx context.Context, t testing.TB, who string, want []byte, encoding string) {
	t.Helper()
	m := l.next(ctx, t)
	if m.Error != "" {
		t.Fatalf("%s: listen could not decrypt: %s", who, m.Error)
	}
	got, err := m.bytes()
	if err != nil {
		t.Fatalf("%s: listen printed undecodable data %q: %v", who, m.Data, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: decrypted %d bytes %q, sent %d bytes %q", who, len(got), got, len(want), want)
	}
	if m.Encoding != encoding {
		t.Errorf("%s: arrived as %q, want %q", who, m.Encoding, encoding)
	}
}

type senderPayload struct {
	Name string
	Body []byte
}

// senderPayloads are the bodies each library sends: text with multi-byte
// UTF-8 and raw binary (every byte value), so "the same bytes" means bytes.
func senderPayloads(who string) []senderPayload {
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	return []senderPayload{
		{"text", []byte(who + " → pushlog: grüße, 🔔 " + senderRandomHex(4))},
		{"binary", bin},
	}
}

// --- the library scenarios --------------------------------------------------------

// TestSenderWebPushNode: npm web-push with its defaults (TTL 4 weeks,
// Urgency normal, `vapid t=…, k=…`) in both content codings.
func TestSenderWebPushNode(t *testing.T) {
	ctx := testContext(t, senderTestTimeout)
	senderNodeModules(t)
	ca := senderNewCA(t)
	s := senderStartTLSServer(t, ca)
	vapid := senderNewVAPID(t)
	for _, enc := range []string{"aes128gcm", "aesgcm"} {
		t.Run(enc, func(t *testing.T) {
			payloads := senderPayloads("npm web-push " + enc)
			l := senderListen(ctx, t, s, vapid.PublicKey, len(payloads))
			for _, p := range payloads {
				res := senderNodeSend(ctx, t, ca, senderJob{Subscription: l.Subscription, Payload: p.Body, VAPID: vapid, Encoding: enc})
				senderCheckCreated(t, "web-push "+p.Name, res, "2419200")
				l.expect(ctx, t, "web-push "+enc+" "+p.Name, p.Body, enc)
			}
		})
	}
}

// TestSenderPywebpush: pywebpush with its defaults: a lowercase `ttl: 0`
// (delivered because listen is connected right now), aes128gcm and
// `vapid t=…,k=…` without a space; then the legacy aesgcm coding.
func TestSenderPywebpush(t *testing.T) {
	ctx := testContext(t, senderTestTimeout)
	senderPython(t)
	ca := senderNewCA(t)
	s := senderStartTLSServer(t, ca)
	vapid := senderNewVAPID(t)
	for _, enc := range []string{"", "aesgcm"} {
		name := enc
		if name == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			payloads := senderPayloads("pywebpush " + name)
			l := senderListen(ctx, t, s, vapid.PublicKey, len(payloads))
			want := enc
			if want == "" {
				want = "aes128gcm"
			}
			for _, p := range payloads {
				res := senderPythonSend(ctx, t, ca, senderJob{Subscription: l.Subscription, Payload: p.Body, VAPID: vapid, Encoding: enc})
				senderCheckCreated(t, "pywebpush "+p.Name, res, "0")
				l.expect(ctx, t, "pywebpush "+name+" "+p.Name, p.Body, want)
			}
		})
	}
}

// TestSenderWebpushGo: webpush-go with its defaults: `TTL: 0`, aes128gcm
// with the body padded to exactly 4096 bytes.
func TestSenderWebpushGo(t *testing.T) {
	ctx := testContext(t, senderTestTimeout)
	ca := senderNewCA(t)
	s := senderStartTLSServer(t, ca)
	vapid := senderNewVAPID(t)
	payloads := senderPayloads("webpush-go")
	l := senderListen(ctx, t, s, vapid.PublicKey, len(payloads))
	for _, p := range payloads {
		res := senderGoSend(ctx, t, ca, l.Subscription, p.Body, vapid, webpushgo.Options{})
		senderCheckCreated(t, "webpush-go "+p.Name, res, "0")
		l.expect(ctx, t, "webpush-go "+p.Name, p.Body, "aes128gcm")
	}
}
