package webpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushlog/pushlog/schema"
)

// DefaultVAPIDExpiry is how far ahead senders usually set a VAPID token's exp
// (RFC 8292 allows at most 24 hours).
const DefaultVAPIDExpiry = 12 * time.Hour

// VAPIDKey is an application server's ECDSA P-256 key pair (RFC 8292 §3.2).
type VAPIDKey struct {
	priv *ecdsa.PrivateKey
}

// GenerateVAPIDKey makes a fresh key pair.
func GenerateVAPIDKey() (*VAPIDKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate vapid key: %w", err)
	}
	return &VAPIDKey{priv: priv}, nil
}

// ParseVAPIDPrivateKey reads a private key as the tools print it (base64url
// of the raw 32-byte scalar, padded or not, or standard base64) or as PEM
// ("EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY", as openssl writes them).
func ParseVAPIDPrivateKey(s string) (*VAPIDKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		return parseVAPIDPEM([]byte(s))
	}
	d, err := schema.DecodeBase64(s)
	if err != nil {
		return nil, fmt.Errorf("vapid private key: %w", err)
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, fmt.Errorf("vapid private key: want a 32-byte P-256 scalar (got %d bytes): %w", len(d), err)
	}
	return &VAPIDKey{priv: priv}, nil
}

func parseVAPIDPEM(b []byte) (*VAPIDKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("vapid private key: no EC PRIVATE KEY or PRIVATE KEY block in PEM")
		}
		var key any
		var err error
		switch blk.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		default:
			continue // e.g. "EC PARAMETERS" before the key
		}
		if err != nil {
			return nil, fmt.Errorf("vapid private key: %w", err)
		}
		priv, ok := key.(*ecdsa.PrivateKey)
		if !ok || priv.Curve != elliptic.P256() {
			return nil, errors.New("vapid private key: PEM key is not ECDSA P-256")
		}
		return &VAPIDKey{priv: priv}, nil
	}
}

// PrivateKeyString is the raw private scalar, base64url without padding.
func (k *VAPIDKey) PrivateKeyString() string {
	d, err := k.priv.Bytes()
	if err != nil { // only for keys not on a NIST curve, which we never hold
		panic(fmt.Sprintf("vapid key bytes: %v", err))
	}
	return b64(d)
}

// PublicKeyBytes is the 65-byte uncompressed public point.
func (k *VAPIDKey) PublicKeyBytes() []byte {
	p, err := k.priv.PublicKey.Bytes()
	if err != nil {
		panic(fmt.Sprintf("vapid public key bytes: %v", err))
	}
	return p
}

// PublicKeyString is the public point, base64url without padding: the k=
// parameter and the browser's applicationServerKey.
func (k *VAPIDKey) PublicKeyString() string { return b64(k.PublicKeyBytes()) }

// ECDSA is the key as a crypto/ecdsa private key.
func (k *VAPIDKey) ECDSA() *ecdsa.PrivateKey { return k.priv }

// VAPIDClaims are the JWT claims RFC 8292 §2 uses.
type VAPIDClaims struct {
	Audience string    // origin of the push resource
	Expires  time.Time // at most 24 h ahead
	Subject  string    // optional mailto: or https: contact
}

// Sign returns a compact ES256 JWT with the claims.
func (k *VAPIDKey) Sign(c VAPIDClaims) (string, error) {
	if c.Audience == "" {
		return "", errors.New("vapid: audience is required")
	}
	if c.Expires.IsZero() {
		return "", errors.New("vapid: expiry is required")
	}
	claims := jwt.MapClaims{"aud": c.Audience, "exp": c.Expires.Unix()}
	if c.Subject != "" {
		claims["sub"] = c.Subject
	}
	// golang-jwt writes the header {"alg":"ES256","typ":"JWT"} and the
	// R || S signature JWS wants (RFC 7518 §3.4), the same library ingest
	// verifies with.
	t, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(k.priv)
	if err != nil {
		return "", fmt.Errorf("vapid sign: %w", err)
	}
	return t, nil
}

// Token signs a JWT for a push to endpoint: aud is the endpoint's origin.
func (k *VAPIDKey) Token(endpoint, subject string, expires time.Time) (string, error) {
	aud, err := Origin(endpoint)
	if err != nil {
		return "", fmt.Errorf("vapid audience: %w", err)
	}
	return k.Sign(VAPIDClaims{Audience: aud, Expires: expires, Subject: subject})
}

// Authorization returns the RFC 8292 header value "vapid t=<jwt>, k=<key>"
// for a push to endpoint.
func (k *VAPIDKey) Authorization(endpoint, subject string, expires time.Time) (string, error) {
	t, err := k.Token(endpoint, subject, expires)
	if err != nil {
		return "", err
	}
	return "vapid t=" + t + ", k=" + k.PublicKeyString(), nil
}
