package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// golangJWTVerify is the VAPID check as it was before the JWT was parsed
// here (86c8888): golang-jwt's parser, ES256 only, padding allowed, then
// the same claim rules. The differential tests hold the new parser to it.
func golangJWTVerify(v *vapidVerifier, token string, raw [keyLen]byte, now time.Time) (vapidResult, bool) {
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw[:])
	if err != nil {
		return vapidResult{}, false
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithoutClaimsValidation(), jwt.WithPaddingAllowed())
	var claims oldVAPIDClaims
	if _, err := parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
		return vapidResult{}, false
	}
	res, aerr := v.checkClaims(vapidClaims(claims), now)
	if aerr != nil {
		return vapidResult{}, false
	}
	res.keyHash = sha256.Sum256(raw[:])
	return res, true
}

// oldVAPIDClaims is vapidClaims with the jwt.Claims getters the old parser
// needed (never called: claims validation off).
type oldVAPIDClaims vapidClaims

func (oldVAPIDClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (oldVAPIDClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (oldVAPIDClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (oldVAPIDClaims) GetIssuer() (string, error)                   { return "", nil }
func (oldVAPIDClaims) GetSubject() (string, error)                  { return "", nil }
func (oldVAPIDClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// signSegments signs header "." claims (segments as given, padded or not)
// with priv and returns the r||s signature, base64url unpadded.
func signSegments(t testing.TB, priv *ecdsa.PrivateKey, input string) string {
	t.Helper()
	sig, err := jwt.SigningMethodES256.Sign(input, priv)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(sig)
}

// sigForm rewrites a valid signature segment: the forms a sender (or an
// attacker) may send.
func sigForm(sig string, form byte) string {
	switch form % 8 {
	case 1:
		return sig + "=="
	case 2:
		return sig + "="
	case 3:
		return sig + "==="
	case 4:
		return flip(sig, len(sig)/2)
	case 5:
		return sig[:len(sig)-1]
	case 6:
		return strings.ReplaceAll(strings.ReplaceAll(sig, "-", "+"), "_", "/")
	case 7:
		// r and s as big.Int bytes: a high-bit-free r loses its leading
		// zero byte (a signer bug the old parser refused too).
		raw, _ := base64.RawURLEncoding.DecodeString(sig)
		r := new(big.Int).SetBytes(raw[:32]).Bytes()
		return base64.RawURLEncoding.EncodeToString(append(r, raw[32:]...))
	}
	return sig
}

// FuzzVAPIDAgainstGolangJWT: every token, signed over whatever header and
// claims segments the fuzzer makes (any base64, padding, JSON), is accepted
// by the verifier exactly when golang-jwt's parser with the same claim
// rules accepts it, with the same result. (Refusals are all 401 errno 109;
// their messages may differ, e.g. "alg":"HS256" was "signature does not
// verify" and is now "ES256 required".)
func FuzzVAPIDAgainstGolangJWT(f *testing.F) {
	b64 := base64.RawURLEncoding.EncodeToString
	now := time.Unix(1_700_000_000, 0)
	good := `{"aud":"https://push.example.net","exp":1700003600,"sub":"mailto:a@example.com"}`
	for _, s := range [][2]string{
		{"eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9", b64([]byte(good))},
		{b64([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "==", b64([]byte(good)) + "="},
		{b64([]byte(`{"alg":"ES256"}`)), b64([]byte(good + " "))},
		{b64([]byte(`{"alg":"ES256","alg":"HS256"}`)), b64([]byte(good))},
		{b64([]byte(`{"alg":"HS256","alg":"ES256"}`)), b64([]byte(good))},
		{b64([]byte(`{"ALG":"ES256"}`)), b64([]byte(good))},
		{b64([]byte(`{"Alg":"ES256","alg":"ES256"}`)), b64([]byte(good))},
		{b64([]byte(`{"alg":"es256"}`)), b64([]byte(good))},
		{b64([]byte(`{"alg":"ES256","typ":"JOSE","kid":"` + strings.Repeat("k", 1500) + `"}`)), b64([]byte(good))},
		{b64([]byte(`{"alg":"\u0045S256"}`)), b64([]byte(good))},
		{b64([]byte(`null`)), b64([]byte(good))},
		{b64([]byte(`{"alg":"ES256"}`)), b64([]byte(`{"AUD":"https://push.example.net","Exp":1700003600}`))},
		{b64([]byte(`{"alg":"ES256"}`)), b64([]byte(`{"aud":"x","aud":"https://push.example.net","exp":1700003600}`))},
		{b64([]byte(`{"alg":"ES256"}`)), b64([]byte(good + `{}`))},
		{b64([]byte(`{"alg":"ES256"}`)), b64([]byte(`null`))},
		{b64([]byte(`{"alg":"ES256"}`)), base64.URLEncoding.EncodeToString([]byte(good))},
		{b64([]byte(`{"alg":"ES256"}`)), base64.StdEncoding.EncodeToString([]byte(good))},
		{b64([]byte(`{"alg":"ES256"}`)) + "=", b64([]byte(good))},
		{b64([]byte(`{"alg":"ES256"}`)) + "\n", b64([]byte(good))},
	} {
		for form := range byte(8) {
			f.Add(s[0], s[1], form)
		}
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	rawKey, _ := priv.PublicKey.Bytes()
	key := [keyLen]byte(rawKey)
	f.Fuzz(func(t *testing.T, header, claims string, form byte) {
		if len(header)+len(claims) > DefaultMaxVAPIDToken {
			return
		}
		input := header + "." + claims
		token := input + "." + sigForm(signSegments(t, priv, input), form)
		v := newVAPIDVerifier([]string{"https://push.example.net"}, func() time.Time { return now }, 0, 0)
		want, wantOK := golangJWTVerify(v, token, key, now)
		got, aerr := v.verify(token, key)
		if (aerr == nil) != wantOK {
			t.Fatalf("%q: new accepts %v (%v), golang-jwt %v", token, aerr == nil, aerr, wantOK)
		}
		if wantOK && (got.sub != want.sub || !got.exp.Equal(want.exp) || got.keyHash != want.keyHash) {
			t.Fatalf("%q: new %+v, golang-jwt %+v", token, got, want)
		}
	})
}
