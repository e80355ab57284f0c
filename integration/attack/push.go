package attack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// pushReq is one POST to a push endpoint. Headers keep their order and
// exact bytes (raw requests send them as given).
type pushReq struct {
	URL     string
	Headers [][2]string
	Body    []byte
}

// do sends p with net/http and returns the status.
func (r *Runner) do(ctx context.Context, p pushReq) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(p.Body))
	if err != nil {
		return 0, nil, fmt.Errorf("push request: %w", err)
	}
	for _, h := range p.Headers {
		req.Header.Add(h[0], h[1])
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("push: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, r.bodyCap))
	return resp.StatusCode, resp.Header, nil
}

// doRaw writes p byte for byte on a new connection: net/http trims header
// values, and some probes are about exactly those bytes.
func (r *Runner) doRaw(ctx context.Context, p pushReq) (int, error) {
	u, err := url.Parse(p.URL)
	if err != nil {
		return 0, fmt.Errorf("raw request: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n", u.RequestURI(), u.Host, len(p.Body))
	for _, h := range p.Headers {
		fmt.Fprintf(&b, "%s:%s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	b.Write(p.Body)
	conn, err := dialRaw(ctx, u)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return 0, fmt.Errorf("raw request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, fmt.Errorf("raw response: %w", err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func dialRaw(ctx context.Context, u *url.URL) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	if u.Scheme == "https" {
		d := tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}}
		return d.DialContext(ctx, "tcp", host)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", host)
}

// signJWT signs claimsJSON (given as bytes, so a test can send claims a
// JSON encoder of typed claims could not, such as exp as a string) with
// ES256 by golang-jwt; header and claims are written out here, so they
// can be anything.
func signJWT(key *ecdsa.PrivateKey, claimsJSON []byte) (string, error) {
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(`{"typ":"JWT","alg":"ES256"}`)) + "." + enc.EncodeToString(claimsJSON)
	sig, err := jwt.SigningMethodES256.Sign(input, key)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// vapidHeader is "vapid t=<jwt>, k=<key>" for claimsJSON.
func vapidHeader(key *webpush.VAPIDKey, claimsJSON []byte) (string, error) {
	t, err := signJWT(key.ECDSA(), claimsJSON)
	if err != nil {
		return "", err
	}
	return "vapid t=" + t + ", k=" + key.PublicKeyString(), nil
}

// claims renders VAPID claims; extra fields (a padding jti) are added.
func claims(aud string, exp time.Time, sub string, extra map[string]any) []byte {
	m := map[string]any{"aud": aud, "exp": exp.Unix()}
	if sub != "" {
		m["sub"] = sub
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m) // strings and numbers always marshal
	return b
}

// attacker is a subscription of the attacker's own (a UAID that said
// hello, registered and left): the target of the HTTP attacks.
type attacker struct {
	endpoint string // as the server issued it (its origin is the VAPID aud)
	url      string // where to POST: the endpoint moved onto the push URL
	keys     *webpush.ReceiverKeys
	vapid    *webpush.VAPIDKey
}

func (a *attacker) subscription() webpush.Subscription { return a.keys.Subscription(a.endpoint) }

func (a *attacker) aud() string {
	o, _ := webpush.Origin(a.endpoint) // the server issued it: it parses
	return o
}

// newAttacker registers a channel on a fresh UAID and leaves.
func (r *Runner) newAttacker(ctx context.Context) (*attacker, error) {
	c, err := dialHello(ctx, r.opts.WSURL, "")
	if err != nil {
		return nil, err
	}
	defer c.close()
	f, err := c.register(ctx, newChannelID())
	if err != nil {
		return nil, err
	}
	if f.Status != 200 || f.PushEndpoint == "" {
		return nil, fmt.Errorf("register answered %s", f.raw)
	}
	target, err := r.target(f.PushEndpoint)
	if err != nil {
		return nil, err
	}
	keys, err := webpush.GenerateReceiverKeys()
	if err != nil {
		return nil, err
	}
	vk, err := webpush.GenerateVAPIDKey()
	if err != nil {
		return nil, err
	}
	return &attacker{endpoint: f.PushEndpoint, url: target, keys: keys, vapid: vk}, nil
}

// repeat sends Count requests made by mk, Concurrency at a time,
// counting answers by HTTP status.
func (r *Runner) repeat(ctx context.Context, res *Result, mk func(a *attacker) (pushReq, error)) error {
	return r.repeatEach(ctx, res, 1, mk)
}

// repeatEach is repeat with each request made by mk sent times times in
// a row (Count requests made, Count·times sent).
func (r *Runner) repeatEach(ctx context.Context, res *Result, times int, mk func(a *attacker) (pushReq, error)) error {
	a, err := r.newAttacker(ctx)
	if err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		next  int
		first error
	)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if next >= r.opts.Count || ctx.Err() != nil || first != nil {
			return false
		}
		next++
		return true
	}
	record := func(kind string, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil && first == nil:
			first = err
		case kind != "":
			res.Sent++
			res.Answers[kind]++
		}
	}
	for range min(r.opts.Concurrency, r.opts.Count) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for take() {
				p, err := mk(a)
				if err != nil {
					record("", err)
					return
				}
				for range times {
					st, _, err := r.do(ctx, p)
					switch {
					case err != nil && ctx.Err() != nil:
						return // cut off by the attack's time bound: not an answer
					case err != nil:
						record("error", nil)
					default:
						record(strconv.Itoa(st), nil)
					}
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// padded grows a header value to size bytes with a parameter the service
// forwards as is.
func padded(value, param string, size int) string {
	n := size - len(value) - len(param) - 2
	if n < 1 {
		n = 1
	}
	return value + ";" + param + "=" + strings.Repeat("A", n)
}

// aesgcmPush is an aesgcm-encrypted push; edit changes its headers.
func aesgcmPush(a *attacker, edit func(enc, ck string) (string, string)) (pushReq, error) {
	m, err := webpush.Encrypt(a.subscription(), []byte("oversized"), webpush.EncryptOptions{Encoding: webpush.AESGCM})
	if err != nil {
		return pushReq{}, fmt.Errorf("encrypt: %w", err)
	}
	enc, ck := edit(m.Encryption, m.CryptoKey)
	return pushReq{URL: a.url, Body: m.Body, Headers: [][2]string{
		{"TTL", "60"}, {"Content-Encoding", webpush.AESGCM}, {"Encryption", enc}, {"Crypto-Key", ck},
	}}, nil
}

func oversizedEncryption(ctx context.Context, r *Runner, res *Result) error {
	return r.repeat(ctx, res, func(a *attacker) (pushReq, error) {
		return aesgcmPush(a, func(enc, ck string) (string, string) {
			return padded(enc, "keyid", r.opts.HeaderSize), ck
		})
	})
}

func oversizedCryptoKey(ctx context.Context, r *Runner, res *Result) error {
	return r.repeat(ctx, res, func(a *attacker) (pushReq, error) {
		return aesgcmPush(a, func(enc, ck string) (string, string) {
			return enc, padded(ck, "keyid", r.opts.HeaderSize)
		})
	})
}

// bodiless is a push without a body signed with claimsJSON.
func bodiless(a *attacker, claimsJSON []byte) (pushReq, error) {
	auth, err := vapidHeader(a.vapid, claimsJSON)
	if err != nil {
		return pushReq{}, err
	}
	return pushReq{URL: a.url, Headers: [][2]string{{"TTL", "0"}, {"Authorization", auth}}}, nil
}

func oversizedSub(ctx context.Context, r *Runner, res *Result) error {
	return r.repeat(ctx, res, func(a *attacker) (pushReq, error) {
		sub := "mailto:" + strings.Repeat("a", r.opts.SubSize) + "@example.com"
		return bodiless(a, claims(a.aud(), time.Now().Add(time.Hour), sub, nil))
	})
}

// vapidCache sends valid tokens, each distinct and about TokenSize bytes
// (a long jti, a claim VAPID ignores), so every one is a new cache entry.
func vapidCache(ctx context.Context, r *Runner, res *Result) error {
	// Each token twice: the service caches a token the second time it
	// verifies it (a token used once never enters the cache).
	return r.repeatEach(ctx, res, 2, func(a *attacker) (pushReq, error) {
		exp := time.Now().Add(time.Hour)
		const sub = "mailto:attack@example.com"
		return bodiless(a, claims(a.aud(), exp, sub, map[string]any{"jti": randomHex(jtiBytes(r.opts.TokenSize, len(claims(a.aud(), exp, sub, nil))))}))
	})
}

// jtiBytes is how many random bytes, in hex, make a token of about
// tokenSize bytes: header and signature take 124 base64 characters, and
// the claims are base64 (4/3), baseClaims long plus `,"jti":"…"`.
func jtiBytes(tokenSize, baseClaims int) int {
	claimsLen := (tokenSize - 124) * 3 / 4
	n := (claimsLen - baseClaims - 9) / 2
	return max(n, 1)
}

// probe is one lenient-parsing probe: a request PROTOCOL.md refuses.
type probe struct {
	name string
	mk   func(a *attacker) (pushReq, error)
}

var probes = []probe{
	{"aud-trailing-slash", func(a *attacker) (pushReq, error) {
		return bodiless(a, claims(a.aud()+"/", time.Now().Add(time.Hour), "mailto:attack@example.com", nil))
	}},
	{"exp-string", func(a *attacker) (pushReq, error) {
		c, _ := json.Marshal(map[string]any{"aud": a.aud(), "exp": strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10), "sub": "mailto:attack@example.com"})
		return bodiless(a, c)
	}},
	{"ttl-plus", func(a *attacker) (pushReq, error) { return ttlProbe(a, "+5") }},
	// Sent raw: the spaces are inside the header value on the wire.
	{"ttl-spaces", func(a *attacker) (pushReq, error) { return ttlProbe(a, ` " 5 "`) }},
}

// ttlProbe is a valid bodiless push but for its TTL header value.
func ttlProbe(a *attacker, ttl string) (pushReq, error) {
	p, err := bodiless(a, claims(a.aud(), time.Now().Add(time.Hour), "mailto:attack@example.com", nil))
	if err != nil {
		return p, err
	}
	p.Headers[0] = [2]string{"TTL", ttl}
	return p, nil
}

// ProbeNames lists the lenient-parsing probes.
func ProbeNames() []string {
	out := make([]string, len(probes))
	for i, p := range probes {
		out[i] = p.name
	}
	return out
}

// lenientProbes sends each probe once (raw, so the header bytes are
// exactly the probe's): answers are "probe status".
func lenientProbes(ctx context.Context, r *Runner, res *Result) error {
	a, err := r.newAttacker(ctx)
	if err != nil {
		return err
	}
	for _, p := range probes {
		req, err := p.mk(a)
		if err != nil {
			return err
		}
		res.Sent++
		st, err := r.doRaw(ctx, req)
		if err != nil {
			res.Answers[p.name+" error"]++
			continue
		}
		res.Answers[p.name+" "+strconv.Itoa(st)]++
	}
	return nil
}

// liveHeap forces a GC on the server's debug listener and reads its live
// heap from /debug/stats.
func (r *Runner) liveHeap(ctx context.Context) (int64, error) {
	if r.opts.StatsURL == "" {
		return 0, fmt.Errorf("no stats URL")
	}
	gc := strings.TrimSuffix(r.opts.StatsURL, "/debug/stats") + "/debug/gc"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gc, nil)
	if err != nil {
		return 0, err
	}
	if resp, err := r.http.Do(req); err == nil {
		resp.Body.Close()
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, r.opts.StatsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("stats: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		HeapAlloc int64 `json:"heap_alloc"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, r.bodyCap)).Decode(&st); err != nil {
		return 0, fmt.Errorf("stats: %w", err)
	}
	return st.HeapAlloc, nil
}
