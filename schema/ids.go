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

// NewUAID returns a fresh random UAID: 32 lowercase hex characters.
func NewUAID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// NewEventID returns 16 random bytes identifying one event.
func NewEventID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

// ParseUAID accepts 32 hex characters (either case; dashes tolerated as
// autopush does) and returns the 16 bytes.
func ParseUAID(s string) ([16]byte, error) {
	var out [16]byte
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
	b, err := ParseUAID(s)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
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
