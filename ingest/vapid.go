package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushlog/pushlog/schema"
)

const (
	// vapidSkew is the clock skew tolerated on exp (RFC 8292 senders set exp
	// from their own clocks).
	vapidSkew = 60 * time.Second
	// vapidMaxAhead is RFC 8292 §2's 24 h limit on exp.
	vapidMaxAhead = 24 * time.Hour
	// keyLen is an uncompressed P-256 point: 0x04 | X | Y.
	keyLen = 65
)

// authHeader is a parsed Authorization header.
type authHeader struct {
	scheme string // "vapid", "webpush" or "bearer" (lowercase)
	token  string // the JWT
	key    string // the k= parameter (vapid scheme); "" when not given
}

// parseAuthorization parses "vapid t=<JWT>, k=<key>" (RFC 8292 §3; scheme
// case-insensitive, space after the comma optional, unknown parameters
// ignored) and the legacy "WebPush <JWT>" / "Bearer <JWT>" forms whose key
// comes from Crypto-Key: p256ecdsa=.
func parseAuthorization(h string) (authHeader, *apiError) {
	h = strings.TrimSpace(h)
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		rest = ""
	}
	rest = strings.TrimSpace(rest)
	var a authHeader
	switch {
	case strings.EqualFold(scheme, "vapid"):
		a.scheme = "vapid"
		for item := range strings.SplitSeq(rest, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok {
				continue
			}
			k = strings.TrimSpace(k)
			v = strings.TrimSpace(v)
			switch {
			case strings.EqualFold(k, "t") && a.token == "":
				a.token = v
			case strings.EqualFold(k, "k") && a.key == "":
				a.key = v
			}
		}
	case strings.EqualFold(scheme, "webpush"):
		a.scheme, a.token = "webpush", rest
	case strings.EqualFold(scheme, "bearer"):
		a.scheme, a.token = "bearer", rest
	default:
		return authHeader{}, unauthorized("Unknown auth scheme")
	}
	if a.token == "" {
		return authHeader{}, unauthorized("Missing VAPID token")
	}
	return a, nil
}

// decodeKey decodes a VAPID public key: base64url or standard base64, padded
// or not (schema.DecodeBase64), 65 bytes starting with 0x04. The length is
// checked before decoding, so a client's oversized key costs nothing.
func decodeKey(s string) ([keyLen]byte, error) {
	var out [keyLen]byte
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if len(s) != base64.RawURLEncoding.EncodedLen(keyLen) {
		return out, errors.New("key length")
	}
	raw, err := schema.DecodeBase64(s)
	if err != nil || len(raw) != keyLen || raw[0] != 4 {
		return out, errors.New("not an uncompressed P-256 point")
	}
	copy(out[:], raw)
	return out, nil
}

// vapidResult is what a verified JWT tells about its sender.
type vapidResult struct {
	exp     time.Time
	sub     string
	keyHash [sha256.Size]byte // SHA-256 of the raw 65-byte key
}

type vapidCacheKey struct {
	token string
	key   [keyLen]byte
}

// vapidSeenSlots is how many once-verified tokens are remembered (512 KiB):
// a reused token's second push finds its first one's mark while fewer
// than about this many other new tokens came in between (9 s of a flood
// of 7,000 fresh tokens a second).
const vapidSeenSlots = 1 << 16

// vapidEntryOverhead is what a cache entry costs beyond its token and sub
// bytes: the map slot, the entry, the key array, string headers, the queue
// slot. The token is also counted with 1/8 more for allocator rounding (Go's
// size classes waste at most 12.5%). Measured: 7,000 distinct 4,000-byte
// tokens in a 16 MiB cache hold 15.6 MB of heap, and an entry with a
// 387-byte token 765 bytes (accounted 844), so the byte bound holds on the
// real heap.
const vapidEntryOverhead = 384

// vapidEntry is one verified (token, key). ref is the CLOCK bit: set on a
// hit without taking the write lock, it buys the entry one more round in
// the eviction queue.
type vapidEntry struct {
	ck   vapidCacheKey
	res  vapidResult
	size int64
	ref  atomic.Bool
}

// vapidVerifier verifies VAPID JWTs (ES256 only) for one origin and caches
// each verified (token, key) pair until its exp, so a sender reusing one JWT
// pays for the signature check twice, not on every push. The cache is
// bounded in bytes (tokens are attacker-sized), evicting in CLOCK order:
// expired entries first, entries hit since their last round get a second
// chance.
//
// A token is cached the second time it is verified, not the first: npm
// web-push and pywebpush sign every push by default, and storing each of
// their tokens cost a copy, a map entry and the eviction of another
// sender's token, for a token that never comes back. seen remembers the
// tokens verified once (a hash each, no pointers for the GC to follow).
type vapidVerifier struct {
	origins  []string // accepted aud values: exact strings, no trailing slash
	now      func() time.Time
	keys     *vapidKeys
	maxBytes int64
	maxSub   int

	mu       sync.RWMutex
	cache    map[vapidCacheKey]*vapidEntry
	queue    []*vapidEntry // insertion order; every cached entry once
	bytes    int64
	inflight map[vapidCacheKey]*vapidCall // being verified: the same token is checked once
	seed     maphash.Seed
	seen     *[vapidSeenSlots]uint64 // hash|1 of a token verified once and not cached

	cacheBytes   atomic.Int64 // mirrors bytes for metrics
	cacheEntries atomic.Int64
	evictions    atomic.Int64
	slowVerifies atomic.Int64 // tokens checked in full (not from the cache)
}

// newVAPIDVerifier accepts aud values equal to one of origins (the
// endpoint origin as a browser serialises it, and as the operator wrote it
// in PublicURL, which is what urlparse-based senders echo).
func newVAPIDVerifier(origins []string, now func() time.Time, maxBytes int64, maxSub int) *vapidVerifier {
	if maxBytes <= 0 {
		maxBytes = DefaultVAPIDCacheBytes
	}
	if maxSub <= 0 {
		maxSub = DefaultMaxVAPIDSub
	}
	return &vapidVerifier{
		origins:  origins,
		now:      now,
		keys:     newVAPIDKeys(vapidKeyCacheBytes, vapidTableBytes),
		maxBytes: maxBytes,
		maxSub:   maxSub,
		cache:    make(map[vapidCacheKey]*vapidEntry),
		inflight: make(map[vapidCacheKey]*vapidCall),
		seed:     maphash.MakeSeed(),
		seen:     new([vapidSeenSlots]uint64),
	}
}

// vapidCall is one signature check in progress; requests carrying the
// same token and key meanwhile wait for its answer instead of repeating
// it (a sender starting many pushes at once with a new JWT).
type vapidCall struct {
	done sync.WaitGroup
	res  vapidResult
	aerr *apiError
}

// verify checks token against the raw public key.
func (v *vapidVerifier) verify(token string, key [keyLen]byte) (vapidResult, *apiError) {
	now := v.now()
	ck := vapidCacheKey{token: token, key: key}
	v.mu.RLock()
	ent, hit := v.cache[ck]
	v.mu.RUnlock()
	if hit {
		return ent.answer(now)
	}
	v.mu.Lock()
	if ent, hit := v.cache[ck]; hit { // stored since the read lock
		v.mu.Unlock()
		return ent.answer(now)
	}
	if c, ok := v.inflight[ck]; ok {
		v.mu.Unlock()
		c.done.Wait()
		return c.res, c.aerr
	}
	// Until verifySlow returns, the answer is a refusal: a panic in it
	// must not leave waiters with an empty success.
	c := &vapidCall{aerr: errVAPIDMalformed}
	c.done.Add(1)
	v.inflight[ck] = c
	v.mu.Unlock()
	v.verifyOnce(c, ck, now)
	return c.res, c.aerr
}

// verifyOnce runs the signature check of an in-flight call, caches a
// success and releases the waiters, whatever happens.
func (v *vapidVerifier) verifyOnce(c *vapidCall, ck vapidCacheKey, now time.Time) {
	defer func() {
		var h uint64
		if c.aerr == nil {
			h = maphash.Comparable(v.seed, ck) // hashed outside the lock: tokens are up to 8 KB
		}
		v.mu.Lock()
		delete(v.inflight, ck)
		if c.aerr == nil && v.seenBeforeLocked(h) {
			ck.token = strings.Clone(ck.token) // do not pin the request's header memory
			v.storeLocked(ck, c.res, now)
		}
		v.mu.Unlock()
		c.done.Done()
	}()
	c.res, c.aerr = v.verifySlow(ck.token, ck.key, now)
}

// seenBeforeLocked reports whether the token of hash h was verified
// before (and forgets it: it is about to be cached), else marks it; v.mu
// is held. A flood of other new tokens can overwrite a mark before the
// token comes back: its sender then pays one more check, never less.
func (v *vapidVerifier) seenBeforeLocked(h uint64) bool {
	slot := &v.seen[(h>>1)%vapidSeenSlots] // not bit 0: the mark sets it
	mark := h | 1                          // never 0, an empty slot
	if *slot == mark {
		*slot = 0
		return true
	}
	*slot = mark
	return false
}

// answer is a cache hit's result: refused once past exp.
func (ent *vapidEntry) answer(now time.Time) (vapidResult, *apiError) {
	if now.After(ent.res.exp.Add(vapidSkew)) {
		// Left in place: the eviction queue drops expired entries
		// first, and its bytes stay counted until then.
		return vapidResult{}, errVAPIDExpired
	}
	ent.ref.Store(true)
	return ent.res, nil
}

// entrySize is the accounted cost of caching res under ck.
func entrySize(ck vapidCacheKey, res vapidResult) int64 {
	return int64(len(ck.token) + len(ck.token)/8 + len(res.sub) + vapidEntryOverhead)
}

// storeLocked caches a verified token; v.mu is held.
func (v *vapidVerifier) storeLocked(ck vapidCacheKey, res vapidResult, now time.Time) {
	size := entrySize(ck, res)
	if size > v.maxBytes {
		return // larger than the whole budget: verify every time
	}
	for v.bytes+size > v.maxBytes && len(v.queue) > 0 {
		v.evictOne(now)
	}
	ent := &vapidEntry{ck: ck, res: res, size: size}
	v.cache[ck] = ent
	v.queue = append(v.queue, ent)
	v.bytes += size
	v.cacheBytes.Store(v.bytes)
	v.cacheEntries.Store(int64(len(v.cache)))
}

// evictOne takes the oldest queued entry: an expired or unreferenced one
// leaves, a referenced one loses its bit and goes to the back. Each entry
// is requeued at most once per round, so the loop in store ends.
func (v *vapidVerifier) evictOne(now time.Time) {
	ent := v.queue[0]
	v.queue[0] = nil
	v.queue = v.queue[1:]
	if ent.ref.Load() && !now.After(ent.res.exp.Add(vapidSkew)) {
		ent.ref.Store(false)
		v.queue = append(v.queue, ent)
		return
	}
	delete(v.cache, ent.ck)
	v.bytes -= ent.size
	v.evictions.Add(1)
	v.cacheBytes.Store(v.bytes)
	v.cacheEntries.Store(int64(len(v.cache)))
}

func (v *vapidVerifier) cacheLen() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.cache)
}

// vapidClaims holds the claims raw so their JSON types are checked here,
// exactly: a NumericDate given as a JSON string, or an audience given as
// a list, is refused (golang-jwt's types would take them).
type vapidClaims struct {
	Aud json.RawMessage `json:"aud"`
	Exp json.RawMessage `json:"exp"`
	Nbf json.RawMessage `json:"nbf"`
	Sub json.RawMessage `json:"sub"`
}

// jsonNumericDate decodes a JSON number (never a string, never null) of
// seconds since the epoch, as encoding/json decodes one into a float64.
func jsonNumericDate(raw json.RawMessage) (time.Time, bool) {
	raw = bytes.TrimSpace(raw)
	if end, ok := scanNumber(raw, 0); !ok || end != len(raw) {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(f, 0) || math.Abs(f) > maxNumericDate {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// maxNumericDate keeps dates inside time.Time's comfortable range (year
// ~33658); anything near it fails the 24 h rule anyway.
const maxNumericDate = 1e12

// jsonString decodes a JSON string (never another type).
func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if s, ok := plainJSONString(raw); ok {
		return s, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// verifySlow checks a token not in the cache: its form, then its
// signature (ES256 over header.claims with the key cache's parsed key),
// then its claims.
func (v *vapidVerifier) verifySlow(token string, raw [keyLen]byte, now time.Time) (vapidResult, *apiError) {
	v.slowVerifies.Add(1)
	key, err := v.keys.get(raw)
	if err != nil {
		return vapidResult{}, errVAPIDKey
	}
	j, err := parseVAPIDJWT(token)
	if err != nil {
		return vapidResult{}, jwtError(err)
	}
	claims, err := decodeClaims(j.claims)
	if err != nil {
		return vapidResult{}, jwtError(errJWTMalformed)
	}
	if !v.keys.verify(key, j.signingInput, &j.sig) {
		return vapidResult{}, jwtError(errJWTSignature)
	}
	res, aerr := v.checkClaims(claims, now)
	if aerr != nil {
		return vapidResult{}, aerr
	}
	res.keyHash = key.hash
	return res, nil
}

// checkClaims applies PROTOCOL.md §2 to a signed JWT's claims: exp and nbf
// JSON numbers, aud a string equal to the origin, sub an optional string
// of at most maxSub bytes.
func (v *vapidVerifier) checkClaims(claims vapidClaims, now time.Time) (vapidResult, *apiError) {
	exp, aerr := v.checkTimes(claims, now)
	if aerr != nil {
		return vapidResult{}, aerr
	}
	if aud, ok := jsonString(claims.Aud); !ok || !slices.Contains(v.origins, aud) {
		return vapidResult{}, unauthorized("Invalid VAPID audience")
	}
	res := vapidResult{exp: exp}
	if claims.Sub != nil {
		// Checked on the raw bytes first: the sub is stored in every
		// event, so an oversized one is refused, never truncated.
		if len(claims.Sub) > 6*v.maxSub+2 { // every byte \u-escaped, quoted
			return vapidResult{}, errSubTooLong
		}
		sub, ok := jsonString(claims.Sub)
		if !ok {
			return vapidResult{}, unauthorized("Invalid VAPID sub: want a string")
		}
		if len(sub) > v.maxSub {
			return vapidResult{}, errSubTooLong
		}
		res.sub = sub
	}
	return res, nil
}

// errSubTooLong is a VAPID failure like any other (401 errno 109,
// autopush's answer to an invalid claim); the reason is counted apart.
var errSubTooLong = unauthorized("VAPID sub too long")

// checkTimes applies RFC 8292's rules to exp (required, a JSON number, not
// past beyond the skew, at most 24 h ahead) and nbf (optional, a number).
func (v *vapidVerifier) checkTimes(claims vapidClaims, now time.Time) (time.Time, *apiError) {
	if claims.Exp == nil || string(bytes.TrimSpace(claims.Exp)) == "null" {
		return time.Time{}, unauthorized("Missing VAPID expiry")
	}
	exp, ok := jsonNumericDate(claims.Exp)
	if !ok {
		return time.Time{}, unauthorized("Invalid VAPID expiry: want a JSON number")
	}
	if now.After(exp.Add(vapidSkew)) {
		return time.Time{}, errVAPIDExpired
	}
	if exp.After(now.Add(vapidMaxAhead + vapidSkew)) {
		return time.Time{}, unauthorized("The VAPID token expiration is too long")
	}
	if claims.Nbf != nil {
		nbf, ok := jsonNumericDate(claims.Nbf)
		if !ok {
			return time.Time{}, unauthorized("Invalid VAPID nbf: want a JSON number")
		}
		if nbf.After(now.Add(vapidSkew)) {
			return time.Time{}, unauthorized("VAPID token not yet valid")
		}
	}
	return exp, nil
}

// The 401s of a token that fails, built once (an attacker's stream of
// bad tokens allocates nothing for them).
var (
	errVAPIDKey       = unauthorized("Invalid VAPID public key")
	errVAPIDExpired   = unauthorized("Invalid VAPID expiry")
	errVAPIDMalformed = unauthorized("Invalid VAPID token: malformed JWT")
	errVAPIDSignature = unauthorized("Invalid VAPID token: signature does not verify")
	errVAPIDAlg       = unauthorized("Invalid VAPID token: ES256 required")
)

// jwtError turns a parse or signature error into its 401.
func jwtError(err error) *apiError {
	switch err {
	case errJWTAlg:
		return errVAPIDAlg
	case errJWTSignature:
		return errVAPIDSignature
	}
	return errVAPIDMalformed
}

// normalizeOrigin returns the origin (lowercase scheme://host[:port], default
// port dropped) of an http(s) URL that has no path beyond "/", no query and no
// fragment.
func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", false
	}
	if u.Path != "" && u.Path != "/" {
		return "", false
	}
	return originOf(u)
}

// originOf returns scheme://host[:port] of an http(s) URL, lowercase, with the
// scheme's default port dropped.
func originOf(u *url.URL) (string, bool) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if host == "" {
		return "", false
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal
	}
	if port != "" {
		return fmt.Sprintf("%s://%s:%s", scheme, host, port), true
	}
	return scheme + "://" + host, true
}
