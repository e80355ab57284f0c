package schema

import (
	"bytes"
	"encoding/base64"
	"testing"
)

func TestDecodeBase64(t *testing.T) {
	// 0xfb 0xff 0xbf encodes to the characters for 62 and 63, the two that
	// differ between the alphabets.
	key := []byte{0x04, 0xfb, 0xff, 0xbf, 0x00}
	url := base64.RawURLEncoding.EncodeToString(key) // "BPv_vwA"
	for _, tc := range []struct {
		name, in string
		want     []byte // nil: an error
	}{
		{"base64url", url, key},
		{"base64url padded", url + "=", key},
		{"standard padded", base64.StdEncoding.EncodeToString(key), key},
		{"standard unpadded", base64.RawStdEncoding.EncodeToString(key), key},
		{"surrounding whitespace", " \t" + url + "\n", key},
		{"mixed alphabets", "BP+_vwA", nil}, // neither spelling
		{"empty", "", []byte{}},
		{"bad character", "BPv*vwA", nil},
		{"one character too many", url + "AB", nil},
	} {
		got, err := DecodeBase64(tc.in)
		if (tc.want == nil) != (err != nil) {
			t.Errorf("%s: %q: err %v, want error %v", tc.name, tc.in, err, tc.want == nil)
			continue
		}
		if tc.want != nil && !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %q decoded to %x, want %x", tc.name, tc.in, got, tc.want)
		}
	}
}
