package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// vapidSkew is the clock skew tolerated on exp (RFC 8292 senders set exp
	// from their own clocks).
	vapidSkew = 60 * time.Second
	// vapidMaxAhead is RFC 8292 §2's 24 h limit on exp.
	vapidMaxAhead = 24 * time.Hour
	// keyLen is an uncompressed P-256 point: 0x04 | X | Y.
	keyLen = 65
	// maxSubLen bounds the recorded sender identity.
	maxSubLen = 256
	// defaultVAPIDCacheSize bounds the verified-JWT cache.
	defaultVAPIDCacheSize = 10000
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
// or not, 65 bytes starting with 0x04.
func decodeKey(s string) ([keyLen]byte, error) {
	var out [keyLen]byte
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if len(s) != base64.RawURLEncoding.EncodedLen(keyLen) {
		return out, errors.New("key length")
	}
	enc := base64.RawURLEncoding
	if strings.ContainsAny(s, "+/") {
		enc = base64.RawStdEncoding
	}
	n, err := enc.Decode(out[:], []byte(s))
	if err != nil || n != keyLen || out[0] != 4 {
		return out, errors.New("not an uncompressed P-256 point")
	}
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

// vapidVerifier verifies VAPID JWTs (ES256 only) for one origin and caches
// each verified (token, key) pair until its exp, so a sender reusing one JWT
// pays for the signature check once.
type vapidVerifier struct {
	origin string
	now    func() time.Time
	parser *jwt.Parser
	max    int

	mu    sync.RWMutex
	cache map[vapidCacheKey]vapidResult

	slowVerifies atomic.Int64 // signature checks done (tests: the cache works)
}

func newVAPIDVerifier(origin string, now func() time.Time, maxEntries int) *vapidVerifier {
	if maxEntries <= 0 {
		maxEntries = defaultVAPIDCacheSize
	}
	return &vapidVerifier{
		origin: origin,
		now:    now,
		// Claims are checked below with our own clock and rules; the parser
		// only checks the signature and pins the algorithm.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
			jwt.WithoutClaimsValidation(), jwt.WithPaddingAllowed()),
		max:   maxEntries,
		cache: make(map[vapidCacheKey]vapidResult),
	}
}

// verify checks token against the raw public key.
func (v *vapidVerifier) verify(token string, key [keyLen]byte) (vapidResult, *apiError) {
	now := v.now()
	ck := vapidCacheKey{token: token, key: key}
	v.mu.RLock()
	res, hit := v.cache[ck]
	v.mu.RUnlock()
	if hit {
		if now.After(res.exp.Add(vapidSkew)) {
			v.mu.Lock()
			delete(v.cache, ck)
			v.mu.Unlock()
			return vapidResult{}, unauthorized("Invalid VAPID expiry")
		}
		return res, nil
	}
	res, aerr := v.verifySlow(token, key, now)
	if aerr != nil {
		return vapidResult{}, aerr
	}
	ck.token = strings.Clone(token) // do not pin the request's header memory
	v.store(ck, res, now)
	return res, nil
}

func (v *vapidVerifier) store(ck vapidCacheKey, res vapidResult, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= v.max {
		for k, r := range v.cache {
			if now.After(r.exp.Add(vapidSkew)) {
				delete(v.cache, k)
			}
		}
		// Still full of live entries: drop an arbitrary half (map order
		// is random) rather than grow without bound.
		for k := range v.cache {
			if len(v.cache) < v.max/2 {
				break
			}
			delete(v.cache, k)
		}
	}
	v.cache[ck] = res
}

func (v *vapidVerifier) cacheLen() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.cache)
}

func (v *vapidVerifier) verifySlow(token string, key [keyLen]byte, now time.Time) (vapidResult, *apiError) {
	v.slowVerifies.Add(1)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), key[:])
	if err != nil {
		return vapidResult{}, unauthorized("Invalid VAPID public key")
	}
	var claims jwt.RegisteredClaims
	_, err = v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return pub, nil })
	if err != nil {
		return vapidResult{}, unauthorized(jwtMessage(err))
	}
	if claims.ExpiresAt == nil {
		return vapidResult{}, unauthorized("Missing VAPID expiry")
	}
	exp := claims.ExpiresAt.Time
	if now.After(exp.Add(vapidSkew)) {
		return vapidResult{}, unauthorized("Invalid VAPID expiry")
	}
	if exp.After(now.Add(vapidMaxAhead + vapidSkew)) {
		return vapidResult{}, unauthorized("The VAPID token expiration is too long")
	}
	if claims.NotBefore != nil && claims.NotBefore.After(now.Add(vapidSkew)) {
		return vapidResult{}, unauthorized("VAPID token not yet valid")
	}
	if len(claims.Audience) != 1 {
		return vapidResult{}, unauthorized("Invalid VAPID audience")
	}
	if aud, ok := normalizeOrigin(claims.Audience[0]); !ok || aud != v.origin {
		return vapidResult{}, unauthorized("Invalid VAPID audience")
	}
	res := vapidResult{exp: exp, keyHash: sha256.Sum256(key[:])}
	if sub := claims.Subject; len(sub) <= maxSubLen && utf8.ValidString(sub) {
		res.sub = sub
	}
	return res, nil
}

// jwtMessage turns a golang-jwt error into a short, stable 401 message.
func jwtMessage(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "Invalid VAPID token: malformed JWT"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "Invalid VAPID token: signature does not verify"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "Invalid VAPID token: ES256 required"
	}
	return "Invalid VAPID token"
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
