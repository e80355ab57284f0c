// Package webpush implements the message side of Web Push for pushlog's
// client tools and tests: the "aes128gcm" content coding (RFC 8188) as Web
// Push uses it (RFC 8291), the legacy "aesgcm" coding of
// draft-ietf-webpush-encryption-04 that older senders still use, and VAPID
// application server identification (RFC 8292).
//
// It only encrypts, decrypts and signs; it never talks to the network. It
// lives under ingest/ because it is the sender's and user agent's side of
// the wire ingest accepts; ingest itself does not import it (ingest never
// decrypts), the tools under cmd/ and the tests do.
package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Content codings.
const (
	AES128GCM = "aes128gcm" // RFC 8188 / RFC 8291
	AESGCM    = "aesgcm"    // draft-ietf-webpush-encryption-04 (legacy)
)

// DefaultRecordSize is the record size senders use (npm web-push, webpush-go).
const DefaultRecordSize = 4096

const (
	tagSize       = 16 // AES-GCM tag
	saltSize      = 16
	headerFixed   = saltSize + 4 + 1 // salt, rs, idlen
	minRecordSize = tagSize + 2      // RFC 8188 §2: rs must be greater than 17
)

// ErrDecrypt is wrapped by every decryption failure, so callers can tell a
// message that does not decrypt (ack code 101) from other errors.
var ErrDecrypt = errors.New("webpush: cannot decrypt")

func decryptErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDecrypt, fmt.Sprintf(format, args...))
}

// Header is the RFC 8188 §2.1 header at the start of an aes128gcm body.
type Header struct {
	Salt       []byte
	RecordSize uint32
	KeyID      []byte
}

// ParseHeader reads the aes128gcm header and returns it with the offset of
// the first record.
func ParseHeader(body []byte) (Header, int, error) {
	if len(body) < headerFixed {
		return Header{}, 0, decryptErr("body of %d bytes is shorter than the aes128gcm header", len(body))
	}
	h := Header{
		Salt:       body[:saltSize],
		RecordSize: binary.BigEndian.Uint32(body[saltSize : saltSize+4]),
	}
	idLen := int(body[saltSize+4])
	if len(body) < headerFixed+idLen {
		return Header{}, 0, decryptErr("body of %d bytes is shorter than its keyid of %d bytes", len(body), idLen)
	}
	h.KeyID = body[headerFixed : headerFixed+idLen]
	if h.RecordSize < minRecordSize {
		return Header{}, 0, decryptErr("record size %d is below the minimum of %d", h.RecordSize, minRecordSize)
	}
	return h, headerFixed + idLen, nil
}

// contentKeys derives the content encryption key and base nonce from the
// input keying material (RFC 8188 §2.2, §2.3).
func contentKeys(ikm, salt []byte) (cipher.AEAD, []byte, error) {
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, nil, fmt.Errorf("hkdf extract: %w", err)
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, nil, fmt.Errorf("derive content key: %w", err)
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, nil, fmt.Errorf("derive nonce: %w", err)
	}
	aead, err := newGCM(cek)
	return aead, nonce, err
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// recordNonce is the base nonce XOR the record sequence number (RFC 8188 §2.3).
func recordNonce(base []byte, seq uint64) []byte {
	n := make([]byte, len(base))
	copy(n, base)
	tail := binary.BigEndian.Uint64(n[len(n)-8:])
	binary.BigEndian.PutUint64(n[len(n)-8:], tail^seq)
	return n
}

// EncryptContent encodes plaintext in the aes128gcm content coding with the
// given input keying material, salt (16 bytes), keyid and record size,
// adding padding zero octets (RFC 8188 §2). Each record takes as much of
// the remaining padding as it can hold, then data, as RFC 8188 §3.2 does.
func EncryptContent(ikm, salt, keyID []byte, rs uint32, plaintext []byte, padding int) ([]byte, error) {
	switch {
	case len(salt) != saltSize:
		return nil, fmt.Errorf("salt must be %d bytes, got %d", saltSize, len(salt))
	case len(keyID) > 255:
		return nil, fmt.Errorf("keyid of %d bytes is longer than 255", len(keyID))
	case rs < minRecordSize:
		return nil, fmt.Errorf("record size %d is below the minimum of %d", rs, minRecordSize)
	case padding < 0:
		return nil, fmt.Errorf("negative padding %d", padding)
	}
	aead, nonce, err := contentKeys(ikm, salt)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, headerFixed+len(keyID)+len(plaintext)+padding+tagSize+1)
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, rs)
	out = append(out, byte(len(keyID)))
	out = append(out, keyID...)

	room := int(rs) - tagSize - 1 // data and padding per record, besides the delimiter
	data := plaintext
	for seq := uint64(0); ; seq++ {
		p := min(padding, room)
		n := min(len(data), room-p)
		rec := make([]byte, 0, n+1+p)
		rec = append(rec, data[:n]...)
		data, padding = data[n:], padding-p
		last := len(data) == 0 && padding == 0
		if last {
			rec = append(rec, 2)
		} else {
			rec = append(rec, 1)
		}
		rec = append(rec, make([]byte, p)...)
		out = aead.Seal(out, recordNonce(nonce, seq), rec, nil)
		if last {
			return out, nil
		}
	}
}

// DecryptContent decodes an aes128gcm body with the given input keying
// material. It checks every record's padding delimiter (1 for all but the
// last record, 2 for the last), so a truncated body is rejected.
func DecryptContent(ikm, body []byte) ([]byte, error) {
	h, off, err := ParseHeader(body)
	if err != nil {
		return nil, err
	}
	return decryptRecords(ikm, h, body[off:])
}

func decryptRecords(ikm []byte, h Header, records []byte) ([]byte, error) {
	if len(records) == 0 {
		return nil, decryptErr("body has no records")
	}
	aead, nonce, err := contentKeys(ikm, h.Salt)
	if err != nil {
		return nil, err
	}
	rs := len(records)
	if uint64(h.RecordSize) < uint64(rs) {
		rs = int(h.RecordSize)
	}
	plain := make([]byte, 0, len(records))
	for seq := uint64(0); len(records) > 0; seq++ {
		n := min(rs, len(records))
		rec := records[:n]
		records = records[n:]
		last := len(records) == 0
		if len(rec) <= tagSize {
			return nil, decryptErr("record %d of %d bytes is too short", seq, len(rec))
		}
		p, err := aead.Open(rec[:0:0], recordNonce(nonce, seq), rec, nil)
		if err != nil {
			return nil, decryptErr("record %d does not authenticate", seq)
		}
		data, err := unpadRecord(p, last)
		if err != nil {
			return nil, decryptErr("record %d: %v", seq, err)
		}
		plain = append(plain, data...)
	}
	return plain, nil
}

// unpadRecord strips the zero padding and the delimiter from one record.
func unpadRecord(p []byte, last bool) ([]byte, error) {
	i := len(p) - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	want := byte(1)
	if last {
		want = 2
	}
	switch {
	case i < 0:
		return nil, errors.New("record holds no padding delimiter")
	case p[i] != want:
		return nil, fmt.Errorf("padding delimiter %d, want %d", p[i], want)
	}
	return p[:i], nil
}
