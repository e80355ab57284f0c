package ingest

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// The VAPID JWT is parsed here rather than by golang-jwt (still used to
// sign, in ingest/webpush and the tests): for a token seen once, its
// generic path (a map[string]any header, the signature through big.Int
// and an ASN.1 round trip, a second copy of every segment) cost about a
// seventh of crypto/ecdsa's check, and the check itself goes through the
// key's table (vapid_p256.go) once the key has one. The rules are the same: three segments of
// base64url, padded or not (decodeSegment); a JSON object header whose "alg" is exactly
// "ES256"; a JSON claims value; a 64-byte r||s signature.

var (
	errJWTMalformed = errors.New("malformed JWT")
	errJWTAlg       = errors.New("ES256 required")
	errJWTSignature = errors.New("signature does not verify")
)

// es256Headers are the header segments real senders send (npm web-push
// and pywebpush, then golang-jwt and jose's order), recognised without
// decoding; any other header is decoded and read as JSON.
var es256Headers = [...]string{
	"eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9", // {"typ":"JWT","alg":"ES256"}
	"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9", // {"alg":"ES256","typ":"JWT"}
	"eyJhbGciOiJFUzI1NiJ9",                 // {"alg":"ES256"}
}

// vapidJWT is a compact ES256 JWS split once.
type vapidJWT struct {
	signingInput string // header "." claims: what the signature covers
	claims       []byte // the decoded claims JSON
	sig          [64]byte
}

// parseVAPIDJWT splits token and checks its header and signature form.
func parseVAPIDJWT(token string) (vapidJWT, error) {
	var j vapidJWT
	header, rest, ok := strings.Cut(token, ".")
	if !ok {
		return j, errJWTMalformed
	}
	claims, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return j, errJWTMalformed
	}
	j.signingInput = token[:len(header)+1+len(claims)]
	if err := checkJWTHeader(header); err != nil {
		return j, err
	}
	var err error
	if j.claims, err = decodeSegment(claims); err != nil {
		return j, errJWTMalformed
	}
	raw, err := decodeSegment(sig)
	if err != nil {
		return j, errJWTMalformed
	}
	if len(raw) != len(j.sig) {
		return j, errJWTSignature // ES256 signatures are exactly r||s
	}
	copy(j.sig[:], raw)
	return j, nil
}

// checkJWTHeader accepts a header segment whose JSON object has "alg":
// "ES256" (the key matched exactly, as JOSE requires; the last of
// duplicates wins, as encoding/json decides).
func checkJWTHeader(seg string) error {
	for _, h := range es256Headers {
		if seg == h {
			return nil
		}
	}
	raw, err := decodeSegment(seg)
	if err != nil {
		return errJWTMalformed
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return errJWTMalformed
	}
	if alg, ok := jsonString(fields["alg"]); !ok || alg != "ES256" {
		return errJWTAlg
	}
	return nil
}

// decodeSegment decodes a JWS segment exactly as golang-jwt's parser
// with padding allowed did (the rules senders were held to before): a
// segment whose length is not a multiple of 4 gets "=" up to one, then is
// read as padded base64url, so "ab=" is taken and "abc==" is not. A
// segment without "=" (or the line breaks the decoder skips) decodes the
// same as unpadded base64url, read without the padded copy.
func decodeSegment(seg string) ([]byte, error) {
	if !strings.ContainsAny(seg, "=\r\n") {
		return base64.RawURLEncoding.DecodeString(seg)
	}
	if l := len(seg) % 4; l > 0 {
		seg += strings.Repeat("=", 4-l)
	}
	return base64.URLEncoding.DecodeString(seg)
}

// verifyES256 checks sig (r||s) over signingInput with pub. The signature
// goes to ecdsa.VerifyASN1 as DER built here on the stack: ecdsa.Verify
// would take r and s as big.Ints and rebuild that DER on the heap.
func verifyES256(pub *ecdsa.PublicKey, signingInput string, sig *[64]byte) bool {
	digest := sha256.Sum256([]byte(signingInput))
	var der [2 + 2*(2+33)]byte
	n := 2
	for _, half := range [][]byte{sig[:32], sig[32:]} {
		n += putDERInt(der[n:], half)
	}
	der[0], der[1] = 0x30, byte(n-2) // SEQUENCE, short-form length (at most 70)
	return ecdsa.VerifyASN1(pub, digest[:], der[:n])
}

// putDERInt writes the unsigned big-endian b as a DER INTEGER (minimal,
// a zero byte before a set high bit) and returns its length.
func putDERInt(dst, b []byte) int {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	dst[0] = 0x02
	n := 2
	if b[0]&0x80 != 0 {
		dst[n] = 0
		n++
	}
	n += copy(dst[n:], b)
	dst[1] = byte(n - 2)
	return n
}
