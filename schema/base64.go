package schema

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// DecodeBase64 decodes base64url or standard base64, padded or not, with
// surrounding whitespace: keys travel in all four spellings (PROTOCOL.md:
// base64url, tolerate standard base64). The two alphabets differ only in
// the characters for 62 and 63, so mapping one onto the other is
// unambiguous. It is the module's one lenient decoder: the contract's keys,
// ingest's VAPID keys, the connector's register keys and the client
// library all use it.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if strings.ContainsAny(s, "+/") {
		s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", err)
	}
	return b, nil
}
