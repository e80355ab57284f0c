package ingest

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSizeLimits (issue 10 finding 3): each client-controlled size is
// accepted at its limit and refused one byte past it, refusals are counted
// by reason, and what is accepted is stored as sent.
func TestSizeLimits(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e := newEnv(t, func(c *Config) { c.Metrics = reg })
	v1 := e.endpoint(testUAID, testChannel, nil)
	now := time.Now()
	signedSub := func(sub string) string {
		return "vapid t=" + e.vapid.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "sub": sub}) + ", k=" + e.vapid.k
	}
	const dh = "BDw9T0eImd4ax818VcYqDK_DOhcuDswKeroYyNkdhYm"
	// Encryption + Crypto-Key of exactly n bytes together.
	crypto := func(n int) map[string]string {
		enc := "salt=abc;pad="
		ck := "dh=" + dh
		enc += strings.Repeat("a", n-len(enc)-len(ck))
		return map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Encryption": enc, "Crypto-Key": ck}
	}
	sub256 := "mailto:" + strings.Repeat("s", 249)
	ok := []struct {
		name string
		hdr  map[string]string
		body int
		sub  string
	}{
		{"crypto headers of 1024 bytes", crypto(1024), 100, ""},
		{"sub of 256 bytes", map[string]string{"TTL": "60", "Authorization": signedSub(sub256)}, 0, sub256},
		{"body at MaxBody with the largest crypto headers and sub", func() map[string]string {
			h := crypto(1024)
			h["Authorization"] = signedSub(sub256)
			return h
		}(), DefaultMaxBody, sub256},
	}
	for _, tc := range ok {
		body := randomBody(t, tc.body)
		rr := e.do(http.MethodPost, v1, tc.hdr, body)
		if rr.Code != http.StatusCreated {
			t.Fatalf("%s: %d %s", tc.name, rr.Code, rr.Body)
		}
		m := e.openLocation(rr.Header().Get("Location"))
		rec, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset)
		ma := ev.GetMessageAccepted()
		if !bytes.Equal(ma.GetPayload(), body) || ma.GetVapidSub() != tc.sub {
			t.Errorf("%s: stored %d bytes, sub %q", tc.name, len(ma.GetPayload()), ma.GetVapidSub())
		}
		if n := recordSize(rec); n > DefaultMaxEvent {
			t.Errorf("%s: record of %d bytes above MaxEvent", tc.name, n)
		}
	}
	refused := []struct {
		name   string
		hdr    map[string]string
		body   int
		status int
	}{
		{"crypto headers of 1025 bytes", crypto(1025), 100, 413},
		{"sub of 257 bytes", map[string]string{"TTL": "60", "Authorization": signedSub(sub256 + "s")}, 0, 401},
		{"token of 4097 bytes", map[string]string{"TTL": "60", "Authorization": "vapid t=" + strings.Repeat("a", 4097) + ", k=" + e.vapid.k}, 0, 401},
		{"body of 5631 bytes", map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"}, DefaultMaxBody + 1, 413},
	}
	for _, tc := range refused {
		before := e.srv.produceCalls.Load()
		rr := e.do(http.MethodPost, v1, tc.hdr, randomBody(t, tc.body))
		if rr.Code != tc.status {
			t.Fatalf("%s: %d, want %d: %s", tc.name, rr.Code, tc.status, rr.Body)
		}
		if e.srv.produceCalls.Load() != before {
			t.Errorf("%s: produced", tc.name)
		}
	}
	want := `
# HELP pushlog_ingest_oversize_refusals_total Pushes refused because a client-controlled size passed its limit, by reason: body, crypto_headers, vapid_token, vapid_sub, event.
# TYPE pushlog_ingest_oversize_refusals_total counter
pushlog_ingest_oversize_refusals_total{reason="body"} 1
pushlog_ingest_oversize_refusals_total{reason="crypto_headers"} 1
pushlog_ingest_oversize_refusals_total{reason="event"} 0
pushlog_ingest_oversize_refusals_total{reason="vapid_sub"} 1
pushlog_ingest_oversize_refusals_total{reason="vapid_token"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_ingest_oversize_refusals_total"); err != nil {
		t.Fatal(err)
	}
}

// TestVAPIDAudience: aud must be exactly the endpoint origin, as browsers
// serialise it or as PublicURL spells it; never with a trailing slash.
func TestVAPIDAudience(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PublicURL = "https://Push.Example.com:443/base/" })
	v1 := e.endpoint(testUAID, testChannel, nil)
	for _, tc := range []struct {
		aud string
		ok  bool
	}{
		{"https://push.example.com", true},
		{"https://Push.Example.com:443", true},
		{"https://push.example.com/", false},
		{"https://Push.Example.com:443/", false},
		{"https://PUSH.example.com", false},
		{"https://push.example.com:443", false},
		{"https://push.example.com/base", false},
		{"http://push.example.com", false},
	} {
		auth := "vapid t=" + e.vapid.jwt(t, jwt.MapClaims{"aud": tc.aud, "exp": time.Now().Add(time.Hour).Unix()}) + ", k=" + e.vapid.k
		rr := e.do(http.MethodPost, v1, map[string]string{"TTL": "60", "Authorization": auth}, nil)
		if (rr.Code == http.StatusCreated) != tc.ok {
			t.Errorf("aud %q: %d, want ok=%v", tc.aud, rr.Code, tc.ok)
		}
	}
}

// TestVAPIDExpNumber: exp and nbf are JSON numbers, integral or not.
func TestVAPIDExpNumber(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tv := newTestVAPID(t)
	key, _ := decodeKey(tv.k)
	v := newVAPIDVerifier([]string{testPublicURL}, func() time.Time { return now }, 0, 0)
	exp := now.Add(time.Hour).Unix()
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		ok     bool
	}{
		{"integer", jwt.MapClaims{"aud": testPublicURL, "exp": exp}, true},
		{"fraction", jwt.MapClaims{"aud": testPublicURL, "exp": float64(exp) + 0.5}, true},
		{"string", jwt.MapClaims{"aud": testPublicURL, "exp": strconv.FormatInt(exp, 10)}, false},
		{"bool", jwt.MapClaims{"aud": testPublicURL, "exp": true}, false},
		{"huge", jwt.MapClaims{"aud": testPublicURL, "exp": 1e300}, false},
		{"negative", jwt.MapClaims{"aud": testPublicURL, "exp": -1}, false},
		{"nbf number", jwt.MapClaims{"aud": testPublicURL, "exp": exp, "nbf": now.Unix()}, true},
		{"nbf in the future", jwt.MapClaims{"aud": testPublicURL, "exp": exp, "nbf": now.Add(10 * time.Minute).Unix()}, false},
		{"sub absent", jwt.MapClaims{"aud": testPublicURL, "exp": exp}, true},
		{"sub null", jwt.MapClaims{"aud": testPublicURL, "exp": exp, "sub": nil}, false},
	} {
		_, aerr := v.verify(tv.jwt(t, tc.claims), key)
		if (aerr == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, aerr, tc.ok)
		}
		if aerr != nil && (aerr.status != 401 || aerr.errno != 109) {
			t.Errorf("%s: %v, want 401/109", tc.name, aerr)
		}
	}
}

// TestVAPIDCacheBytes (issue 10 finding 3): distinct large tokens keep the
// cache within its byte budget, evictions are counted, and a token reused
// since its last eviction round survives (CLOCK second chance).
func TestVAPIDCacheBytes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tv := newTestVAPID(t)
	key, _ := decodeKey(tv.k)
	const budget = 64 << 10
	v := newVAPIDVerifier([]string{testPublicURL}, func() time.Time { return now }, budget, 0)
	token := func(i int) string {
		return tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "i": i, "pad": strings.Repeat("p", 3000)})
	}
	// Each token is used twice: a token is cached the second time.
	hot := token(-1)
	for range 2 {
		if _, aerr := v.verify(hot, key); aerr != nil {
			t.Fatal(aerr)
		}
	}
	for i := range 200 {
		tok := token(i)
		for range 2 {
			if _, aerr := v.verify(tok, key); aerr != nil {
				t.Fatal(aerr)
			}
		}
		if _, aerr := v.verify(hot, key); aerr != nil {
			t.Fatal(aerr)
		}
		if b := v.cacheBytes.Load(); b > budget {
			t.Fatalf("cache holds %d bytes, budget %d", b, budget)
		}
	}
	if v.evictions.Load() == 0 || v.cacheLen() < 10 {
		t.Fatalf("evictions %d, entries %d", v.evictions.Load(), v.cacheLen())
	}
	if got := v.slowVerifies.Load(); got != 402 {
		t.Errorf("%d signature checks for 201 distinct tokens used twice, want 402: the hot token was evicted", got)
	}
	// An expired entry is refused and goes first.
	now = now.Add(2 * time.Hour)
	if _, aerr := v.verify(hot, key); aerr == nil {
		t.Fatal("expired cached token accepted")
	}
	// A token larger than the whole budget is verified but not cached.
	small := newVAPIDVerifier([]string{testPublicURL}, func() time.Time { return now }, 1000, 0)
	big := tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "pad": strings.Repeat("p", 1000)})
	for range 3 {
		if _, aerr := small.verify(big, key); aerr != nil {
			t.Fatal(aerr)
		}
	}
	if small.cacheLen() != 0 || small.slowVerifies.Load() != 3 {
		t.Errorf("oversized entry cached: %d entries", small.cacheLen())
	}
}
