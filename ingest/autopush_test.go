package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/fernet/fernet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Tokens made by Python's cryptography Fernet exactly as autopush makes them
// (Fernet(key).encrypt(uaid + chid [+ sha256(key)]), '=' stripped), with a
// fixed time and IV so they are reproducible:
//
//	f._encrypt_from_parts(uaid+chid, 1700000000, bytes(range(16)))
const (
	apKey       = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31
	apUAID      = "0123456789abcdef0123456789abcdef"
	apChannel   = "decafbad-0000-0000-0000-000123456789"
	apKeyHashV2 = "59ef1a5a00f35b1a722da56ca70b52a721f33998634d4fa4259301f170f7b6bd" // sha256(0x04 + 64 zero bytes)
	apTokenV1   = "gAAAAABlU_EAAAECAwQFBgcICQoLDA0OD7Ep5iFZf3U_q2MAuzc3qvUaT7l3F_dL3xu2ZBTqLz3Ic1CY9Eax0Q2qFplEH0cOLKFTPTEdlCDkVqPV4r2eFuixprK6gv8vDvsBzZE4zruq"
	apTokenV2   = "gAAAAABlU_EAAAECAwQFBgcICQoLDA0OD7Ep5iFZf3U_q2MAuzc3qvUaT7l3F_dL3xu2ZBTqLz3IFgsoWdV50lCWZklUFIXyaIlNlUnR0ugBBm_794umf7eBCrgS6RoAbsVGIfsUKQV3Bz6xByd7gXF1DZ8bcCvtsav748ejfhsbnwpYkKSPL-Y"
)

func mustAutopushKeys(t testing.TB, list string) *AutopushKeys {
	t.Helper()
	k, err := ParseAutopushKeys(list)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFernetSpecVector checks the Fernet library against the vector of
// the Fernet specification (generate.json / verify.json).
func TestFernetSpecVector(t *testing.T) {
	k, err := decodeFernetKey("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=")
	if err != nil {
		t.Fatal(err)
	}
	const tok = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA=="
	if got := fernet.VerifyAndDecrypt([]byte(tok), -1, []*fernet.Key{k}); string(got) != "hello" {
		t.Fatalf("spec vector decrypts to %q, want hello", got)
	}
	wrong, _ := decodeFernetKey(apKey)
	if got := fernet.VerifyAndDecrypt([]byte(tok), -1, []*fernet.Key{wrong}); got != nil {
		t.Fatalf("spec vector opened with another key: %q", got)
	}
}

func TestParseAutopushKeys(t *testing.T) {
	other := "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
	for _, tc := range []struct {
		name, list string
		n          int
		wantErr    string
	}{
		{"one", apKey, 1, ""},
		{"unpadded", strings.TrimRight(apKey, "="), 1, ""},
		{"comma list", apKey + "," + other, 2, ""},
		{"autopush list syntax", `["` + apKey + `", "` + other + `"]`, 2, ""},
		{"empty", "", 0, "no autopush keys"},
		{"brackets only", "[]", 0, "no autopush keys"},
		{"short", "AAEC", 0, "want 32"},
		{"not base64", "!!!!", 0, "not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseAutopushKeys(tc.list)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(k.keys) != tc.n {
				t.Fatalf("keys %v err %v, want %d keys", k, err, tc.n)
			}
		})
	}
}

func TestAutopushOpen(t *testing.T) {
	keys := mustAutopushKeys(t, apKey)
	// Rotation: autopush mints with the first key and opens with all.
	rotated := mustAutopushKeys(t, "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=,"+apKey)
	hash, _ := hex.DecodeString(apKeyHashV2)
	for _, tc := range []struct {
		name    string
		keys    *AutopushKeys
		version int
		token   string
		wantErr bool
		keyHash []byte
	}{
		{"v1", keys, 1, apTokenV1, false, nil},
		{"v1 padded", keys, 1, apTokenV1 + "=", false, nil}, // 140 chars: no padding really; tolerated
		{"v1 legacy path", keys, autopushLegacyVersion, apTokenV1, false, nil},
		{"v1 rotated key", rotated, 1, apTokenV1, false, nil},
		{"v2", keys, 2, apTokenV2, false, hash},
		{"v2 padded", keys, 2, apTokenV2 + "=", false, hash},
		{"v2 token on v1 path", keys, 1, apTokenV2, true, nil},
		{"v1 token on v2 path", keys, 2, apTokenV1, true, nil},
		{"v2 token on legacy path", keys, autopushLegacyVersion, apTokenV2, true, nil},
		{"wrong key", mustAutopushKeys(t, "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="), 1, apTokenV1, true, nil},
		{"tampered", keys, 1, flip(apTokenV1, 100), true, nil},
		{"truncated", keys, 1, apTokenV1[:139], true, nil},
		{"too long", keys, 1, strings.Repeat("A", MaxAutopushToken+1), true, nil},
		{"not base64", keys, 1, strings.Repeat("*", 140), true, nil},
		{"empty", keys, 1, "", true, nil},
		{"nil keys", nil, 1, apTokenV1, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, err := tc.keys.Open(tc.version, tc.token)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("opened %+v, want an error", ep)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ep.UAID != apUAID || ep.ChannelID != apChannel || !bytes.Equal(ep.KeyHash, tc.keyHash) {
				t.Fatalf("opened %+v, want %s %s %x", ep, apUAID, apChannel, tc.keyHash)
			}
		})
	}
}

// TestAutopushMintRoundTrip: a minted token (what autopush's make_endpoint
// makes) opens to what it was made of, at the sizes the parser expects.
func TestAutopushMintRoundTrip(t *testing.T) {
	keys := mustAutopushKeys(t, apKey)
	uaid := schema.RandomUAID()
	ch, _ := schema.ParseChannelID(apChannel)
	sum := sha256.Sum256([]byte("application server key"))
	for _, hash := range [][]byte{nil, sum[:]} {
		tok, err := keys.Mint(uaid, ch, hash)
		if err != nil {
			t.Fatal(err)
		}
		version := 1
		if hash != nil {
			version = 2
		}
		ep, err := keys.Open(version, tok)
		if err != nil {
			t.Fatalf("v%d %s: %v", version, tok, err)
		}
		if ep.UAID != uaid.String() || ep.ChannelID != apChannel || !bytes.Equal(ep.KeyHash, hash) {
			t.Fatalf("v%d opened %+v", version, ep)
		}
		if len(tok) > MaxAutopushToken {
			t.Fatalf("minted token of %d characters exceeds MaxAutopushToken", len(tok))
		}
	}
}

// TestAutopushTokensOverHTTP: autopush tokens are accepted beside pushlog's
// own, routed to the UAID and channel they name, counted; bad ones are 404
// errno 102 like pushlog's, and nothing opens them without the keys.
func TestAutopushTokensOverHTTP(t *testing.T) {
	keys := mustAutopushKeys(t, apKey)
	reg := prometheus.NewPedanticRegistry()
	e := newEnv(t, func(c *Config) { c.AutopushKeys = keys; c.Metrics = reg })
	ttl := map[string]string{"TTL": "60"}
	accepted := func(path string, hdr map[string]string) *pb.MessageAccepted {
		t.Helper()
		rr := e.do(http.MethodPost, path, hdr, nil)
		if rr.Code != http.StatusCreated {
			t.Fatalf("%s: %d %s, want 201", path, rr.Code, rr.Body)
		}
		m := e.openLocation(rr.Header().Get("Location"))
		_, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset)
		if ev.GetUaid() != m.UAID || m.ChannelID != ev.GetMessageAccepted().GetChannelId() {
			t.Fatalf("%s: Location %+v does not match event %v", path, m, ev)
		}
		return ev.GetMessageAccepted()
	}
	for _, path := range []string{"/wpush/v1/" + apTokenV1, "/wpush/" + apTokenV1} {
		ma := accepted(path, ttl)
		if ma.GetChannelId() != apChannel || ma.GetKeyBound() {
			t.Fatalf("%s: %v, want channel %s, not key-bound", path, ma, apChannel)
		}
	}
	// pushlog's own endpoints still work beside them.
	accepted(e.endpoint(testUAID, testChannel, nil), ttl)

	// v2: the token's key hash must match the VAPID key, as for pushlog's v2.
	uaid, _ := schema.ParseUAID(apUAID)
	ch, _ := schema.ParseChannelID(apChannel)
	v2, err := keys.Mint(uaid, ch, e.vapid.keyHash())
	if err != nil {
		t.Fatal(err)
	}
	signed := map[string]string{"TTL": "60", "Authorization": e.vapid.header(t, testPublicURL)}
	if ma := accepted("/wpush/v2/"+v2, signed); !ma.GetKeyBound() || ma.GetChannelId() != apChannel {
		t.Fatalf("v2: %v, want key-bound to channel %s", ma, apChannel)
	}
	other := newTestVAPID(t)
	rr := e.do(http.MethodPost, "/wpush/v2/"+v2, map[string]string{"TTL": "60", "Authorization": other.header(t, testPublicURL)}, nil)
	if rr.Code != http.StatusUnauthorized || errBody(t, rr).Errno != 109 {
		t.Fatalf("v2 signed with another key: %d %s, want 401 errno 109", rr.Code, rr.Body)
	}
	if rr := e.do(http.MethodPost, "/wpush/v2/"+apTokenV2, ttl, nil); rr.Code != http.StatusUnauthorized {
		t.Fatalf("v2 without VAPID: %d %s, want 401", rr.Code, rr.Body)
	}

	bad := []string{"/wpush/v2/" + apTokenV1, "/wpush/v1/" + apTokenV1[:120], "/wpush/v1/" + strings.Repeat("A", 4000), "/wpush/" + apTokenV2, "/wpush/" + e.endpoint(testUAID, testChannel, nil)[len("/wpush/v1/"):]}
	for _, path := range bad {
		rr := e.do(http.MethodPost, path, ttl, nil)
		if rr.Code != http.StatusNotFound || errBody(t, rr).Errno != 102 {
			t.Fatalf("%s: %d %s, want 404 errno 102", path[:min(len(path), 40)], rr.Code, rr.Body)
		}
	}
	if v1, v2n, refused := e.srv.autopush.v1.Load(), e.srv.autopush.v2.Load(), e.srv.autopush.refused.Load(); v1 != 2 || v2n != 3 || refused != int64(len(bad)) {
		t.Fatalf("counted v1 %d, v2 %d, refused %d; want 2, 3, %d", v1, v2n, refused, len(bad))
	}
	want := fmt.Sprintf(`# HELP pushlog_ingest_autopush_tokens_total Pushes to endpoints minted by autopush (--autopush-crypto-keys), by version; result=refused counts tokens that matched neither pushlog's nor autopush's keys while autopush keys are configured.
# TYPE pushlog_ingest_autopush_tokens_total counter
pushlog_ingest_autopush_tokens_total{result="opened",version="1"} 2
pushlog_ingest_autopush_tokens_total{result="opened",version="2"} 3
pushlog_ingest_autopush_tokens_total{result="refused",version=""} %d
`, len(bad))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_ingest_autopush_tokens_total"); err != nil {
		t.Fatal(err)
	}

	plain := newEnv(t)
	if rr := plain.do(http.MethodPost, "/wpush/v1/"+apTokenV1, ttl, nil); rr.Code != http.StatusNotFound || errBody(t, rr).Errno != 102 {
		t.Fatalf("without autopush keys: %d %s, want 404 errno 102", rr.Code, rr.Body)
	}
}

// FuzzAutopushToken: no input crashes the parser, and whatever opens is a
// well-formed endpoint of the path's version.
func FuzzAutopushToken(f *testing.F) {
	keys, err := ParseAutopushKeys(apKey)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{apTokenV1, apTokenV2, "", "gAAAAA", strings.Repeat("A", 140), strings.Repeat("_", 183)} {
		for _, v := range []int{0, 1, 2} {
			f.Add(v, s)
		}
	}
	f.Fuzz(func(t *testing.T, version int, token string) {
		ep, err := keys.Open(version, token)
		if err != nil {
			return
		}
		if _, perr := schema.ParseUAID(ep.UAID); perr != nil {
			t.Fatalf("opened a bad uaid %q", ep.UAID)
		}
		if (version == 2) != (len(ep.KeyHash) == sha256.Size) {
			t.Fatalf("version %d opened key hash %x", version, ep.KeyHash)
		}
	})
}
