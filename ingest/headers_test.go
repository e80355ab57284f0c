package ingest

import (
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/schema/pb"
)

func TestParseTTL(t *testing.T) {
	const max = 30 * 24 * time.Hour
	const maxS = int64(max / time.Second)
	for _, tc := range []struct {
		in    []string
		want  int64
		errno int
	}{
		{[]string{"0"}, 0, 0},
		{[]string{"60"}, 60, 0},
		{[]string{" 60 "}, 60, 0},
		{[]string{"\t60\t"}, 60, 0}, // OWS around the value, as HTTP/1 allows
		{[]string{"0060"}, 60, 0},
		// PROTOCOL.md: digits only (issue 10 finding 4).
		{[]string{"+60"}, 0, 111},
		{[]string{"+5"}, 0, 111},
		{[]string{`" 5 "`}, 0, 111},
		{[]string{`"5"`}, 0, 111},
		{[]string{"5 0"}, 0, 111},
		{[]string{"5\x00"}, 0, 111},
		{[]string{"\v5"}, 0, 111},
		{[]string{"0x10"}, 0, 111},
		{[]string{"١٢"}, 0, 111}, // non-ASCII digits
		{[]string{"-"}, 0, 111},
		{[]string{"- 1"}, 0, 111},
		{[]string{"+-1"}, 0, 111},
		{[]string{"2592000"}, maxS, 0},
		{[]string{"2592001"}, maxS, 0},
		{[]string{"99999999999999999999"}, maxS, 0},
		{[]string{"-1"}, 0, 114},
		{[]string{"-99999999999999999999"}, 0, 114},
		{nil, 0, 111},
		{[]string{""}, 0, 111},
		{[]string{"abc"}, 0, 111},
		{[]string{"1.5"}, 0, 111},
		{[]string{"1e3"}, 0, 111},
		{[]string{"60", "60"}, 0, 111},
	} {
		got, aerr := parseTTL(tc.in, max)
		if tc.errno == 0 && (aerr != nil || got != tc.want) {
			t.Errorf("%q: %d %v, want %d", tc.in, got, aerr, tc.want)
		}
		if tc.errno != 0 && (aerr == nil || aerr.errno != tc.errno || aerr.status != 400) {
			t.Errorf("%q: %v, want 400 errno %d", tc.in, aerr, tc.errno)
		}
	}
}

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		ok   bool
	}{
		{nil, "", true},
		{[]string{""}, "", true},
		{[]string{strings.Repeat("a", 32)}, strings.Repeat("a", 32), true},
		{[]string{"Az09-_"}, "Az09-_", true},
		{[]string{strings.Repeat("a", 33)}, "", false},
		{[]string{"a b"}, "", false},
		{[]string{"a="}, "", false},
		{[]string{"é"}, "", false},
		{[]string{"a", "b"}, "", false},
	} {
		got, aerr := parseTopic(tc.in)
		if tc.ok != (aerr == nil) || got != tc.want {
			t.Errorf("%q: %q %v", tc.in, got, aerr)
		}
		if aerr != nil && aerr.errno != 113 {
			t.Errorf("%q: errno %d", tc.in, aerr.errno)
		}
	}
}

func TestParseUrgency(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want pb.Urgency
		ok   bool
	}{
		{nil, pb.Urgency_URGENCY_NORMAL, true},
		{[]string{"normal"}, pb.Urgency_URGENCY_NORMAL, true},
		{[]string{"very-low"}, pb.Urgency_URGENCY_VERY_LOW, true},
		{[]string{"Low"}, pb.Urgency_URGENCY_LOW, true},
		{[]string{"high"}, pb.Urgency_URGENCY_HIGH, true},
		{[]string{"low,high"}, 0, false},
		{[]string{"low", "high"}, 0, false},
		{[]string{"verylow"}, 0, false},
	} {
		got, aerr := parseUrgency(tc.in)
		if tc.ok != (aerr == nil) || (tc.ok && got != tc.want) {
			t.Errorf("%q: %v %v", tc.in, got, aerr)
		}
	}
}

func TestParseCryptoHeader(t *testing.T) {
	for _, tc := range []struct {
		in      string
		flat    string
		dh      string
		ecdsa   string
		invalid bool
	}{
		{"dh=abc", "dh=abc", "abc", "", false},
		{`keyid="p256dh";dh="abc=="`, "dh=abc", "abc", "", false},
		{"dh=abc;p256ecdsa=xyz=", "dh=abc;p256ecdsa=xyz", "abc", "xyz", false},
		{"dh=abc, p256ecdsa=xyz", "dh=abc;p256ecdsa=xyz", "abc", "xyz", false},
		{"DH = abc ;", "dh=abc", "abc", "", false},
		{"salt=a;salt=b", "salt=a", "", "", false},
		{"", "", "", "", false},
		{"dh", "", "", "", true},
		{"=abc", "", "", "", true},
		{"dh=abc;junk", "", "", "", true},
	} {
		h, err := parseCryptoHeader(tc.in)
		if tc.invalid != (err != nil) {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if tc.invalid {
			continue
		}
		if got := h.flatten(); got != tc.flat {
			t.Errorf("%q: flatten %q, want %q", tc.in, got, tc.flat)
		}
		if got, _ := h.dh(""); got != tc.dh {
			t.Errorf("%q: dh %q, want %q", tc.in, got, tc.dh)
		}
		if got, _ := h.get("p256ecdsa"); got != tc.ecdsa {
			t.Errorf("%q: p256ecdsa %q, want %q", tc.in, got, tc.ecdsa)
		}
	}
	h, _ := parseCryptoHeader("keyid=a;dh=one,keyid=b;dh=two")
	if got, _ := h.dh("b"); got != "two" {
		t.Errorf("dh for keyid b: %q", got)
	}
	if got, _ := h.dh("zzz"); got != "one" {
		t.Errorf("dh for unknown keyid: %q", got)
	}
}

func TestCheckEncoding(t *testing.T) {
	ce := func(v ...string) []string { return v }
	for _, tc := range []struct {
		name string
		h    encodingHeaders
		body bool
		want encoding
		ok   bool
	}{
		{"empty body ignores everything", encodingHeaders{contentEncoding: ce("bogus")}, false, encoding{}, true},
		{"aes128gcm", encodingHeaders{contentEncoding: ce("aes128gcm")}, true, encoding{name: "aes128gcm"}, true},
		{"AES128GCM", encodingHeaders{contentEncoding: ce(" AES128GCM ")}, true, encoding{name: "aes128gcm"}, true},
		{"aes128gcm with p256ecdsa", encodingHeaders{contentEncoding: ce("aes128gcm"), cryptoKey: "p256ecdsa=x"}, true, encoding{name: "aes128gcm"}, true},
		{"aes128gcm with Encryption rs only", encodingHeaders{contentEncoding: ce("aes128gcm"), encryption: "rs=4096"}, true, encoding{name: "aes128gcm"}, true},
		{"aes128gcm with salt", encodingHeaders{contentEncoding: ce("aes128gcm"), encryption: "salt=x"}, true, encoding{}, false},
		{"aes128gcm with dh", encodingHeaders{contentEncoding: ce("aes128gcm"), cryptoKey: "dh=x"}, true, encoding{}, false},
		{"aes128gcm with malformed Crypto-Key", encodingHeaders{contentEncoding: ce("aes128gcm"), cryptoKey: "x"}, true, encoding{}, false},
		{"aesgcm", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: `salt="s1=";rs=4096`, cryptoKey: `dh="k1==";p256ecdsa=v`}, true,
			encoding{name: "aesgcm", encryption: "salt=s1;rs=4096", cryptoKey: "dh=k1"}, true},
		{"aesgcm keyid pairs sections", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "keyid=b;salt=s", cryptoKey: "keyid=a;dh=one,keyid=b;dh=two"}, true,
			encoding{name: "aesgcm", encryption: "salt=s", cryptoKey: "dh=two"}, true},
		{"aesgcm rs too small", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s;rs=1", cryptoKey: "dh=k"}, true, encoding{}, false},
		{"aesgcm empty salt", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=", cryptoKey: "dh=k"}, true, encoding{}, false},
		{"aesgcm bad dh", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s", cryptoKey: "dh=a/b"}, true, encoding{}, false},
		{"missing", encodingHeaders{}, true, encoding{}, false},
		{"two encodings", encodingHeaders{contentEncoding: ce("aes128gcm", "aesgcm")}, true, encoding{}, false},
		{"aesgcm128", encodingHeaders{contentEncoding: ce("aesgcm128")}, true, encoding{}, false},
	} {
		got, aerr := checkEncoding(tc.h, tc.body)
		if tc.ok != (aerr == nil) || got != tc.want {
			t.Errorf("%s: %+v %v", tc.name, got, aerr)
		}
		if aerr != nil && (aerr.errno != 110 || aerr.status != 400) {
			t.Errorf("%s: %v, want 400 errno 110", tc.name, aerr)
		}
	}
}
