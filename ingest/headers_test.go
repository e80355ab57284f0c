package ingest

import (
	"maps"
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
		dh      string
		ecdsa   string
		invalid bool
	}{
		{"dh=abc", "abc", "", false},
		{`keyid="p256dh";dh="abc=="`, "abc", "", false},
		{"dh=abc;p256ecdsa=xyz=", "abc", "xyz", false},
		{"dh=abc, p256ecdsa=xyz", "abc", "xyz", false},
		{"DH = abc ;", "abc", "", false},
		{"salt=a;salt=b", "", "", false},
		{"", "", "", false},
		{"dh", "", "", true},
		{"=abc", "", "", true},
		{"dh=abc;junk", "", "", true},
	} {
		h, err := parseCryptoHeader(tc.in)
		if tc.invalid != (err != nil) {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if tc.invalid {
			continue
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
	exact, _ := parseParams("Salt=a;salt=b", false)
	if got, _ := exact.get("salt"); got != "b" {
		t.Errorf("unfolded salt: %q, want the lowercase key's b", got)
	}
}

// TestForwardCryptoHeader: autopush's cleaning and nothing else: every
// double quote goes, then each run of '=' after a base64url character that
// ends a value (',' ';' or the end follows); everything else stays as sent.
func TestForwardCryptoHeader(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"salt=abc", "salt=abc"},
		{"salt=abc==", "salt=abc"},
		{`salt="abc=="`, "salt=abc"},
		{`"salt"="abc"`, "salt=abc"},
		{`salt=a"b"c`, "salt=abc"}, // every quote, not only surrounding ones
		{"salt=abc==;rs=4096", "salt=abc;rs=4096"},
		{"salt=abc==,rs=4096", "salt=abc,rs=4096"},
		{"keyid=p256dh; salt=abc=; rs=4096", "keyid=p256dh; salt=abc; rs=4096"},
		{"keyid=a;dh=x=,keyid=b;dh=y==,p256ecdsa=z=", "keyid=a;dh=x,keyid=b;dh=y,p256ecdsa=z"},
		{"dh=abc== ;rs=1", "dh=abc== ;rs=1"}, // autopush keeps padding before a space
		{"dh=abc=x", "dh=abc=x"},             // not at the end of a value
		{"dh=a/==", "dh=a/=="},               // not after a base64url character
		{"a=;b=c", "a;b=c"},                  // an empty value: refused by checkAESGCM
		{"  salt=abc==\t", "salt=abc"},       // optional whitespace around the header
		{"", ""},
		{"===", "==="},
	} {
		if got := forwardCryptoHeader(tc.in); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

// clientHeaders is the notification's "headers" object for enc, as
// connector/protocol.EncodeNotification renders the event fields ingest
// stores (verbatim; its TestNotificationFrames checks that side).
func clientHeaders(enc encoding) map[string]string {
	h := map[string]string{}
	for k, v := range map[string]string{"encoding": enc.name, "encryption": enc.encryption, "crypto_key": enc.cryptoKey} {
		if v != "" {
			h[k] = v
		}
	}
	return h
}

// TestAESGCMHeadersForwarded (issue 13 point 1): for each header form an
// aesgcm sender uses, the exact headers object the WebSocket client gets:
// the sender's Encryption and Crypto-Key with only quotes and padding
// removed, every parameter and section kept in order.
func TestAESGCMHeadersForwarded(t *testing.T) {
	const (
		salt  = "c2FsdHNhbHRzYWx0c2FsdA" // 16 bytes
		dh    = "BDw9T0eImd4ax818VcYqDK_DOhcuDswKeroYyNkdhYmygoLSDlSiWpuoWYUSSFxi25cyyNTR5k9Ny93DzZc0UI4"
		other = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
		ecdsa = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"
	)
	for _, tc := range []struct {
		name           string
		encryption, ck string
		want           map[string]string
	}{
		{"one section", "salt=" + salt, "dh=" + dh,
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt, "crypto_key": "dh=" + dh}},
		{"rs", "salt=" + salt + ";rs=4096", "dh=" + dh,
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt + ";rs=4096", "crypto_key": "dh=" + dh}},
		{"quoted", `salt="` + salt + `";rs="3000"`, `dh="` + dh + `"`,
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt + ";rs=3000", "crypto_key": "dh=" + dh}},
		{"padded", "salt=" + salt + "==", "dh=" + dh + "=",
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt, "crypto_key": "dh=" + dh}},
		{"quoted and padded", `salt="` + salt + `=="`, `dh="` + dh + `="`,
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt, "crypto_key": "dh=" + dh}},
		{"keyid on both headers", `keyid="p256dh";salt="` + salt + `"`, `keyid="p256dh";dh="` + dh + `"`,
			map[string]string{"encoding": "aesgcm", "encryption": "keyid=p256dh;salt=" + salt, "crypto_key": "keyid=p256dh;dh=" + dh}},
		{"p256ecdsa beside dh", "salt=" + salt, "dh=" + dh + ";p256ecdsa=" + ecdsa,
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt, "crypto_key": "dh=" + dh + ";p256ecdsa=" + ecdsa}},
		{"p256ecdsa in its own section, padded", "salt=" + salt, "dh=" + dh + "=,p256ecdsa=" + ecdsa + "=",
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt, "crypto_key": "dh=" + dh + ",p256ecdsa=" + ecdsa}},
		{"several sections, keyid picks the second", "keyid=b;salt=" + salt + ";rs=4096",
			"keyid=a;dh=" + other + ",keyid=b;dh=" + dh + ",p256ecdsa=" + ecdsa,
			map[string]string{"encoding": "aesgcm", "encryption": "keyid=b;salt=" + salt + ";rs=4096",
				"crypto_key": "keyid=a;dh=" + other + ",keyid=b;dh=" + dh + ",p256ecdsa=" + ecdsa}},
		{"several Encryption sections", "keyid=a;salt=" + salt + ",keyid=b;salt=" + salt, "keyid=a;dh=" + dh + ",keyid=b;dh=" + other,
			map[string]string{"encoding": "aesgcm", "encryption": "keyid=a;salt=" + salt + ",keyid=b;salt=" + salt,
				"crypto_key": "keyid=a;dh=" + dh + ",keyid=b;dh=" + other}},
		{"parameters separated by commas", "salt=" + salt + ",rs=3000", "dh=" + dh + ",p256ecdsa=" + ecdsa,
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt + ",rs=3000", "crypto_key": "dh=" + dh + ",p256ecdsa=" + ecdsa}},
		{"spaces kept as sent", `keyid="p256dh"; salt="` + salt + `=="; rs=4096`, `keyid="p256dh"; dh="` + dh + `=="`,
			map[string]string{"encoding": "aesgcm", "encryption": "keyid=p256dh; salt=" + salt + "; rs=4096", "crypto_key": "keyid=p256dh; dh=" + dh}},
		{"unknown parameters kept", "salt=" + salt + ";foo=bar", "dh=" + dh + ";x-y=1",
			map[string]string{"encoding": "aesgcm", "encryption": "salt=" + salt + ";foo=bar", "crypto_key": "dh=" + dh + ";x-y=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, aerr := checkEncoding(encodingHeaders{contentEncoding: []string{"aesgcm"}, encryption: tc.encryption, cryptoKey: tc.ck}, true)
			if aerr != nil {
				t.Fatalf("refused: %v", aerr)
			}
			if got := clientHeaders(enc); !maps.Equal(got, tc.want) {
				t.Errorf("headers %v\nwant    %v", got, tc.want)
			}
		})
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
			encoding{name: "aesgcm", encryption: "salt=s1;rs=4096", cryptoKey: "dh=k1;p256ecdsa=v"}, true},
		{"aesgcm keyid kept on both", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "keyid=b;salt=s", cryptoKey: "keyid=a;dh=one,keyid=b;dh=two"}, true,
			encoding{name: "aesgcm", encryption: "keyid=b;salt=s", cryptoKey: "keyid=a;dh=one,keyid=b;dh=two"}, true},
		{"aesgcm keyid picks a bad dh", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "keyid=b;salt=s", cryptoKey: "keyid=a;dh=one,keyid=b;dh=t/o"}, true, encoding{}, false},
		{"aesgcm Salt is not salt", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "Salt=s", cryptoKey: "dh=k"}, true, encoding{}, false},
		{"aesgcm DH is not dh", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s", cryptoKey: "DH=k"}, true, encoding{}, false},
		{"aesgcm empty keyid", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "keyid=;salt=s", cryptoKey: "dh=k"}, true, encoding{}, false},
		{"aesgcm padding-only value", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s", cryptoKey: "dh=k;x=="}, true, encoding{}, false},
		{"aesgcm non-ASCII Encryption", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s;x=é", cryptoKey: "dh=k"}, true, encoding{}, false},
		{"aesgcm control byte in Crypto-Key", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s", cryptoKey: "dh=k;x=\x01"}, true, encoding{}, false},
		{"aesgcm Encryption-Key", encodingHeaders{contentEncoding: ce("aesgcm"), encryption: "salt=s", cryptoKey: "dh=k", encryptionKey: "dh=k"}, true, encoding{}, false},
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
