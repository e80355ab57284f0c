package ingest

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// A sender that signs every push sends claims the signature check has
// never seen, so decoding them is paid on every push; encoding/json's
// reflection took a tenth of a fresh token's cost. The claims real senders
// write (a flat object of plain strings and numbers, keys in lower case)
// are read here by a scanner that takes only that shape, exactly as
// encoding/json reads it; anything else — escapes, nesting, keys that
// differ from a claim's name only in case, trailing data — goes to
// encoding/json, which decides as before. FuzzVAPIDClaims holds the two to
// the same answers.

// decodeClaims reads a JWT claims set.
func decodeClaims(b []byte) (vapidClaims, error) {
	if c, ok := scanClaims(b); ok {
		return c, nil
	}
	var c vapidClaims
	err := json.Unmarshal(b, &c)
	return c, err
}

// scanClaims reads a flat JSON object of strings without escapes,
// numbers and literals; ok is false for anything else.
func scanClaims(b []byte) (c vapidClaims, ok bool) {
	i := skipJSONSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return c, false
	}
	i = skipJSONSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return c, skipJSONSpace(b, i+1) == len(b)
	}
	for {
		key, next, ok := scanPlainString(b, i)
		if !ok {
			return c, false
		}
		i = skipJSONSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return c, false
		}
		i = skipJSONSpace(b, i+1)
		end, ok := scanScalar(b, i)
		if !ok {
			return c, false
		}
		if !c.set(key, b[i:end:end]) {
			return c, false
		}
		i = skipJSONSpace(b, end)
		if i >= len(b) {
			return c, false
		}
		switch b[i] {
		case ',':
			i = skipJSONSpace(b, i+1)
		case '}':
			return c, skipJSONSpace(b, i+1) == len(b)
		default:
			return c, false
		}
	}
}

// set stores a member as encoding/json would (the last duplicate wins);
// false for a key encoding/json might match to a claim without being its
// exact name (it folds case, Unicode's included).
func (c *vapidClaims) set(key, raw []byte) bool {
	switch string(key) {
	case "aud":
		c.Aud = raw
	case "exp":
		c.Exp = raw
	case "nbf":
		c.Nbf = raw
	case "sub":
		c.Sub = raw
	default:
		for _, c := range key {
			if c >= utf8.RuneSelf {
				return false
			}
		}
		for _, name := range [...]string{"aud", "exp", "nbf", "sub"} {
			if bytes.EqualFold(key, []byte(name)) {
				return false
			}
		}
	}
	return true
}

// skipJSONSpace returns the index of the first byte at or after i that is
// not JSON whitespace.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanPlainString reads a JSON string at b[i] with no escape and no
// control character; s is its contents, next the index after its quote.
func scanPlainString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// scanScalar returns the end of the plain string, number or literal at
// b[i].
func scanScalar(b []byte, i int) (end int, ok bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		_, end, ok = scanPlainString(b, i)
		return end, ok
	case 't', 'f', 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
				return i + len(lit), true
			}
		}
		return 0, false
	}
	return scanNumber(b, i)
}

// scanNumber returns the end of the JSON number at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (end int, ok bool) {
	digits := func(i int) int {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i + 1)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

// plainJSONString returns the contents of raw when it is exactly one JSON
// string with no escape, no control character and valid UTF-8 (what
// encoding/json would decode to the same bytes).
func plainJSONString(raw []byte) (string, bool) {
	s, next, ok := scanPlainString(raw, 0)
	if !ok || next != len(raw) || !utf8.Valid(s) {
		return "", false
	}
	return string(s), true
}
