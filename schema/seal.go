package schema

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Endpoint tokens and message ids are sealed with AES-256-GCM so forged URLs
// are rejected without any lookup. The nonce is derived from the plaintext
// (an HMAC, SIV-style), which makes sealing deterministic: the same
// subscription always gets the same endpoint (idempotent register) and the
// same message always gets the same id (clients drop duplicate versions).
// Nonce reuse only ever happens for identical plaintexts, which is safe.
//
// Layout: keyID(1) | nonce(12) | ciphertext | tag(16), base64url unpadded.
// keyID is the first byte of SHA-256(key), so rotation can add a key in
// front (new tokens) and keep older ones (old tokens still open).

// KeySize is the size of one sealing key.
const KeySize = 32

const (
	purposeEndpoint = "pushlog endpoint v1"
	purposeMessage  = "pushlog message v1"
	nonceSize       = 12
)

// ErrBadToken is returned for anything that does not open: wrong length,
// bad base64, unknown key or failed authentication.
var ErrBadToken = errors.New("invalid token")

type sealKey struct {
	id       byte
	aead     cipher.AEAD
	nonceKey []byte
	// macs holds keyed HMACs of nonceKey (*nonceMAC): keying one costs
	// two SHA-256 blocks and four allocations, once per push otherwise
	// (every 201 seals a message id).
	macs *sync.Pool
}

// nonceMAC is a keyed HMAC with room for its sum and a sealed token.
type nonceMAC struct {
	h   hash.Hash
	sum []byte
	out []byte
}

// Sealer seals and opens endpoint tokens and message ids.
type Sealer struct {
	keys []sealKey // keys[0] seals; all open
}

// NewSealer builds a sealer from a non-empty key list; the first key seals.
func NewSealer(keys [][]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("sealer: at least one key is required")
	}
	s := &Sealer{}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("sealer: key %d is %d bytes, want %d", i, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("sealer: key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealer: key %d: %w", i, err)
		}
		sum := sha256.Sum256(k)
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte("pushlog nonce key"))
		nonceKey := mac.Sum(nil)
		macs := &sync.Pool{New: func() any {
			return &nonceMAC{h: hmac.New(sha256.New, nonceKey), sum: make([]byte, 0, sha256.Size), out: make([]byte, 0, 128)}
		}}
		s.keys = append(s.keys, sealKey{id: sum[0], aead: aead, nonceKey: nonceKey, macs: macs})
	}
	return s, nil
}

// ParseKeys parses a comma-separated list of base64url (or standard base64)
// 32-byte keys, as given in PUSHLOG_CRYPTO_KEYS.
func ParseKeys(list string) ([][]byte, error) {
	var out [][]byte
	for i, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, err := DecodeBase64(part)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("key %d: %d bytes, want %d", i, len(k), KeySize)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("no keys given")
	}
	return out, nil
}

func (s *Sealer) seal(purpose string, plain []byte) string {
	return string(s.sealAppend(nil, purpose, plain))
}

// sealAppend appends the token of plain to dst.
func (s *Sealer) sealAppend(dst []byte, purpose string, plain []byte) []byte {
	k := s.keys[0]
	m := k.macs.Get().(*nonceMAC)
	defer k.macs.Put(m)
	out := append(m.out[:0], k.id)
	m.h.Reset() // back to the keyed state
	m.h.Write(purposeBytes(purpose))
	m.h.Write(plain)
	m.sum = m.h.Sum(m.sum[:0])
	out = append(out, m.sum[:nonceSize]...)
	out = k.aead.Seal(out, out[1:1+nonceSize], plain, purposeBytes(purpose))
	m.out = out
	return base64.RawURLEncoding.AppendEncode(dst, out)
}

// Purposes as additional data, converted once (a conversion per call
// allocates: the AEAD is an interface).
var (
	adEndpoint = []byte(purposeEndpoint)
	adMessage  = []byte(purposeMessage)
	adReceipt  = []byte(purposeReceipt)
)

func purposeBytes(purpose string) []byte {
	switch purpose {
	case purposeEndpoint:
		return adEndpoint
	case purposeMessage:
		return adMessage
	case purposeReceipt:
		return adReceipt
	}
	return []byte(purpose)
}

// open authenticates token. The decoded token and the plaintext share one
// fresh buffer, which callers may keep.
func (s *Sealer) open(purpose, token string) ([]byte, error) {
	token = strings.TrimRight(token, "=")
	n := base64.RawURLEncoding.DecodedLen(len(token))
	raw := make([]byte, 0, 2*n)
	raw, err := base64.RawURLEncoding.AppendDecode(raw, []byte(token))
	if err != nil || len(raw) < 1+nonceSize+16 {
		return nil, ErrBadToken
	}
	id, nonce, ct := raw[0], raw[1:1+nonceSize], raw[1+nonceSize:]
	for _, k := range s.keys {
		if k.id != id {
			continue
		}
		// Not in place: a failed Open clears its output, and a second
		// key with the same id must still see the ciphertext.
		if plain, err := k.aead.Open(raw[len(raw):], nonce, ct, purposeBytes(purpose)); err == nil {
			return plain, nil
		}
	}
	return nil, ErrBadToken
}

// Endpoint is what an endpoint token carries.
type Endpoint struct {
	UAID      string // 32 lowercase hex
	ChannelID string // lowercase dashed UUID
	KeyHash   []byte // SHA-256 of the application server key; nil for v1
	// Bridge is set on endpoints issued by the mobile registration API
	// (issue 14): ingest checks the bridge's payload limit from the token
	// alone, without a lookup. Zero for WebSocket endpoints, whose tokens
	// keep their old format.
	Bridge Bridge
}

// Bridge names the push service a bridged endpoint's messages go through.
type Bridge uint8

// Bridges, as sealed in endpoint tokens (never renumber).
const (
	BridgeNone Bridge = 0
	BridgeFCM  Bridge = 1
	BridgeAPNs Bridge = 2
)

// ParseBridge maps an autopush router_type ("fcm", "apns") to its Bridge.
func ParseBridge(routerType string) (Bridge, bool) {
	switch routerType {
	case "fcm":
		return BridgeFCM, true
	case "apns":
		return BridgeAPNs, true
	}
	return BridgeNone, false
}

// String is the router_type of autopush's registration API.
func (b Bridge) String() string {
	switch b {
	case BridgeFCM:
		return "fcm"
	case BridgeAPNs:
		return "apns"
	}
	return ""
}

// Version is 2 for a key-bound endpoint, else 1.
func (e Endpoint) Version() int {
	if len(e.KeyHash) > 0 {
		return 2
	}
	return 1
}

// SealEndpoint returns the token for the endpoint URL.
func (s *Sealer) SealEndpoint(e Endpoint) (string, error) {
	u, err := ParseUAID(e.UAID)
	if err != nil {
		return "", err
	}
	c, err := ParseChannelID(e.ChannelID)
	if err != nil {
		return "", err
	}
	if len(e.KeyHash) != 0 && len(e.KeyHash) != sha256.Size {
		return "", fmt.Errorf("key hash is %d bytes, want %d", len(e.KeyHash), sha256.Size)
	}
	plain := make([]byte, 0, 64)
	plain = append(plain, u[:]...)
	plain = append(plain, c[:]...)
	plain = append(plain, e.KeyHash...)
	if e.Bridge != BridgeNone {
		if e.Bridge.String() == "" {
			return "", fmt.Errorf("unknown bridge %d", e.Bridge)
		}
		plain = append(plain, byte(e.Bridge)) // one byte more: 33 or 65
	}
	return s.seal(purposeEndpoint, plain), nil
}

// OpenEndpoint authenticates and decodes an endpoint token.
func (s *Sealer) OpenEndpoint(token string) (Endpoint, error) {
	plain, err := s.open(purposeEndpoint, token)
	if err != nil {
		return Endpoint{}, err
	}
	var bridge Bridge
	if len(plain) == 33 || len(plain) == 33+sha256.Size {
		bridge, plain = Bridge(plain[len(plain)-1]), plain[:len(plain)-1]
		if bridge.String() == "" {
			return Endpoint{}, ErrBadToken
		}
	}
	if len(plain) != 32 && len(plain) != 32+sha256.Size {
		return Endpoint{}, ErrBadToken
	}
	e := Endpoint{UAID: hex.EncodeToString(plain[:16]), ChannelID: FormatChannelID(plain[16:32]), Bridge: bridge}
	if len(plain) > 32 {
		// plain is open's own fresh buffer: no copy needed.
		e.KeyHash = plain[32:len(plain):len(plain)]
	}
	return e, nil
}

// MessageID identifies an accepted message: its UAID and channel and its
// place in pushlog.messages. It is the notification "version" and the
// Location id.
type MessageID struct {
	UAID      string
	ChannelID string
	Partition int32
	Offset    int64
}

// SealMessageID returns the opaque id of a message.
func (s *Sealer) SealMessageID(m MessageID) (string, error) {
	b, err := s.AppendMessageID(nil, m)
	return string(b), err
}

// AppendMessageID appends the opaque id of a message to dst (ingest builds
// each 201's Location with it in one buffer).
func (s *Sealer) AppendMessageID(dst []byte, m MessageID) ([]byte, error) {
	u, err := ParseUAID(m.UAID)
	if err != nil {
		return dst, err
	}
	c, err := ParseChannelID(m.ChannelID)
	if err != nil {
		return dst, err
	}
	var plain [44]byte
	copy(plain[:], u[:])
	copy(plain[16:], c[:])
	binary.BigEndian.PutUint32(plain[32:], uint32(m.Partition))
	binary.BigEndian.PutUint64(plain[36:], uint64(m.Offset))
	return s.sealAppend(dst, purposeMessage, plain[:]), nil
}

// OpenMessageID authenticates and decodes a message id.
func (s *Sealer) OpenMessageID(id string) (MessageID, error) {
	plain, err := s.open(purposeMessage, id)
	if err != nil {
		return MessageID{}, err
	}
	if len(plain) != 44 {
		return MessageID{}, ErrBadToken
	}
	m := MessageID{
		UAID:      hex.EncodeToString(plain[:16]),
		ChannelID: FormatChannelID(plain[16:32]),
		Partition: int32(binary.BigEndian.Uint32(plain[32:])),
		Offset:    int64(binary.BigEndian.Uint64(plain[36:])),
	}
	if m.Partition < 0 || m.Offset < 0 {
		return MessageID{}, ErrBadToken
	}
	return m, nil
}
