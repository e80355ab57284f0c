package ingest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"filippo.io/nistec"
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

// TestVAPIDCache: a reused JWT is verified twice (a token is cached the
// second time it is verified), then answered from the cache; an expired
// cache entry is refused without a new verification; the cache stays
// bounded.
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
	for i := 0; i < 4; i++ {
		if _, aerr := v.verify(tok, key); aerr != nil {
			t.Fatal(aerr)
		}
		if got, want := v.cacheLen(), min(i, 1); got != want {
			t.Fatalf("after %d uses %d cached tokens, want %d", i+1, got, want)
		}
	}
	if got := v.slowVerifies.Load(); got != 2 {
		t.Fatalf("%d signature verifications for one JWT used 4 times, want 2", got)
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
		for range 2 {
			if _, aerr := v.verify(tok, key); aerr != nil {
				t.Fatal(aerr)
			}
		}
		if n := v.cacheLen(); n > 4 {
			t.Fatalf("cache holds %d entries, bound 4", n)
		}
	}
}

// TestVAPIDSeenSlots: the once-verified marks use every slot (bit 0 of
// the hash is the mark's, not the index's), and a mark is forgotten when
// the token comes back.
func TestVAPIDSeenSlots(t *testing.T) {
	v := newVAPIDVerifier([]string{testPublicURL}, time.Now, 0, 0)
	for _, tc := range []struct {
		h    uint64
		slot int
		seen bool
	}{
		{0, 0, false}, {2, 1, false}, {0, 0, true}, {1, 0, false}, {1 << 17, 0, false}, {1, 0, false},
		{2*vapidSeenSlots - 2, vapidSeenSlots - 1, false}, {3, 1, true},
	} {
		if got := v.seenBeforeLocked(tc.h); got != tc.seen {
			t.Fatalf("h=%#x: seen %v, want %v", tc.h, got, tc.seen)
		}
		if want := tc.h | 1; !tc.seen && v.seen[tc.slot] != want {
			t.Fatalf("h=%#x: slot %d holds %#x, want %#x", tc.h, tc.slot, v.seen[tc.slot], want)
		}
		if tc.seen && v.seen[tc.slot] != 0 {
			t.Fatalf("h=%#x: slot %d not cleared", tc.h, tc.slot)
		}
	}
}

// TestVAPIDCacheAdmission: tokens used once (a sender signing every push)
// are never cached, so a flood of them neither grows the cache nor evicts
// a reused token.
func TestVAPIDCacheAdmission(t *testing.T) {
	p := freshJWTs(t, testPublicURL, 2000)
	v := newVAPIDVerifier([]string{testPublicURL}, time.Now, 0, 0)
	hot := p.tokens[0]
	for i, tok := range p.tokens {
		for _, tk := range []string{tok, hot} {
			if _, aerr := v.verify(tk, p.key); aerr != nil {
				t.Fatalf("token %d: %v", i, aerr)
			}
		}
	}
	if n := v.cacheLen(); n != 1 {
		t.Errorf("%d tokens cached, want 1 (the reused one)", n)
	}
	if n, want := v.slowVerifies.Load(), int64(len(p.tokens)+1); n != want {
		t.Errorf("%d signature checks, want %d (each token once, the reused one twice)", n, want)
	}
	if v.evictions.Load() != 0 {
		t.Errorf("%d evictions", v.evictions.Load())
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

// TestP256TableMult: the table's k·Q equals nistec's constant-time
// ScalarMult for random and edge scalars (k ≥ n included: Q has order n).
func TestP256TableMult(t *testing.T) {
	tv := newTestVAPID(t)
	tab, err := newP256Table(tv.raw)
	if err != nil {
		t.Fatal(err)
	}
	q, err := nistec.NewP256Point().SetBytes(tv.raw)
	if err != nil {
		t.Fatal(err)
	}
	scalars := [][32]byte{{}, {31: 1}, {31: 32}, {31: 33}, {31: 63}, {31: 64}, {0: 0x80}}
	var ones, nMinus1, n [32]byte
	for i := range ones {
		ones[i] = 0xff
	}
	new(big.Int).Sub(p256Order, big.NewInt(1)).FillBytes(nMinus1[:])
	p256Order.FillBytes(n[:])
	scalars = append(scalars, ones, nMinus1, n)
	for range 200 {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			t.Fatal(err)
		}
		scalars = append(scalars, k)
	}
	for _, k := range scalars {
		want, err := nistec.NewP256Point().ScalarMult(q, k[:])
		if err != nil {
			t.Fatal(err)
		}
		if got := tab.mult(&k); got.Equal(want) != 1 {
			t.Errorf("k=%x: table product differs from ScalarMult", k)
		}
	}
}

// TestP256TableVerify: the table's check agrees with crypto/ecdsa on valid
// signatures (both s and n-s), flipped bits, out-of-range r and s, another
// message and another key.
func TestP256TableVerify(t *testing.T) {
	tv := newTestVAPID(t)
	tab, err := newP256Table(tv.raw)
	if err != nil {
		t.Fatal(err)
	}
	other := newTestVAPID(t)
	sign := func(priv *ecdsa.PrivateKey, msg string) [64]byte {
		d := sha256.Sum256([]byte(msg))
		r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		var sig [64]byte
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	}
	withS := func(sig [64]byte, s *big.Int) [64]byte {
		s.FillBytes(sig[32:])
		return sig
	}
	withR := func(sig [64]byte, r *big.Int) [64]byte {
		r.FillBytes(sig[:32])
		return sig
	}
	n := p256Order
	for i := range 50 {
		msg := "header.claims-" + strings.Repeat("x", i)
		sig := sign(tv.priv, msg)
		s := new(big.Int).SetBytes(sig[32:])
		flipped := sig
		flipped[i%64] ^= 1 << (i % 8)
		cases := []struct {
			name string
			msg  string
			sig  [64]byte
		}{
			{"valid", msg, sig},
			{"valid with n-s", msg, withS(sig, new(big.Int).Sub(n, s))},
			{"flipped bit", msg, flipped},
			{"other message", msg + ".", sig},
			{"other key's signature", msg, sign(other.priv, msg)},
			{"r = 0", msg, withR(sig, new(big.Int))},
			{"s = 0", msg, withS(sig, new(big.Int))},
			{"r = n", msg, withR(sig, n)},
			{"s = n", msg, withS(sig, n)},
			{"s + n", msg, withS(sig, new(big.Int).Add(s, n).Mod(new(big.Int).Add(s, n), new(big.Int).Lsh(big.NewInt(1), 256)))},
			{"zero signature", msg, [64]byte{}},
			{"u1·G + u2·Q at infinity", msg, withR(sig, infinityR(t, tv.priv, msg))},
		}
		for _, tc := range cases {
			want := verifyES256(&tv.priv.PublicKey, tc.msg, &tc.sig)
			if got := tab.verify(tc.msg, &tc.sig); got != want {
				t.Fatalf("%d %s: table %v, crypto/ecdsa %v", i, tc.name, got, want)
			}
			if tc.name == "valid" && !want {
				t.Fatalf("%d: valid signature refused", i)
			}
		}
	}
}

// TestP256TableDoubling: a signature whose two products are the same
// point (u1·G = u2·Q, so the final sum is a doubling), made with the
// private key: r = x(k·G) mod n, e = r·d, s = 2e/k gives u1 = u2·d = k/2.
// The check agrees with crypto/ecdsa (both accept).
func TestP256TableDoubling(t *testing.T) {
	tv := newTestVAPID(t)
	tab, err := newP256Table(tv.raw)
	if err != nil {
		t.Fatal(err)
	}
	db, err := tv.priv.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	n, d := p256Order, new(big.Int).SetBytes(db)
	be := func(x *big.Int) (b [32]byte) {
		x.FillBytes(b[:])
		return b
	}
	for i := range 20 {
		k, err := rand.Int(rand.Reader, n)
		if err != nil || k.Sign() == 0 {
			continue
		}
		kb := be(k)
		R, err := nistec.NewP256Point().ScalarBaseMult(kb[:])
		if err != nil {
			t.Fatal(err)
		}
		xb, err := R.BytesX()
		if err != nil {
			t.Fatal(err)
		}
		r := new(big.Int).SetBytes(xb)
		r.Mod(r, n)
		e := new(big.Int).Mul(r, d)
		e.Mod(e, n)
		sv := new(big.Int).ModInverse(k, n)
		sv.Mul(sv, e).Lsh(sv, 1).Mod(sv, n)
		if r.Sign() == 0 || sv.Sign() == 0 {
			continue
		}
		eb, rb, sb := be(e), be(r), be(sv)
		u1, u2 := p256Scalars(&eb, &rb, &sb)
		half := new(big.Int).Mul(k, new(big.Int).ModInverse(big.NewInt(2), n))
		if u1 != be(half.Mod(half, n)) {
			t.Fatalf("%d: u1 is not k/2: the construction is wrong", i)
		}
		want := ecdsa.Verify(&tv.priv.PublicKey, eb[:], r, sv)
		if got := tab.check(&u1, &u2, &rb); got != want || !want {
			t.Fatalf("%d: table %v, crypto/ecdsa %v, want both true", i, got, want)
		}
	}
}

// infinityR returns the r that puts R = u1·G + u2·Q at the point at
// infinity for any s: u1 + u2·d = w·(e + r·d) ≡ 0, so r = -e·d⁻¹ mod n
// (a forger who knew d could aim there; both checks must refuse).
func infinityR(t *testing.T, priv *ecdsa.PrivateKey, msg string) *big.Int {
	t.Helper()
	db, err := priv.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d := new(big.Int).SetBytes(db)
	digest := sha256.Sum256([]byte(msg))
	e := new(big.Int).SetBytes(digest[:])
	r := new(big.Int).ModInverse(d, p256Order)
	r.Mul(r, e).Neg(r).Mod(r, p256Order)
	return r
}

// FuzzP256Table: for any signature over any input, the table's check and
// crypto/ecdsa's agree (seeded with valid signatures, which the fuzzer
// mutates).
func FuzzP256Table(f *testing.F) {
	tv := newTestVAPID(f)
	tab, err := newP256Table(tv.raw)
	if err != nil {
		f.Fatal(err)
	}
	for _, msg := range []string{"a.b", "eyJhbGciOiJFUzI1NiJ9.e30", ""} {
		d := sha256.Sum256([]byte(msg))
		r, s, err := ecdsa.Sign(rand.Reader, tv.priv, d[:])
		if err != nil {
			f.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		f.Add(msg, sig)
	}
	f.Fuzz(func(t *testing.T, msg string, raw []byte) {
		var sig [64]byte
		copy(sig[:], raw)
		if got, want := tab.verify(msg, &sig), verifyES256(&tv.priv.PublicKey, msg, &sig); got != want {
			t.Fatalf("table %v, crypto/ecdsa %v", got, want)
		}
	})
}

// TestVAPIDKeyTable: a key gets its table after vapidTableAfter valid
// signatures; tokens then still verify through it, forged ones do not,
// and the table's bytes are accounted.
func TestVAPIDKeyTable(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tv := newTestVAPID(t)
	key, _ := decodeKey(tv.k)
	v := newVAPIDVerifier([]string{testPublicURL}, func() time.Time { return now }, 0, 0)
	token := func(i int) string {
		return tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "jti": i})
	}
	for i := range vapidTableAfter + 10 {
		if _, aerr := v.verify(token(i), key); aerr != nil {
			t.Fatalf("token %d: %v", i, aerr)
		}
		if has := v.keys.tableCount() == 1; has != (i+1 >= vapidTableAfter) {
			t.Fatalf("after %d tokens: %d tables", i+1, v.keys.tableCount())
		}
	}
	if v.keys.tableBytes() != p256TableBytes {
		t.Errorf("table bytes %d, want %d", v.keys.tableBytes(), p256TableBytes)
	}
	forged := token(-1)
	if _, aerr := v.verify(flip(forged, len(forged)-5), key); aerr == nil {
		t.Fatal("flipped signature accepted through the table")
	}
	if _, aerr := v.verify(flip(forged, 60), key); aerr == nil {
		t.Fatal("flipped claims accepted through the table")
	}
	if _, aerr := v.verify(forged, key); aerr != nil {
		t.Fatal(aerr)
	}
	if n := int(unsafe.Sizeof(p256Table{})); n > p256TableBytes {
		t.Errorf("a table is %d bytes, accounted %d", n, p256TableBytes)
	}
}

// TestVAPIDKeyTableBound: tables stay within their budget, the least
// recently used goes, and its key earns one again from scratch.
func TestVAPIDKeyTableBound(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	k := newVAPIDKeys(vapidKeyCacheBytes, 2*p256TableBytes)
	keys := make([]*vapidKey, 3)
	for i := range keys {
		tv := newTestVAPID(t)
		raw, _ := decodeKey(tv.k)
		key, err := k.get(raw)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = key
		for j := range vapidTableAfter {
			tok := tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": now.Unix(), "jti": j})
			jt, err := parseVAPIDJWT(tok)
			if err != nil {
				t.Fatal(err)
			}
			if !k.verify(key, jt.signingInput, &jt.sig) {
				t.Fatal("valid signature refused")
			}
		}
	}
	if k.tableCount() != 2 || k.tableEvictions.Load() != 1 {
		t.Fatalf("%d tables, %d evictions; want 2, 1", k.tableCount(), k.tableEvictions.Load())
	}
	if keys[0].table.Load() != nil || keys[0].valid.Load() != 0 || keys[0].building.Load() {
		t.Error("the evicted key kept its table or its count")
	}
	if keys[2].table.Load() == nil {
		t.Error("the last key has no table")
	}
}

// TestVAPIDKeyEntryBytes: the accounted size of a cached key covers its
// heap, measured over many keys (the least of three rounds: other tests'
// goroutines winding down can only add to one round's figure).
func TestVAPIDKeyEntryBytes(t *testing.T) {
	const n = 2000
	raws := make([][keyLen]byte, n)
	for i := range raws {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := priv.PublicKey.Bytes()
		copy(raws[i][:], b)
	}
	least := int64(1 << 30)
	for range 3 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		k := newVAPIDKeys(n*vapidKeyEntryBytes, p256TableBytes)
		for _, raw := range raws {
			if _, err := k.get(raw); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if k.entries() != n {
			t.Fatalf("%d keys cached, want %d", k.entries(), n)
		}
		least = min(least, (int64(after.HeapAlloc)-int64(before.HeapAlloc))/n)
		runtime.KeepAlive(k)
	}
	t.Logf("%d bytes of heap per cached key", least)
	if least > vapidKeyEntryBytes {
		t.Errorf("a cached key holds %d bytes of heap, accounted %d", least, vapidKeyEntryBytes)
	}
}

// TestVAPIDConcurrentOnce: requests arriving together with one new token
// wait for one signature check instead of each making their own.
func TestVAPIDConcurrentOnce(t *testing.T) {
	tv := newTestVAPID(t)
	key, _ := decodeKey(tv.k)
	tok := tv.jwt(t, jwt.MapClaims{"aud": testPublicURL, "exp": time.Now().Add(time.Hour).Unix()})
	v := newVAPIDVerifier([]string{testPublicURL}, time.Now, 0, 0)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if _, aerr := v.verify(tok, key); aerr != nil {
				t.Error(aerr)
			}
		})
	}
	wg.Wait()
	// Requests that arrive after the first check ended make the second
	// (the token is cached the second time it is verified).
	if n := v.slowVerifies.Load(); n < 1 || n > 2 {
		t.Errorf("%d signature checks for one token sent 64 times at once, want 1 or 2", n)
	}
	if _, aerr := v.verify(tok, key); aerr != nil { // cached by now
		t.Fatal(aerr)
	}
	if n := v.slowVerifies.Load(); n > 2 {
		t.Errorf("%d signature checks for one token sent 65 times, want at most 2", n)
	}
	// A bad token is refused to every waiter, and not cached.
	bad := flip(tok, len(tok)-3)
	for range 8 {
		wg.Go(func() {
			if _, aerr := v.verify(bad, key); aerr == nil {
				t.Error("forged token accepted")
			}
		})
	}
	wg.Wait()
	if v.cacheLen() != 1 {
		t.Errorf("%d cached tokens, want 1", v.cacheLen())
	}
}

// TestParseVAPIDJWT: the JWS forms accepted and refused, with their 401
// reason (PROTOCOL.md §2: ES256 only).
func TestParseVAPIDJWT(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(rfcJWT, ".")
	claims, sig := parts[1], parts[2]
	pad := func(s string) string { return s + strings.Repeat("=", (4-len(s)%4)%4) }
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"RFC 8292 example", rfcJWT, nil},
		{"alg then typ", b64([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + claims + "." + sig, nil},
		{"alg only", b64([]byte(`{"alg":"ES256"}`)) + "." + claims + "." + sig, nil},
		{"header with kid and spaces", b64([]byte(` { "kid" : "x", "alg" : "ES256" } `)) + "." + claims + "." + sig, nil},
		{"padded segments", pad(parts[0]) + "." + pad(claims) + "." + pad(sig), nil},
		{"two segments", parts[0] + "." + claims, errJWTMalformed},
		{"four segments", rfcJWT + ".x", errJWTMalformed},
		{"empty", "", errJWTMalformed},
		{"header not base64", "*." + claims + "." + sig, errJWTMalformed},
		{"header not an object", b64([]byte(`["ES256"]`)) + "." + claims + "." + sig, errJWTMalformed},
		{"header null", b64([]byte(`null`)) + "." + claims + "." + sig, errJWTMalformed},
		{"header of 2 KB", b64([]byte(`{"alg":"ES256","x":"`+strings.Repeat("a", 2048)+`"}`)) + "." + claims + "." + sig, nil}, // bounded by MaxVAPIDToken alone, as before
		{"signature short of one pad (golang-jwt's rule)", parts[0] + "." + claims + "." + sig + "=", nil},
		{"alg HS256", b64([]byte(`{"alg":"HS256"}`)) + "." + claims + "." + sig, errJWTAlg},
		{"alg none", b64([]byte(`{"alg":"none"}`)) + "." + claims + "." + sig, errJWTAlg},
		{"alg not a string", b64([]byte(`{"alg":1}`)) + "." + claims + "." + sig, errJWTAlg},
		{"alg in other case", b64([]byte(`{"ALG":"ES256"}`)) + "." + claims + "." + sig, errJWTAlg},
		{"alg given twice, last HS256", b64([]byte(`{"alg":"ES256","alg":"HS256"}`)) + "." + claims + "." + sig, errJWTAlg},
		{"no alg", b64([]byte(`{"typ":"JWT"}`)) + "." + claims + "." + sig, errJWTAlg},
		{"claims not base64", parts[0] + ".+++." + sig, errJWTMalformed},
		{"claims badly padded", parts[0] + "." + claims + "===." + sig, errJWTMalformed},
		{"signature not base64", parts[0] + "." + claims + ".+" + sig[1:], errJWTMalformed},
		{"signature of 63 bytes", parts[0] + "." + claims + "." + b64(make([]byte, 63)), errJWTSignature},
		{"signature DER", parts[0] + "." + claims + "." + b64(make([]byte, 70)), errJWTSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := parseVAPIDJWT(tc.token)
			if err != tc.want {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if err == nil && !strings.HasPrefix(tc.token, j.signingInput+".") {
				t.Errorf("signing input %q", j.signingInput)
			}
		})
	}
	// Through the verifier: each reason is a 401 errno 109.
	key, _ := decodeKey(rfcKey)
	v := newVAPIDVerifier([]string{rfcAud}, rfcClock, 0, 0)
	for _, tok := range []string{"a.b", b64([]byte(`{"alg":"HS256"}`)) + "." + claims + "." + sig, flip(rfcJWT, len(rfcJWT)-2)} {
		if _, aerr := v.verify(tok, key); aerr == nil || aerr.status != http.StatusUnauthorized || aerr.errno != 109 {
			t.Errorf("%q: %v, want 401 errno 109", tok, aerr)
		}
	}
}

// TestPutDERInt: minimal DER INTEGERs of 32-byte unsigned values.
func TestPutDERInt(t *testing.T) {
	for _, tc := range []struct {
		in   [32]byte
		want []byte
	}{
		{[32]byte{}, []byte{2, 1, 0}},
		{[32]byte{31: 1}, []byte{2, 1, 1}},
		{[32]byte{31: 0x80}, []byte{2, 2, 0, 0x80}},
		{[32]byte{0: 0x80}, append([]byte{2, 33, 0, 0x80}, make([]byte, 31)...)},
		{[32]byte{0: 0x7f}, append([]byte{2, 32, 0x7f}, make([]byte, 31)...)},
	} {
		var dst [35]byte
		n := putDERInt(dst[:], tc.in[:])
		if !bytes.Equal(dst[:n], tc.want) {
			t.Errorf("%x: %x, want %x", tc.in, dst[:n], tc.want)
		}
	}
}

// TestP256Scalars: nistec's scalar arithmetic gives math/big's u1 and u2,
// digests at or above n included.
func TestP256Scalars(t *testing.T) {
	be := func(x *big.Int) (b [32]byte) {
		x.FillBytes(b[:])
		return b
	}
	one := big.NewInt(1)
	nMinus1 := new(big.Int).Sub(p256Order, one)
	top := new(big.Int).Sub(new(big.Int).Lsh(one, 256), one)
	edges := []*big.Int{one, big.NewInt(2), nMinus1, new(big.Int).Rsh(p256Order, 1)}
	digests := []*big.Int{new(big.Int), one, nMinus1, p256Order, new(big.Int).Add(p256Order, one), top}
	var cases [][3][32]byte
	for _, e := range digests {
		for _, r := range edges {
			for _, s := range edges {
				cases = append(cases, [3][32]byte{be(e), be(r), be(s)})
			}
		}
	}
	for range 500 {
		var c [3][32]byte
		for i := range c {
			_, _ = rand.Read(c[i][:])
		}
		for i := 1; i < 3; i++ { // r and s in [1, n-1]
			x := new(big.Int).SetBytes(c[i][:])
			c[i] = be(x.Mod(x, nMinus1).Add(x, one))
		}
		cases = append(cases, c)
	}
	for _, c := range cases {
		e, r, s := new(big.Int).SetBytes(c[0][:]), new(big.Int).SetBytes(c[1][:]), new(big.Int).SetBytes(c[2][:])
		w := new(big.Int).ModInverse(s, p256Order)
		want1 := be(new(big.Int).Mod(new(big.Int).Mul(e, w), p256Order))
		want2 := be(new(big.Int).Mod(new(big.Int).Mul(r, w), p256Order))
		u1, u2 := p256Scalars(&c[0], &c[1], &c[2])
		if u1 != want1 || u2 != want2 {
			t.Fatalf("e=%x r=%x s=%x: u1=%x u2=%x, want %x %x", c[0], c[1], c[2], u1, u2, want1, want2)
		}
	}
}
