package schema

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrBadUAID and ErrBadChannelID describe malformed identifiers.
var (
	ErrBadUAID      = errors.New("invalid uaid: want 32 hex characters")
	ErrBadChannelID = errors.New("invalid channel id: want a dashed UUID")
)

// UAID identifies a user agent (a push client). Its text form, String,
// is 32 lowercase hex characters without dashes: the form on the wire
// (hello, endpoints, the node link), in events, and the Kafka key of every
// record of the UAID, which is what its partition is computed from.
type UAID [16]byte

// RandomUAID returns a fresh random UAID.
func RandomUAID() UAID {
	var u UAID
	_, _ = rand.Read(u[:]) // crypto/rand never fails on supported platforms
	return u
}

// NewUAID returns a fresh random UAID in its text form.
func NewUAID() string { return RandomUAID().String() }

// String returns the canonical text form: 32 lowercase hex characters.
func (u UAID) String() string {
	var b [32]byte
	hex.Encode(b[:], u[:])
	return string(b[:])
}

// AppendText appends the canonical text form to b (encoding.TextAppender).
func (u UAID) AppendText(b []byte) ([]byte, error) { return hex.AppendEncode(b, u[:]), nil }

// MarshalText returns the canonical text form, so JSON and slog's JSON
// handler write a UAID as its string.
func (u UAID) MarshalText() ([]byte, error) { return u.AppendText(make([]byte, 0, 32)) }

// UnmarshalText parses text as ParseUAID does.
func (u *UAID) UnmarshalText(text []byte) error {
	v, err := ParseUAID(string(text))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// Partition returns the partition of u's records among n partitions:
// PartitionOf(u.String(), n) without allocating. The key is hashed in its
// text form because that is what producers write as the Kafka key.
func (u UAID) Partition(n int32) int32 {
	var b [32]byte
	hex.Encode(b[:], u[:])
	return Partition(b[:], n)
}

// NewEventID returns 16 random bytes identifying one event.
func NewEventID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

// ParseUAID accepts 32 hex characters (either case; dashes tolerated as
// autopush does) and returns the UAID.
func ParseUAID(s string) (UAID, error) {
	var out UAID
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 32 {
		return out, ErrBadUAID
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return out, ErrBadUAID
	}
	return out, nil
}

// NormalizeUAID returns the canonical (lowercase, undashed) form.
func NormalizeUAID(s string) (string, error) {
	u, err := ParseUAID(s)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// ParseChannelID accepts a UUID in 8-4-4-4-12 form (either case) or as 32
// hex characters and returns the 16 bytes.
func ParseChannelID(s string) ([16]byte, error) {
	var out [16]byte
	switch len(s) {
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return out, ErrBadChannelID
		}
		s = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	case 32:
	default:
		return out, ErrBadChannelID
	}
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		return out, ErrBadChannelID
	}
	return out, nil
}

// NormalizeChannelID returns the canonical lowercase dashed form.
func NormalizeChannelID(s string) (string, error) {
	b, err := ParseChannelID(s)
	if err != nil {
		return "", err
	}
	return FormatChannelID(b[:]), nil
}

// FormatChannelID formats 16 bytes as a lowercase dashed UUID.
func FormatChannelID(b []byte) string {
	if len(b) != 16 {
		panic(fmt.Sprintf("channel id of %d bytes", len(b)))
	}
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
