package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// chTimeout bounds one run of the crypto header scenarios (start-up included).
const chTimeout = 3 * time.Minute

// chECDSA is a P-256 public key as senders put it in Crypto-Key p256ecdsa=
// (RFC 8292's example); on a v1 endpoint without Authorization it is
// just a parameter to forward.
const chECDSA = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"

// chForm is one way a sender writes the aesgcm headers: given the salt
// and sender key of its encryption (base64url, unpadded) and a decoy key,
// the Encryption and Crypto-Key it sends and the exact headers object the
// WebSocket client must receive.
type chForm struct {
	name string
	make func(salt, dh, decoy string) (encryption, cryptoKey string, want map[string]string)
}

func chWant(encryption, cryptoKey string) map[string]string {
	return map[string]string{"encoding": "aesgcm", "encryption": encryption, "crypto_key": cryptoKey}
}

// chForms are the header forms of issue 13: one and several sections,
// quoted, padded, keyid on both headers, rs, p256ecdsa. What arrives is
// what was sent, without quotes and base64 padding, nothing else changed.
var chForms = []chForm{
	{"one section", func(salt, dh, _ string) (string, string, map[string]string) {
		return "salt=" + salt, "dh=" + dh, chWant("salt="+salt, "dh="+dh)
	}},
	{"rs", func(salt, dh, _ string) (string, string, map[string]string) {
		return "salt=" + salt + ";rs=4096", "dh=" + dh, chWant("salt="+salt+";rs=4096", "dh="+dh)
	}},
	{"quoted", func(salt, dh, _ string) (string, string, map[string]string) {
		return `salt="` + salt + `";rs="4096"`, `dh="` + dh + `"`, chWant("salt="+salt+";rs=4096", "dh="+dh)
	}},
	{"padded", func(salt, dh, _ string) (string, string, map[string]string) {
		return "salt=" + salt + "==", "dh=" + dh + "=", chWant("salt="+salt, "dh="+dh)
	}},
	{"keyid on both headers, quoted and padded", func(salt, dh, _ string) (string, string, map[string]string) {
		return `keyid="p256dh"; salt="` + salt + `=="`, `keyid="p256dh"; dh="` + dh + `="`,
			chWant("keyid=p256dh; salt="+salt, "keyid=p256dh; dh="+dh)
	}},
	{"p256ecdsa beside dh", func(salt, dh, _ string) (string, string, map[string]string) {
		return "salt=" + salt, "dh=" + dh + ";p256ecdsa=" + chECDSA, chWant("salt="+salt, "dh="+dh+";p256ecdsa="+chECDSA)
	}},
	{"several sections, the keyid's dh second", func(salt, dh, decoy string) (string, string, map[string]string) {
		return "keyid=b;salt=" + salt + ";rs=4096", "keyid=a;dh=" + decoy + "=,keyid=b;dh=" + dh + ",p256ecdsa=" + chECDSA,
			chWant("keyid=b;salt="+salt+";rs=4096", "keyid=a;dh="+decoy+",keyid=b;dh="+dh+",p256ecdsa="+chECDSA)
	}},
	{"p256ecdsa first, sections separated by commas", func(salt, dh, _ string) (string, string, map[string]string) {
		return "salt=" + salt, `p256ecdsa="` + chECDSA + `",dh="` + dh + `"`, chWant("salt="+salt, "p256ecdsa="+chECDSA+",dh="+dh)
	}},
}

// TestCryptoHeadersForwarded (issue 13 point 1): aesgcm pushes in every
// header form reach a connected WebSocket client with exactly the sender's
// headers, cleaned only of quotes and padding, and decrypt; aes128gcm
// still carries only its encoding; headers autopush would refuse are
// refused. On the embedded log and on real Kafka.
func TestCryptoHeadersForwarded(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts serverOpts
	}{
		{"embedded", serverOpts{Embedded: true}},
		{"kafka", serverOpts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, chTimeout)
			s := startServer(t, tc.opts)
			ua := uaDial(ctx, t, s.WSURL, "")
			defer ua.close()
			sub := ua.subscribe(ctx, "")
			decoy, err := webpush.GenerateReceiverKeys()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range chForms {
				plain := []byte("aesgcm, " + f.name + " " + uaChannelID())
				m, err := webpush.Encrypt(sub.Keys.Subscription(sub.Endpoint), plain, webpush.EncryptOptions{Encoding: webpush.AESGCM})
				if err != nil {
					t.Fatal(err)
				}
				salt := strings.TrimPrefix(m.Encryption, "salt=")
				dh := strings.TrimPrefix(m.CryptoKey, "dh=")
				enc, ck, want := f.make(salt, dh, decoy.PublicKeyString())
				chMustCreate(ctx, t, sub.Endpoint, m.Body, "aesgcm", enc, ck)
				n, got := ua.nextFor(ctx, sub)
				if !bytes.Equal(got, plain) {
					t.Fatalf("%s: decrypted %q, want %q", f.name, got, plain)
				}
				chCheckHeaders(t, f.name, n, want)
				if gotSalt, gotDH, err := chFirefoxReads(n.Headers); err != nil || gotSalt != salt || gotDH != dh {
					t.Fatalf("%s: Firefox would read salt %q dh %q (%v), want %q %q", f.name, gotSalt, gotDH, err, salt, dh)
				}
				ua.ack(n)
			}

			// aes128gcm: the keys are in the body; only the encoding is
			// forwarded (PROTOCOL.md §3), even beside Crypto-Key p256ecdsa.
			plain := []byte("aes128gcm beside p256ecdsa")
			m, err := webpush.Encrypt(sub.Keys.Subscription(sub.Endpoint), plain, webpush.EncryptOptions{})
			if err != nil {
				t.Fatal(err)
			}
			chMustCreate(ctx, t, sub.Endpoint, m.Body, "aes128gcm", "", "p256ecdsa="+chECDSA)
			n, got := ua.nextFor(ctx, sub)
			if !bytes.Equal(got, plain) {
				t.Fatalf("aes128gcm: decrypted %q, want %q", got, plain)
			}
			chCheckHeaders(t, "aes128gcm", n, map[string]string{"encoding": "aes128gcm"})
			ua.ack(n)

			chCheckRefused(ctx, t, sub.Endpoint, m.Body)
		})
	}
}

// chCheckRefused: aesgcm headers that autopush refuses (or that would
// reach the client unreadable) are 400 errno 110; oversized ones 413
// errno 104 (the crypto header bound of the hardening issue).
func chCheckRefused(ctx context.Context, t *testing.T, endpoint string, body []byte) {
	t.Helper()
	const dh = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	for _, tc := range []struct {
		name, encryption, cryptoKey string
		status, errno               int
	}{
		{"Salt is not salt", "Salt=c2FsdA", "dh=" + dh, 400, 110},
		{"DH is not dh", "salt=c2FsdA", "DH=" + dh, 400, 110},
		{"keyid without a value", "keyid=;salt=c2FsdA", "dh=" + dh, 400, 110},
		{"non-ASCII parameter", "salt=c2FsdA;x=\xc3\xa9", "dh=" + dh, 400, 110},
		{"no dh", "salt=c2FsdA", "p256ecdsa=" + chECDSA, 400, 110},
		{"crypto headers above 1024 bytes", "salt=c2FsdA;keyid=" + strings.Repeat("k", 600), "dh=" + dh + ";keyid=" + strings.Repeat("k", 400), 413, 104},
	} {
		status, errno, raw := chPost(ctx, t, endpoint, body, "aesgcm", tc.encryption, tc.cryptoKey)
		if status != tc.status || errno != tc.errno {
			t.Errorf("%s: %d errno %d (%s), want %d errno %d", tc.name, status, errno, raw, tc.status, tc.errno)
		}
	}
}

// chCheckHeaders compares the notification frame's headers object, read
// from the raw frame, with want.
func chCheckHeaders(t *testing.T, what string, n uaMessage, want map[string]string) {
	t.Helper()
	var frame struct {
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal([]byte(n.Raw), &frame); err != nil {
		t.Fatalf("%s: frame %s: %v", what, n.Raw, err)
	}
	if !maps.Equal(frame.Headers, want) {
		t.Fatalf("%s: headers %v\nwant         %v\nframe: %s", what, frame.Headers, want, n.Raw)
	}
}

// chMustCreate posts a push with exactly these headers (no VAPID: a v1
// endpoint) and requires 201.
func chMustCreate(ctx context.Context, t *testing.T, endpoint string, body []byte, encoding, encryption, cryptoKey string) {
	t.Helper()
	status, errno, raw := chPost(ctx, t, endpoint, body, encoding, encryption, cryptoKey)
	if status != http.StatusCreated {
		t.Fatalf("push with Encryption %q Crypto-Key %q: %d errno %d %s, want 201", encryption, cryptoKey, status, errno, raw)
	}
}

// chPost sends one push and returns the status, errno (0 if none) and body.
func chPost(ctx context.Context, t *testing.T, endpoint string, body []byte, encoding, encryption, cryptoKey string) (int, int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("TTL", "600")
	req.Header.Set("Content-Encoding", encoding)
	if encryption != "" {
		req.Header.Set("Encryption", encryption)
	}
	if cryptoKey != "" {
		req.Header.Set("Crypto-Key", cryptoKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	var e struct {
		Errno int `json:"errno"`
	}
	if resp.StatusCode != http.StatusCreated {
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("error answer %d is not JSON: %s", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, e.Errno, string(raw)
}

// chFirefoxReads applies the reading rules of Firefox's push client
// (dom/push/PushCrypto.sys.mjs) to forwarded aesgcm headers, so that the
// header forms are shown decryptable by Firefox without one: only the
// first ','-section of encryption counts; items are split on ';' at the
// first '=', trimmed, with one pair of surrounding quotes removed; a
// crypto_key section with keyid and dh is found by that keyid, and the
// first dh of any section is the default; the dh used is the one for
// encryption's keyid (or the default without one); base64url with padding
// refused.
func chFirefoxReads(h map[string]string) (salt, dh string, err error) {
	params := func(section string) map[string]string {
		m := map[string]string{}
		for item := range strings.SplitSeq(section, ";") {
			if k, v, ok := strings.Cut(item, "="); ok {
				v = strings.TrimSpace(v)
				if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				m[strings.TrimSpace(k)] = v
			}
		}
		return m
	}
	enc := params(strings.Split(h["encryption"], ",")[0])
	keys := map[string]string{}
	for section := range strings.SplitSeq(h["crypto_key"], ",") {
		p := params(section)
		if p["keyid"] != "" && p["dh"] != "" {
			keys[p["keyid"]] = p["dh"]
		}
		if keys[""] == "" && p["dh"] != "" {
			keys[""] = p["dh"]
		}
	}
	salt, dh = enc["salt"], keys[enc["keyid"]]
	for _, v := range []string{salt, dh} {
		if _, err := base64.RawURLEncoding.Strict().DecodeString(v); err != nil || v == "" {
			return salt, dh, fmt.Errorf("not unpadded base64url: %q", v)
		}
	}
	return salt, dh, nil
}
