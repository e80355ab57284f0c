package ingest

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The RFC 8292 §2.4 example, as quoted in PROTOCOL.md §2.
const (
	rfcJWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJodHRwczovL3B1c2guZXhhbXBsZS5uZXQiLCJleHAiOjE0NTM1MjM3NjgsInN1YiI6Im1haWx0bzpwdXNoQGV4YW1wbGUuY29tIn0.i3CYb7t4xfxCDquptFOepC9GAu_HLGkMlMuCGSK2rpiUfnK9ojFwDXb1JrErtmysazNjjvW2L9OkSSHzvoD1oA"
	rfcKey = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"
	rfcAud = "https://push.example.net"
	rfcExp = 1453523768
)

func rfcClock() time.Time { return time.Unix(rfcExp-3600, 0) }

func TestRFC8292Vector(t *testing.T) {
	key, err := decodeKey(rfcKey)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		origin string
		now    func() time.Time
		token  string
		key    string
		ok     bool
	}{
		{"verifies before exp", rfcAud, rfcClock, rfcJWT, rfcKey, true},
		{"verifies within skew after exp", rfcAud, func() time.Time { return time.Unix(rfcExp+30, 0) }, rfcJWT, rfcKey, true},
		{"expired with the real clock", rfcAud, time.Now, rfcJWT, rfcKey, false},
		{"another origin", "https://push.example.com", rfcClock, rfcJWT, rfcKey, false},
		{"another port", "https://push.example.net:8443", rfcClock, rfcJWT, rfcKey, false},
		{"flipped signature byte", rfcAud, rfcClock, flip(rfcJWT, len(rfcJWT)-20), rfcKey, false},
		{"flipped claims byte", rfcAud, rfcClock, flip(rfcJWT, 60), rfcKey, false},
		{"flipped key byte", rfcAud, rfcClock, rfcJWT, flip(rfcKey, 30), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := decodeKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			v := newVAPIDVerifier([]string{tc.origin}, tc.now, 0, 0)
			res, aerr := v.verify(tc.token, k)
			if tc.ok != (aerr == nil) {
				t.Fatalf("verify: %v, want ok=%v", aerr, tc.ok)
			}
			if !tc.ok {
				if aerr.status != http.StatusUnauthorized || aerr.errno != 109 {
					t.Errorf("error %v, want 401 errno 109", aerr)
				}
				return
			}
			if res.sub != "mailto:push@example.com" || res.exp.Unix() != rfcExp || res.keyHash != sha256.Sum256(key[:]) {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// TestRFC8292VectorHTTP runs the vector through the handler: a frozen clock
// and PublicURL https://push.example.net accept it on v1 and on the v2
// endpoint bound to its key; the real clock rejects it.
func TestRFC8292VectorHTTP(t *testing.T) {
	key, _ := decodeKey(rfcKey)
	hash := sha256.Sum256(key[:])
	for _, tc := range []struct {
		name   string
		now    func() time.Time
		status int
	}{
		{"frozen clock", rfcClock, http.StatusCreated},
		{"real clock", nil, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.PublicURL = rfcAud; c.Now = tc.now })
			for _, path := range []string{e.endpoint(testUAID, testChannel, nil), e.endpoint(testUAID, testChannel, hash[:])} {
				rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60", "Authorization": "vapid t=" + rfcJWT + ", k=" + rfcKey}, nil)
				if rr.Code != tc.status {
					t.Fatalf("%s: status %d, want %d: %s", path[:10], rr.Code, tc.status, rr.Body)
				}
			}
		})
	}
}

// TestVAPIDCache: a reused JWT is verified once; an expired cache entry is
// refused without a new verification; the cache stays bounded.
func TestVAPIDCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	tv := newTestVAPID(t)
	key, err := decodeKey(tv.k)
	if err != nil {
		t.Fatal(err)
	}
	tok := tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix()})
	// A budget of four entries of this token's size (the later tokens
	// differ by at most a few bytes of exp).
	budget := 4*entrySize(vapidCacheKey{token: tok}, vapidResult{}) + 8
	v := newVAPIDVerifier([]string{testPublicURL}, clock, budget, 0)
	for i := 0; i < 3; i++ {
		if _, aerr := v.verify(tok, key); aerr != nil {
			t.Fatal(aerr)
		}
	}
	if got := v.slowVerifies.Load(); got != 1 {
		t.Fatalf("%d signature verifications for one reused JWT, want 1", got)
	}
	// Another key with the same JWT is a different cache entry and fails.
	other, _ := decodeKey(newTestVAPID(t).k)
	if _, aerr := v.verify(tok, other); aerr == nil {
		t.Fatal("JWT verified under another key")
	}
	now = now.Add(2 * time.Hour)
	if _, aerr := v.verify(tok, key); aerr == nil {
		t.Fatal("cached JWT accepted after exp")
	}
	now = now.Add(-2 * time.Hour)
	for i := 0; i < 10; i++ {
		tok := tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Duration(i+1) * time.Minute).Unix()})
		if _, aerr := v.verify(tok, key); aerr != nil {
			t.Fatal(aerr)
		}
		if n := v.cacheLen(); n > 4 {
			t.Fatalf("cache holds %d entries, bound 4", n)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	cases := []struct {
		in     string
		scheme string
		token  string
		key    string
		ok     bool
	}{
		{"vapid t=a.b.c, k=KEY", "vapid", "a.b.c", "KEY", true},
		{"vapid t=a.b.c,k=KEY", "vapid", "a.b.c", "KEY", true},
		{"VAPID k=KEY, t=a.b.c", "vapid", "a.b.c", "KEY", true},
		{"Vapid  t=a.b.c ,  k=KEY== ", "vapid", "a.b.c", "KEY==", true},
		{"vapid t=a.b.c, k=KEY, x=y, junk", "vapid", "a.b.c", "KEY", true},
		{"vapid t=a.b.c", "vapid", "a.b.c", "", true},
		{"vapid k=KEY", "", "", "", false},
		{"vapid", "", "", "", false},
		{"WebPush a.b.c", "webpush", "a.b.c", "", true},
		{"webpush  a.b.c ", "webpush", "a.b.c", "", true},
		{"Bearer a.b.c", "bearer", "a.b.c", "", true},
		{"Bearer", "", "", "", false},
		{"Basic dXNlcjpwYXNz", "", "", "", false},
		{"", "", "", "", false},
	}
	for _, tc := range cases {
		a, aerr := parseAuthorization(tc.in)
		if tc.ok != (aerr == nil) {
			t.Errorf("%q: err %v, want ok=%v", tc.in, aerr, tc.ok)
			continue
		}
		if tc.ok && (a.scheme != tc.scheme || a.token != tc.token || a.key != tc.key) {
			t.Errorf("%q: got %+v", tc.in, a)
		}
		if !tc.ok && (aerr.status != 401 || aerr.errno != 109) {
			t.Errorf("%q: error %v, want 401/109", tc.in, aerr)
		}
	}
}

func TestDecodeKey(t *testing.T) {
	raw, _ := decodeKey(rfcKey)
	std := stdB64(raw[:])
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{rfcKey, true},
		{rfcKey + "=", true},
		{std, true},
		{strings.TrimRight(std, "="), true},
		{" " + rfcKey + " ", true},
		{rfcKey[:80], false},
		{rfcKey + "AAAA", false},
		{"C" + rfcKey[1:], false}, // first byte not 0x04
		{strings.Replace(rfcKey, "B", "*", 1), false},
		{"", false},
	} {
		k, err := decodeKey(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("%q: err %v, want ok=%v", tc.in, err, tc.ok)
		}
		if tc.ok && k != raw {
			t.Errorf("%q decoded to another key", tc.in)
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://push.example.com", "https://push.example.com"},
		{"https://push.example.com/", "https://push.example.com"},
		{"HTTPS://Push.Example.COM", "https://push.example.com"},
		{"https://push.example.com:443", "https://push.example.com"},
		{"http://127.0.0.1:8082", "http://127.0.0.1:8082"},
		{"http://127.0.0.1:80", "http://127.0.0.1"},
		{"https://[::1]:8443", "https://[::1]:8443"},
		{"https://push.example.com/path", ""},
		{"https://push.example.com?q=1", ""},
		{"https://push.example.com#f", ""},
		{"https://user@push.example.com", ""},
		{"mailto:push@example.com", ""},
		{"ftp://push.example.com", ""},
		{"push.example.com", ""},
		{"", ""},
	} {
		got, ok := normalizeOrigin(tc.in)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.in, got, ok, tc.want)
		}
	}
}
