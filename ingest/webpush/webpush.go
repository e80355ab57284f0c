package webpush

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/pushlog/pushlog/schema"
)

// AuthSecretSize is the length of a subscription's auth secret (RFC 8291 §3.2).
const AuthSecretSize = 16

// Subscription is the JSON form of a PushSubscription (what the browser's
// toJSON() gives and what sender libraries take).
type Subscription struct {
	Endpoint string           `json:"endpoint"`
	Keys     SubscriptionKeys `json:"keys"`
}

// SubscriptionKeys holds the user agent's public key and auth secret,
// base64url without padding.
type SubscriptionKeys struct {
	P256dh string `json:"p256dh"`
	Auth   string `json:"auth"`
}

// ParseSubscription decodes and checks subscription JSON: an absolute
// http(s) endpoint, a P-256 public key and a 16-byte auth secret.
func ParseSubscription(data []byte) (Subscription, error) {
	var s Subscription
	if err := json.Unmarshal(data, &s); err != nil {
		return Subscription{}, fmt.Errorf("subscription json: %w", err)
	}
	if _, err := Origin(s.Endpoint); err != nil {
		return Subscription{}, fmt.Errorf("subscription endpoint: %w", err)
	}
	if _, _, err := s.decodeKeys(); err != nil {
		return Subscription{}, err
	}
	return s, nil
}

func (s Subscription) decodeKeys() (*ecdh.PublicKey, []byte, error) {
	if s.Keys.P256dh == "" || s.Keys.Auth == "" {
		return nil, nil, errors.New("subscription keys: p256dh and auth are required")
	}
	pub, err := ParsePublicKey(s.Keys.P256dh)
	if err != nil {
		return nil, nil, fmt.Errorf("subscription keys.p256dh: %w", err)
	}
	auth, err := schema.DecodeBase64(s.Keys.Auth)
	if err != nil {
		return nil, nil, fmt.Errorf("subscription keys.auth: %w", err)
	}
	if len(auth) != AuthSecretSize {
		return nil, nil, fmt.Errorf("subscription keys.auth: %d bytes, want %d", len(auth), AuthSecretSize)
	}
	return pub, auth, nil
}

// ParsePublicKey decodes a base64url (or base64) uncompressed P-256 point.
func ParsePublicKey(s string) (*ecdh.PublicKey, error) {
	b, err := schema.DecodeBase64(s)
	if err != nil {
		return nil, err
	}
	pub, err := ecdh.P256().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("not an uncompressed P-256 point (%d bytes): %w", len(b), err)
	}
	return pub, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ReceiverKeys are a user agent's keys for one subscription.
type ReceiverKeys struct {
	Private *ecdh.PrivateKey
	Auth    []byte
}

// GenerateReceiverKeys makes a fresh ECDH P-256 key pair and auth secret.
func GenerateReceiverKeys() (*ReceiverKeys, error) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate p256dh key: %w", err)
	}
	auth := make([]byte, AuthSecretSize)
	if _, err := rand.Read(auth); err != nil {
		return nil, fmt.Errorf("generate auth secret: %w", err)
	}
	return &ReceiverKeys{Private: priv, Auth: auth}, nil
}

// ParseReceiverKeys decodes a base64url private scalar (32 bytes) and auth
// secret, as PrivateKeyString and AuthString print them.
func ParseReceiverKeys(private, auth string) (*ReceiverKeys, error) {
	d, err := schema.DecodeBase64(private)
	if err != nil {
		return nil, fmt.Errorf("receiver private key: %w", err)
	}
	priv, err := ecdh.P256().NewPrivateKey(d)
	if err != nil {
		return nil, fmt.Errorf("receiver private key: %w", err)
	}
	a, err := schema.DecodeBase64(auth)
	if err != nil {
		return nil, fmt.Errorf("auth secret: %w", err)
	}
	if len(a) != AuthSecretSize {
		return nil, fmt.Errorf("auth secret: %d bytes, want %d", len(a), AuthSecretSize)
	}
	return &ReceiverKeys{Private: priv, Auth: a}, nil
}

// PrivateKeyString is the private scalar, base64url.
func (k *ReceiverKeys) PrivateKeyString() string { return b64(k.Private.Bytes()) }

// AuthString is the auth secret, base64url.
func (k *ReceiverKeys) AuthString() string { return b64(k.Auth) }

// PublicKeyString is the uncompressed public point, base64url (p256dh).
func (k *ReceiverKeys) PublicKeyString() string { return b64(k.Private.PublicKey().Bytes()) }

// Subscription is the subscription JSON a sender needs for these keys.
func (k *ReceiverKeys) Subscription(endpoint string) Subscription {
	return Subscription{Endpoint: endpoint, Keys: SubscriptionKeys{P256dh: k.PublicKeyString(), Auth: k.AuthString()}}
}

// Message is an encrypted push message as it travels: the body and the
// headers a receiver needs to decrypt it.
type Message struct {
	Encoding   string // Content-Encoding: AES128GCM or AESGCM
	Body       []byte
	Encryption string // aesgcm only: Encryption header, "salt=…[;rs=…]"
	CryptoKey  string // aesgcm only: Crypto-Key header, "dh=…"
}

// Header returns the HTTP headers that carry m's encoding parameters.
func (m *Message) Header() http.Header {
	h := http.Header{}
	h.Set("Content-Encoding", m.Encoding)
	if m.Encryption != "" {
		h.Set("Encryption", m.Encryption)
	}
	if m.CryptoKey != "" {
		h.Set("Crypto-Key", m.CryptoKey)
	}
	return h
}

// EncryptOptions tune Encrypt. The zero value is aes128gcm, 4096-byte
// records, no padding, random salt and sender key.
type EncryptOptions struct {
	Encoding   string // AES128GCM (default) or AESGCM
	RecordSize uint32 // default DefaultRecordSize
	Padding    int    // zero octets to add (hides the plaintext length)
	// Salt and SenderKey fix the otherwise random values, only to reproduce
	// published test vectors. Never reuse them for real messages.
	Salt      []byte
	SenderKey *ecdh.PrivateKey
}

// Encrypt encrypts plaintext for a subscription. An aes128gcm message is a
// single record (RFC 8291 §4), so plaintext plus padding must fit in
// RecordSize-17 bytes.
func Encrypt(sub Subscription, plaintext []byte, opts EncryptOptions) (*Message, error) {
	uaPub, auth, err := sub.decodeKeys()
	if err != nil {
		return nil, err
	}
	if opts.RecordSize == 0 {
		opts.RecordSize = DefaultRecordSize
	}
	if opts.Padding < 0 {
		return nil, fmt.Errorf("negative padding %d", opts.Padding)
	}
	salt := opts.Salt
	if salt == nil {
		salt = make([]byte, saltSize)
		if _, err := rand.Read(salt); err != nil {
			return nil, fmt.Errorf("salt: %w", err)
		}
	}
	if len(salt) != saltSize {
		return nil, fmt.Errorf("salt must be %d bytes, got %d", saltSize, len(salt))
	}
	sender := opts.SenderKey
	if sender == nil {
		if sender, err = ecdh.P256().GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("sender key: %w", err)
		}
	}
	secret, err := sender.ECDH(uaPub)
	if err != nil {
		return nil, fmt.Errorf("ecdh: %w", err)
	}
	switch opts.Encoding {
	case "", AES128GCM:
		return encryptAES128GCM(secret, auth, uaPub.Bytes(), sender.PublicKey().Bytes(), salt, plaintext, opts)
	case AESGCM:
		return encryptAESGCM(secret, auth, uaPub.Bytes(), sender.PublicKey().Bytes(), salt, plaintext, opts)
	default:
		return nil, fmt.Errorf("unsupported content encoding %q (want %s or %s)", opts.Encoding, AES128GCM, AESGCM)
	}
}

// webPushIKM is RFC 8291 §3.3's input keying material.
func webPushIKM(secret, auth, uaPub, asPub []byte) ([]byte, error) {
	info := make([]byte, 0, 14+len(uaPub)+len(asPub))
	info = append(info, "WebPush: info\x00"...)
	info = append(info, uaPub...)
	info = append(info, asPub...)
	return hkdf.Key(sha256.New, secret, auth, string(info), 32)
}

func encryptAES128GCM(secret, auth, uaPub, asPub, salt, plaintext []byte, opts EncryptOptions) (*Message, error) {
	if maxLen := int(opts.RecordSize) - tagSize - 1; len(plaintext)+opts.Padding > maxLen {
		return nil, fmt.Errorf("message of %d bytes (+%d padding) does not fit one %d-byte record (at most %d)",
			len(plaintext), opts.Padding, opts.RecordSize, maxLen)
	}
	ikm, err := webPushIKM(secret, auth, uaPub, asPub)
	if err != nil {
		return nil, fmt.Errorf("derive ikm: %w", err)
	}
	body, err := EncryptContent(ikm, salt, asPub, opts.RecordSize, plaintext, opts.Padding)
	if err != nil {
		return nil, err
	}
	return &Message{Encoding: AES128GCM, Body: body}, nil
}

// aesgcmKeys derives the legacy coding's key and nonce
// (draft-ietf-webpush-encryption-04 §3, draft-ietf-httpbis-encryption-encoding-03).
func aesgcmKeys(secret, auth, uaPub, asPub, salt []byte) (aeadNonce, error) {
	ikm, err := hkdf.Key(sha256.New, secret, auth, "Content-Encoding: auth\x00", 32)
	if err != nil {
		return aeadNonce{}, fmt.Errorf("derive ikm: %w", err)
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return aeadNonce{}, fmt.Errorf("hkdf extract: %w", err)
	}
	var ctx []byte
	ctx = append(ctx, "P-256\x00"...)
	ctx = binary.BigEndian.AppendUint16(ctx, uint16(len(uaPub)))
	ctx = append(ctx, uaPub...)
	ctx = binary.BigEndian.AppendUint16(ctx, uint16(len(asPub)))
	ctx = append(ctx, asPub...)
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aesgcm\x00"+string(ctx), 16)
	if err != nil {
		return aeadNonce{}, fmt.Errorf("derive content key: %w", err)
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00"+string(ctx), 12)
	if err != nil {
		return aeadNonce{}, fmt.Errorf("derive nonce: %w", err)
	}
	aead, err := newGCM(cek)
	return aeadNonce{aead, nonce}, err
}

const aesgcmPadSize = 2 // each aesgcm record starts with a 16-bit padding length

func encryptAESGCM(secret, auth, uaPub, asPub, salt, plaintext []byte, opts EncryptOptions) (*Message, error) {
	rs := int(opts.RecordSize)
	if rs <= aesgcmPadSize {
		return nil, fmt.Errorf("aesgcm record size %d must be above %d", rs, aesgcmPadSize)
	}
	k, err := aesgcmKeys(secret, auth, uaPub, asPub, salt)
	if err != nil {
		return nil, err
	}
	var body []byte
	data, padding := plaintext, opts.Padding
	full := false
	for seq := uint64(0); seq == 0 || len(data) > 0 || padding > 0 || full; seq++ {
		p := min(padding, rs-aesgcmPadSize, 0xffff)
		n := min(len(data), rs-aesgcmPadSize-p)
		rec := make([]byte, 0, aesgcmPadSize+p+n)
		rec = binary.BigEndian.AppendUint16(rec, uint16(p))
		rec = append(rec, make([]byte, p)...)
		rec = append(rec, data[:n]...)
		data, padding = data[n:], padding-p
		// A body may not end on a record boundary (that reads as truncated),
		// so a full last record is followed by an empty one.
		full = len(rec) == rs
		body = k.aead.Seal(body, recordNonce(k.nonce, seq), rec, nil)
	}
	m := &Message{Encoding: AESGCM, Body: body, Encryption: "salt=" + b64(salt), CryptoKey: "dh=" + b64(asPub)}
	if opts.RecordSize != DefaultRecordSize {
		m.Encryption += ";rs=" + strconv.FormatUint(uint64(opts.RecordSize), 10)
	}
	return m, nil
}

type aeadNonce struct {
	aead  cipher.AEAD
	nonce []byte
}

// Decrypt decrypts a message sent to these keys.
func (k *ReceiverKeys) Decrypt(m Message) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(m.Encoding)) {
	case AES128GCM:
		return k.decryptAES128GCM(m.Body)
	case AESGCM:
		return k.decryptAESGCM(m)
	default:
		return nil, decryptErr("unsupported content encoding %q", m.Encoding)
	}
}

func (k *ReceiverKeys) decryptAES128GCM(body []byte) ([]byte, error) {
	h, off, err := ParseHeader(body)
	if err != nil {
		return nil, err
	}
	asPub, err := ecdh.P256().NewPublicKey(h.KeyID)
	if err != nil {
		return nil, decryptErr("keyid is not the sender's P-256 public key (%d bytes)", len(h.KeyID))
	}
	secret, err := k.Private.ECDH(asPub)
	if err != nil {
		return nil, decryptErr("ecdh: %v", err)
	}
	ikm, err := webPushIKM(secret, k.Auth, k.Private.PublicKey().Bytes(), h.KeyID)
	if err != nil {
		return nil, fmt.Errorf("derive ikm: %w", err)
	}
	return decryptRecords(ikm, h, body[off:])
}

func (k *ReceiverKeys) decryptAESGCM(m Message) ([]byte, error) {
	salt, rs, keyID, err := parseEncryption(m.Encryption)
	if err != nil {
		return nil, err
	}
	dh, err := findDH(m.CryptoKey, keyID)
	if err != nil {
		return nil, err
	}
	asPub, err := ecdh.P256().NewPublicKey(dh)
	if err != nil {
		return nil, decryptErr("Crypto-Key dh is not a P-256 public key (%d bytes)", len(dh))
	}
	secret, err := k.Private.ECDH(asPub)
	if err != nil {
		return nil, decryptErr("ecdh: %v", err)
	}
	keys, err := aesgcmKeys(secret, k.Auth, k.Private.PublicKey().Bytes(), dh, salt)
	if err != nil {
		return nil, err
	}
	chunk := rs + tagSize
	body := m.Body
	switch {
	case len(body) == 0:
		return nil, decryptErr("empty aesgcm body")
	case len(body)%chunk == 0:
		return nil, decryptErr("aesgcm body of %d bytes ends on a record boundary (truncated)", len(body))
	}
	var plain []byte
	for seq := uint64(0); len(body) > 0; seq++ {
		n := min(chunk, len(body))
		rec := body[:n]
		body = body[n:]
		if len(rec) < tagSize+aesgcmPadSize {
			return nil, decryptErr("record %d of %d bytes is too short", seq, len(rec))
		}
		p, err := keys.aead.Open(nil, recordNonce(keys.nonce, seq), rec, nil)
		if err != nil {
			return nil, decryptErr("record %d does not authenticate", seq)
		}
		pad := int(binary.BigEndian.Uint16(p))
		if pad > len(p)-aesgcmPadSize {
			return nil, decryptErr("record %d: padding length %d exceeds the record", seq, pad)
		}
		if !allZero(p[aesgcmPadSize : aesgcmPadSize+pad]) {
			return nil, decryptErr("record %d: non-zero padding", seq)
		}
		plain = append(plain, p[aesgcmPadSize+pad:]...)
	}
	return plain, nil
}

func allZero(b []byte) bool {
	return len(bytes.Trim(b, "\x00")) == 0
}

// headerParams splits a header value into comma-separated groups of
// semicolon-separated key=value parameters, unquoting values.
func headerParams(v string) []map[string]string {
	var groups []map[string]string
	for _, g := range strings.Split(v, ",") {
		m := map[string]string{}
		for _, p := range strings.Split(g, ";") {
			key, val, ok := strings.Cut(p, "=")
			if !ok {
				continue
			}
			key = strings.ToLower(strings.TrimSpace(key))
			val = strings.Trim(strings.TrimSpace(val), `"`)
			if _, dup := m[key]; !dup {
				m[key] = val
			}
		}
		groups = append(groups, m)
	}
	return groups
}

// parseEncryption reads salt, rs and keyid from an aesgcm Encryption header.
// Parameters are taken from all groups, first occurrence winning, since
// some senders separate them with ',' instead of ';'.
func parseEncryption(v string) (salt []byte, rs int, keyID string, err error) {
	params := map[string]string{}
	for _, g := range headerParams(v) {
		for k, val := range g {
			if _, dup := params[k]; !dup {
				params[k] = val
			}
		}
	}
	s, ok := params["salt"]
	if !ok {
		return nil, 0, "", decryptErr("Encryption header %q has no salt", v)
	}
	if salt, err = schema.DecodeBase64(s); err != nil || len(salt) != saltSize {
		return nil, 0, "", decryptErr("Encryption salt %q is not %d bytes of base64url", s, saltSize)
	}
	rs = DefaultRecordSize
	if r, ok := params["rs"]; ok {
		n, err := strconv.ParseUint(r, 10, 32)
		if err != nil || n <= aesgcmPadSize {
			return nil, 0, "", decryptErr("Encryption rs %q must be a number above %d", r, aesgcmPadSize)
		}
		rs = int(n)
	}
	return salt, rs, params["keyid"], nil
}

// findDH picks the sender key from a Crypto-Key header: the group whose
// keyid matches the Encryption header's, else the first dh.
func findDH(v, keyID string) ([]byte, error) {
	var dh string
	for _, g := range headerParams(v) {
		d, ok := g["dh"]
		if !ok {
			continue
		}
		if keyID != "" && g["keyid"] == keyID {
			dh = d
			break
		}
		if dh == "" {
			dh = d
		}
	}
	if dh == "" {
		return nil, decryptErr("Crypto-Key header %q has no dh", v)
	}
	b, err := schema.DecodeBase64(dh)
	if err != nil {
		return nil, decryptErr("Crypto-Key dh: %v", err)
	}
	return b, nil
}

// Origin is the RFC 6454 origin of an endpoint URL, scheme://host[:port],
// the value VAPID's aud claim must carry.
func Origin(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", endpoint, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", endpoint)
	}
	return scheme + "://" + strings.ToLower(u.Host), nil
}
