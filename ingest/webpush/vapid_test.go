package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"
	"github.com/golang-jwt/jwt/v5"
)

// splitVAPID pulls t and k out of "vapid t=…, k=…".
func splitVAPID(t *testing.T, h string) (token, key string) {
	t.Helper()
	rest, ok := strings.CutPrefix(h, "vapid ")
	if !ok {
		t.Fatalf("Authorization %q does not start with the vapid scheme", h)
	}
	for _, p := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "t":
			token = v
		case "k":
			key = v
		}
	}
	if token == "" || key == "" {
		t.Fatalf("Authorization %q lacks t or k", h)
	}
	return token, key
}

// verifyVAPID checks a token with golang-jwt, an independent ES256
// implementation, against the public key from k.
func verifyVAPID(t *testing.T, token, key, aud string) jwt.MapClaims {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		t.Fatalf("k is not unpadded base64url: %v", err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(aud), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("golang-jwt rejects the token: %v", err)
	}
	if tok.Header["typ"] != "JWT" || tok.Header["alg"] != "ES256" {
		t.Fatalf("jwt header %v", tok.Header)
	}
	return claims
}

func TestVAPIDAuthorizationVerifies(t *testing.T) {
	k, err := GenerateVAPIDKey()
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(DefaultVAPIDExpiry).Truncate(time.Second)
	h, err := k.Authorization("https://Push.Example.net:8443/wpush/v2/abc", "mailto:ops@example.com", exp)
	if err != nil {
		t.Fatal(err)
	}
	token, key := splitVAPID(t, h)
	if key != k.PublicKeyString() || len(k.PublicKeyBytes()) != 65 || k.PublicKeyBytes()[0] != 4 {
		t.Fatalf("k = %s, public key %s", key, k.PublicKeyString())
	}
	claims := verifyVAPID(t, token, key, "https://push.example.net:8443")
	if claims["sub"] != "mailto:ops@example.com" || claims["exp"] != float64(exp.Unix()) {
		t.Fatalf("claims %v", claims)
	}

	// A flipped signature byte, or another key, fails.
	other, _ := GenerateVAPIDKey()
	if _, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return &other.ECDSA().PublicKey, nil }); err == nil {
		t.Fatal("token verifies under another key")
	}
	sig := []byte(token[strings.LastIndexByte(token, '.')+1:])
	sig[10] ^= 'A' ^ 'B'
	bad := token[:strings.LastIndexByte(token, '.')+1] + string(sig)
	if _, err := jwt.Parse(bad, func(*jwt.Token) (any, error) { return &k.ECDSA().PublicKey, nil }); err == nil {
		t.Fatal("tampered token verifies")
	}
}

func TestVAPIDSubjectOptional(t *testing.T) {
	k, _ := GenerateVAPIDKey()
	token, err := k.Token("http://127.0.0.1:8080/wpush/v1/x", "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	claims := verifyVAPID(t, token, k.PublicKeyString(), "http://127.0.0.1:8080")
	if _, ok := claims["sub"]; ok {
		t.Fatalf("empty sub is sent: %v", claims)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil || len(m) != 2 {
		t.Fatalf("payload %s: %v", payload, err)
	}
}

func TestVAPIDSignRejects(t *testing.T) {
	k, _ := GenerateVAPIDKey()
	if _, err := k.Sign(VAPIDClaims{Expires: time.Now()}); err == nil {
		t.Error("no audience: no error")
	}
	if _, err := k.Sign(VAPIDClaims{Audience: "https://x"}); err == nil {
		t.Error("no expiry: no error")
	}
	if _, err := k.Authorization("not a url", "", time.Now()); err == nil {
		t.Error("bad endpoint: no error")
	}
}

func TestParseVAPIDPrivateKey(t *testing.T) {
	k, _ := GenerateVAPIDKey()
	raw, _ := k.ECDSA().Bytes()
	sec1, _ := x509.MarshalECPrivateKey(k.ECDSA())
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k.ECDSA())
	pemOf := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	good := map[string]string{
		"base64url raw":       k.PrivateKeyString(),
		"base64url padded":    base64.URLEncoding.EncodeToString(raw),
		"standard base64":     base64.StdEncoding.EncodeToString(raw),
		"surrounding space":   "  " + k.PrivateKeyString() + "\n",
		"SEC1 PEM":            pemOf("EC PRIVATE KEY", sec1),
		"PKCS8 PEM":           pemOf("PRIVATE KEY", pkcs8),
		"openssl with params": pemOf("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}) + pemOf("EC PRIVATE KEY", sec1),
	}
	for name, s := range good {
		got, err := ParseVAPIDPrivateKey(s)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.PublicKeyString() != k.PublicKeyString() || got.PrivateKeyString() != k.PrivateKeyString() {
			t.Errorf("%s: different key", name)
		}
	}

	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalECPrivateKey(p384)
	order := "_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE" // n, not reduced
	bad := map[string]string{
		"empty":      "",
		"not base64": "!!!",
		"short":      "AAAA",
		"zero":       base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		"order":      order,
		"public key": k.PublicKeyString(),
		"RSA PEM":    pemOf("PRIVATE KEY", rsaDER),
		"P-384 PEM":  pemOf("EC PRIVATE KEY", p384DER),
		"bad PEM":    pemOf("EC PRIVATE KEY", []byte("junk")),
		"no key PEM": pemOf("CERTIFICATE", []byte("junk")),
	}
	for name, s := range bad {
		if _, err := ParseVAPIDPrivateKey(s); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// Keys printed by webpush-go (and npm web-push, the same format) load here.
func TestVAPIDKeysFromWebpushGo(t *testing.T) {
	priv, pub, err := webpushgo.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseVAPIDPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if k.PublicKeyString() != strings.TrimRight(pub, "=") {
		t.Fatalf("public key %s, webpush-go says %s", k.PublicKeyString(), pub)
	}
}
