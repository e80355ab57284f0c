package schema

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// DecodeBase64 decodes base64url or standard base64, padded or not, with
// surrounding whitespace: keys travel in all four spellings (PROTOCOL.md:
// base64url, tolerate standard base64). A string that mixes the two
// alphabets is neither and is refused. It is the module's one lenient
// decoder: the contract's keys,
// ingest's VAPID keys, the connector's register keys and the client
// library all use it.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	enc := base64.RawURLEncoding
	if strings.ContainsAny(s, "+/") {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", err)
	}
	return b, nil
}
