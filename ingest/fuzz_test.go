package ingest

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Parsers of outside input must never panic and must keep their invariants.
// Seeds are added here and under testdata/fuzz/.

func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{
		"vapid t=" + rfcJWT + ", k=" + rfcKey,
		"vapid t=" + rfcJWT + ",k=" + rfcKey,
		"VAPID k=" + rfcKey + "==, t=" + rfcJWT + ", x=y",
		"WebPush " + rfcJWT,
		"Bearer " + rfcJWT,
		"vapid", "vapid ,,,=,=", "Basic x", "", " ", "vapid t==, k==",
	} {
		f.Add(s, "p256ecdsa="+rfcKey)
	}
	f.Fuzz(func(t *testing.T, header, cryptoKey string) {
		a, aerr := parseAuthorization(header)
		if aerr != nil {
			if aerr.status != http.StatusUnauthorized || aerr.errno != errnoInvalidAuth {
				t.Fatalf("%q: error %v, want 401/109", header, aerr)
			}
			return
		}
		if a.token == "" {
			t.Fatalf("%q: accepted without a token", header)
		}
		switch a.scheme {
		case "vapid", "webpush", "bearer":
		default:
			t.Fatalf("%q: scheme %q", header, a.scheme)
		}
		key := a.key
		if key == "" {
			ck, err := parseCryptoHeader(cryptoKey)
			if err != nil {
				return
			}
			key, _ = ck.get("p256ecdsa")
		}
		if k, err := decodeKey(key); err == nil && k[0] != 4 {
			t.Fatalf("%q: decoded key does not start with 0x04", key)
		}
	})
}

func FuzzParseCryptoHeader(f *testing.F) {
	for _, s := range []string{
		"dh=abc", `keyid="p256dh";dh="abc=="`, "dh=abc;p256ecdsa=xyz", "dh=abc, p256ecdsa=xyz",
		`salt="c2FsdA==";rs=4096`, "salt=a,rs=3000", "keyid=a;dh=one,keyid=b;dh=two",
		"", ";", ",", "=", "dh", "a=b=c", `"""`, "dh=\x00",
		`keyid="p256dh"; salt="c2FsdA=="; rs=4096`, "keyid=b;dh=abc=,keyid=c;dh=ab==,p256ecdsa=xyz=",
		"dh=abc== ;rs=10", "keyid=;salt=abc", "Salt=abc", "salt=abc;x=\u00e9", "dh=a/==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		fwd := forwardCryptoHeader(h)
		if strings.Contains(fwd, `"`) || len(fwd) > len(h) {
			t.Fatalf("%q: forwarded %q keeps a quote or grew", h, fwd)
		}
		for _, ce := range []string{"aesgcm", "aes128gcm"} {
			for _, hdrs := range []encodingHeaders{
				{contentEncoding: []string{ce}, encryption: h, cryptoKey: "dh=abc"},
				{contentEncoding: []string{ce}, encryption: "salt=abc", cryptoKey: h},
			} {
				enc, aerr := checkEncoding(hdrs, true)
				if aerr != nil {
					if aerr.status != http.StatusBadRequest || aerr.errno != errnoInvalidCrypto {
						t.Fatalf("%q: error %v, want 400/110", h, aerr)
					}
					continue
				}
				if enc.name != ce {
					t.Fatalf("%q: encoding %q, want %q", h, enc.name, ce)
				}
				if ce == "aes128gcm" {
					if enc.encryption != "" || enc.cryptoKey != "" {
						t.Fatalf("%q: aes128gcm forwards crypto headers %+v", h, enc)
					}
					continue
				}
				checkForwarded(t, hdrs, enc)
			}
		}
	})
}

// checkForwarded: an accepted aesgcm push forwards the sender's headers
// cleaned as autopush cleans them, printable, and a user agent reading
// them (keys as written) finds the salt and the keyid's dh that were
// validated.
func checkForwarded(t *testing.T, hdrs encodingHeaders, enc encoding) {
	t.Helper()
	if enc.encryption != forwardCryptoHeader(hdrs.encryption) || enc.cryptoKey != forwardCryptoHeader(hdrs.cryptoKey) {
		t.Fatalf("%+v: forwarded %+v, not the cleaned headers", hdrs, enc)
	}
	if !isHeaderText(enc.encryption) || !isHeaderText(enc.cryptoKey) {
		t.Fatalf("%+v: forwarded non-printable headers %+v", hdrs, enc)
	}
	e, err1 := parseParams(enc.encryption, false)
	ck, err2 := parseParams(enc.cryptoKey, false)
	if err1 != nil || err2 != nil {
		t.Fatalf("%+v: forwarded headers do not parse: %v %v", hdrs, err1, err2)
	}
	salt, _ := e.get("salt")
	keyid, _ := e.get("keyid")
	dh, _ := ck.dh(keyid)
	if salt == "" || !isBase64URL(salt) || dh == "" || !isBase64URL(dh) {
		t.Fatalf("%+v: forwarded salt %q dh %q", hdrs, salt, dh)
	}
}

func FuzzTTLHeader(f *testing.F) {
	for _, s := range []string{"0", "60", "-1", "2592001", "99999999999999999999", "-99999999999999999999", "", " 5 ", "+5", "1.5", "0x10", "1e3", `" 5 "`, "5 0", "\t7\t", "-0"} {
		f.Add(s, "normal", "topic")
	}
	const max = 30 * 24 * time.Hour
	f.Fuzz(func(t *testing.T, ttl, urgency, topic string) {
		n, aerr := parseTTL([]string{ttl}, max)
		if aerr != nil {
			if aerr.status != http.StatusBadRequest || (aerr.errno != errnoMissingHeader && aerr.errno != errnoInvalidTTL) {
				t.Fatalf("TTL %q: error %v", ttl, aerr)
			}
		} else if n < 0 || n > int64(max/time.Second) {
			t.Fatalf("TTL %q: applied %d outside [0, max]", ttl, n)
		} else if !isDigits(strings.Trim(ttl, " \t")) {
			// PROTOCOL.md: digits only, around which HTTP's OWS may be.
			t.Fatalf("TTL %q accepted as %d", ttl, n)
		}
		if _, aerr := parseUrgency([]string{urgency}); aerr != nil && aerr.status != http.StatusBadRequest {
			t.Fatalf("Urgency %q: %v", urgency, aerr)
		}
		got, aerr := parseTopic([]string{topic})
		if aerr == nil && (len(got) > maxTopicLen || !isBase64URL(got)) {
			t.Fatalf("Topic %q accepted as %q", topic, got)
		}
	})
}

func FuzzVerifyVAPID(f *testing.F) {
	f.Add(rfcJWT, rfcKey)
	f.Add(flip(rfcJWT, 50), rfcKey)
	f.Add("a.b.c", rfcKey)
	f.Add(rfcJWT+"==", rfcKey)
	f.Fuzz(func(t *testing.T, token, key string) {
		k, err := decodeKey(key)
		if err != nil {
			return
		}
		v := newVAPIDVerifier([]string{rfcAud}, rfcClock, 1<<20, 0)
		res, aerr := v.verify(token, k)
		if aerr != nil {
			if aerr.status != http.StatusUnauthorized {
				t.Fatalf("error %v, want 401", aerr)
			}
			return
		}
		if res.exp.IsZero() {
			t.Fatal("verified without exp")
		}
	})
}

// FuzzVAPIDClaims: the claims of a signed JWT, checked exactly (PROTOCOL.md
// §2): whatever the JSON, an accepted token has a numeric exp in range, an
// aud equal to the origin and a sub within its bound; and the claims
// scanner, jsonString and jsonNumericDate answer as encoding/json does.
func FuzzVAPIDClaims(f *testing.F) {
	for _, s := range []string{
		`{"aud":"https://push.example.net","exp":1453523768,"sub":"mailto:push@example.com"}`,
		`{"aud":"https://push.example.net/","exp":1453523768}`,
		`{"aud":"https://push.example.net","exp":"1453523768"}`,
		`{"aud":["https://push.example.net"],"exp":1453523768}`,
		`{"aud":"https://push.example.net","exp":1453523768.25,"nbf":0}`,
		`{"aud":"https://push.example.net","exp":1e999}`,
		`{"aud":"https://push.example.net","exp":null,"sub":null}`,
		`{"aud":"https://push.example.net","exp":-0,"sub":"\u00e9"}`,
		`{"exp":1453523768,"exp":"x"}`, `[]`, `null`, `{}`, `{"aud":1}`,
		` { "aud" : "https://push.example.net" , "exp" : 1453523768 } `,
		`{"AUD":"https://push.example.net","exp":1453523768}`, `{"Exp":1,"exp":1453523768}`,
		`{"aud":"https://push.example.net","aud":"x","exp":1453523768,"iat":1453520000}`,
		`{"aud":"https:\/\/push.example.net","exp":1453523768}`, "{\"aud\":\"\xff\",\"exp\":1}",
		`{"x":{"a":[1,2]},"exp":1453523768}`, `{"exp":1453523768}x`, `{"exp":01}`, `{"exp":1.}`,
		`{"exp":-}`, `{"exp":1e+}`, `{"exp":true,"nbf":false}`, `{"ſub":"a","exp":1}`, `{"Key":1}`,
		`{"exp":1,}`, `{,}`, `{"exp" 1}`, `{"exp":1`, "{\"sub\":\"a\tb\"}",
	} {
		f.Add(s)
	}
	const maxSub = 16
	v := newVAPIDVerifier([]string{rfcAud}, rfcClock, 0, maxSub)
	now := rfcClock()
	f.Fuzz(func(t *testing.T, payload string) {
		checkClaimsDecoding(t, payload)
		claims, err := decodeClaims([]byte(payload))
		if err != nil {
			return
		}
		res, aerr := v.checkClaims(claims, now)
		if aerr != nil {
			if aerr.status != http.StatusUnauthorized || aerr.errno != errnoInvalidAuth {
				t.Fatalf("%s: error %v, want 401/109", payload, aerr)
			}
			return
		}
		if len(res.sub) > maxSub {
			t.Fatalf("%s: sub of %d bytes accepted", payload, len(res.sub))
		}
		if res.exp.Before(now.Add(-vapidSkew)) || res.exp.After(now.Add(vapidMaxAhead+vapidSkew)) {
			t.Fatalf("%s: exp %s out of range", payload, res.exp)
		}
		if aud, ok := jsonString(claims.Aud); !ok || aud != rfcAud {
			t.Fatalf("%s: aud %s accepted", payload, claims.Aud)
		}
		if e := bytes.TrimSpace(claims.Exp); len(e) == 0 || e[0] == '"' {
			t.Fatalf("%s: exp %s accepted", payload, claims.Exp)
		}
	})
}

// checkClaimsDecoding holds the claims scanner, jsonString and
// jsonNumericDate to encoding/json's answers for payload.
func checkClaimsDecoding(t *testing.T, payload string) {
	t.Helper()
	var want vapidClaims
	werr := json.Unmarshal([]byte(payload), &want)
	got, ok := scanClaims([]byte(payload))
	if !ok {
		return
	}
	if werr != nil {
		t.Fatalf("%q: scanned, but encoding/json refuses it: %v", payload, werr)
	}
	for _, f := range []struct {
		name      string
		got, want json.RawMessage
	}{{"aud", got.Aud, want.Aud}, {"exp", got.Exp, want.Exp}, {"nbf", got.Nbf, want.Nbf}, {"sub", got.Sub, want.Sub}} {
		if (f.got == nil) != (f.want == nil) || !bytes.Equal(f.got, f.want) {
			t.Fatalf("%q: %s scanned as %q, encoding/json %q", payload, f.name, f.got, f.want)
		}
		if f.want == nil {
			continue
		}
		var ws string
		wok := bytes.TrimSpace(f.want)[0] == '"' && json.Unmarshal(f.want, &ws) == nil
		if gs, gok := jsonString(f.got); gok != wok || gs != ws {
			t.Fatalf("%q: %s as a string: %q %v, encoding/json %q %v", payload, f.name, gs, gok, ws, wok)
		}
		var wf float64
		c := bytes.TrimSpace(f.want)[0]
		wok = (c == '-' || c >= '0' && c <= '9') && json.Unmarshal(f.want, &wf) == nil && math.Abs(wf) <= maxNumericDate
		gt, gok := jsonNumericDate(f.got)
		sec, frac := math.Modf(wf)
		if gok != wok || (wok && !gt.Equal(time.Unix(int64(sec), int64(frac*1e9)))) {
			t.Fatalf("%q: %s as a date: %v %v, encoding/json %v %v", payload, f.name, gt, gok, wf, wok)
		}
	}
}
