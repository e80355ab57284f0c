package webpush

import (
	"bytes"
	"crypto/ecdh"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	webpushgo "github.com/SherClockHolmes/webpush-go"

	"github.com/pushlog/pushlog/schema"
)

// RFC 8291 §5 / Appendix A (also PROTOCOL.md §6).
const (
	rfc8291Plain    = "When I grow up, I want to be a watermelon"
	rfc8291Auth     = "BTBZMqHH6r4Tts7J_aSIgg"
	rfc8291UAPublic = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
	rfc8291UAPriv   = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
	rfc8291ASPriv   = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
	rfc8291Salt     = "DGv6ra1nlYgDCS1FRnbzlw"
	rfc8291Body     = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

// draft-ietf-webpush-encryption-04 §5 / Appendix A: the aesgcm example.
const (
	aesgcmPlain      = "I am the walrus"
	aesgcmAuth       = "R29vIGdvbyBnJyBqb29iIQ"
	aesgcmUAPriv     = "9FWl15_QUQAWDaD3k3l50ZBZQJ4au27F1V4F0uLSD_M"
	aesgcmUAPublic   = "BCEkBjzL8Z3C-oi2Q7oE5t2Np-p7osjGLg93qUP0wvqRT21EEWyf0cQDQcakQMqz4hQKYOQ3il2nNZct4HgAUQU"
	aesgcmASPriv     = "nCScek-QpEjmOOlT-rQ38nZzvdPlqa00Zy0i6m2OJvY"
	aesgcmASPublic   = "BNoRDbb84JGm8g5Z5CFxurSqsXWJ11ItfXEWYVLE85Y7CYkDjXsIEc4aqxYaQ1G8BqkXCJ6DPpDrWtdWj_mugHU"
	aesgcmSalt       = "lngarbyKfMoi9Z75xYXmkg"
	aesgcmCiphertext = "6nqAQUME8hNqw5J3kl8cpVVJylXKYqZOeseZG8UueKpA"
)

func mustB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := schema.DecodeBase64(s)
	if err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return b
}

func mustReceiver(t testing.TB, priv, auth string) *ReceiverKeys {
	t.Helper()
	k, err := ParseReceiverKeys(priv, auth)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustECDH(t testing.TB, priv string) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.P256().NewPrivateKey(mustB64(t, priv))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRFC8291Vector(t *testing.T) {
	k := mustReceiver(t, rfc8291UAPriv, rfc8291Auth)
	if got := k.PublicKeyString(); got != rfc8291UAPublic {
		t.Fatalf("ua public key = %s", got)
	}
	body := mustB64(t, rfc8291Body)
	if len(body) != 144 {
		t.Fatalf("body is %d bytes, want 144", len(body))
	}
	plain, err := k.Decrypt(Message{Encoding: AES128GCM, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if string(plain) != rfc8291Plain {
		t.Fatalf("plaintext = %q", plain)
	}

	// The sender side reproduces the RFC's body byte for byte.
	m, err := Encrypt(k.Subscription("https://push.example.net/x"), []byte(rfc8291Plain), EncryptOptions{
		Salt: mustB64(t, rfc8291Salt), SenderKey: mustECDH(t, rfc8291ASPriv),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := b64(m.Body); got != rfc8291Body {
		t.Fatalf("encrypted body =\n%s\nwant\n%s", got, rfc8291Body)
	}
	if m.Encryption != "" || m.CryptoKey != "" || m.Encoding != AES128GCM {
		t.Fatalf("aes128gcm message carries headers: %+v", m)
	}
}

func TestRFC8188Examples(t *testing.T) {
	tests := []struct {
		name, ikm, salt, keyID string
		rs                     uint32
		pad                    int
		body                   string
	}{
		{"3.1 single record", "yqdlZ-tYemfogSmv7Ws5PQ", "I1BsxtFttlv3u_Oo94xnmw", "", 4096, 0,
			"I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg"},
		{"3.2 two records and a keyid", "BO3ZVPxUlnLORbVGMpbT1Q", "uNCkWiNYzKTnBN9ji3-qWA", "a1", 25, 1,
			"uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ikm, body := mustB64(t, tc.ikm), mustB64(t, tc.body)
			plain, err := DecryptContent(ikm, body)
			if err != nil {
				t.Fatal(err)
			}
			if string(plain) != "I am the walrus" {
				t.Fatalf("plaintext = %q", plain)
			}
			h, _, err := ParseHeader(body)
			if err != nil {
				t.Fatal(err)
			}
			if h.RecordSize != tc.rs || string(h.KeyID) != tc.keyID {
				t.Fatalf("header = %+v", h)
			}
			enc, err := EncryptContent(ikm, mustB64(t, tc.salt), []byte(tc.keyID), tc.rs, plain, tc.pad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, body) {
				t.Fatalf("encrypted =\n%s\nwant\n%s", b64(enc), tc.body)
			}
			if _, err := DecryptContent(mustB64(t, "AAAAAAAAAAAAAAAAAAAAAA"), body); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("wrong key: err = %v", err)
			}
		})
	}
}

func TestAESGCMDraftVector(t *testing.T) {
	k := mustReceiver(t, aesgcmUAPriv, aesgcmAuth)
	if got := k.PublicKeyString(); got != aesgcmUAPublic {
		t.Fatalf("ua public key = %s", got)
	}
	as := mustECDH(t, aesgcmASPriv)
	if got := b64(as.PublicKey().Bytes()); got != aesgcmASPublic {
		t.Fatalf("as public key = %s", got)
	}
	// The header spellings a receiver meets: the draft's quoted form with
	// keyids, plain, and ',' as the separator.
	headers := []struct{ enc, key string }{
		{`salt="` + aesgcmSalt + `"`, `dh="` + aesgcmASPublic + `"`},
		{`keyid="dhkey"; salt="` + aesgcmSalt + `"`, `keyid="other";dh=BAAA,keyid="dhkey"; dh="` + aesgcmASPublic + `"`},
		{"salt=" + aesgcmSalt + ",rs=4096", "dh=" + aesgcmASPublic + ";p256ecdsa=" + aesgcmUAPublic},
		{"salt=" + aesgcmSalt + "==", "p256ecdsa=" + aesgcmUAPublic + ",dh=" + aesgcmASPublic + "="},
	}
	for _, h := range headers {
		plain, err := k.Decrypt(Message{Encoding: "aesgcm", Body: mustB64(t, aesgcmCiphertext), Encryption: h.enc, CryptoKey: h.key})
		if err != nil {
			t.Fatalf("Encryption %q Crypto-Key %q: %v", h.enc, h.key, err)
		}
		if string(plain) != aesgcmPlain {
			t.Fatalf("plaintext = %q", plain)
		}
	}
	m, err := Encrypt(k.Subscription("https://push.example.net/x"), []byte(aesgcmPlain), EncryptOptions{
		Encoding: AESGCM, Salt: mustB64(t, aesgcmSalt), SenderKey: as,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := b64(m.Body); got != aesgcmCiphertext {
		t.Fatalf("ciphertext = %s, want %s", got, aesgcmCiphertext)
	}
	if m.Encryption != "salt="+aesgcmSalt || m.CryptoKey != "dh="+aesgcmASPublic {
		t.Fatalf("headers = %q / %q", m.Encryption, m.CryptoKey)
	}
	h := m.Header()
	if h.Get("Content-Encoding") != AESGCM || h.Get("Encryption") != m.Encryption || h.Get("Crypto-Key") != m.CryptoKey {
		t.Fatalf("Header() = %v", h)
	}
}

func TestRoundTrip(t *testing.T) {
	k, err := GenerateReceiverKeys()
	if err != nil {
		t.Fatal(err)
	}
	sub := k.Subscription("https://push.example.net/wpush/v1/abc")
	big := bytes.Repeat([]byte("0123456789abcdef"), 512) // 8 KiB
	tests := []struct {
		name  string
		plain []byte
		opts  EncryptOptions
		size  int // expected body size, 0 = unchecked
	}{
		{"aes128gcm empty", nil, EncryptOptions{}, 86 + 1 + 16},
		{"aes128gcm short", []byte("hi"), EncryptOptions{}, 86 + 3 + 16},
		{"aes128gcm max in 4096 body", big[:3993], EncryptOptions{}, 4096},
		// webpush-go pads every body to exactly 4096 bytes.
		{"aes128gcm padded to 4096", []byte("hello"), EncryptOptions{Padding: 3993 - 5}, 4096},
		{"aes128gcm full record", big[:4079], EncryptOptions{}, 86 + 4096},
		{"aes128gcm small rs", []byte("x"), EncryptOptions{RecordSize: 18}, 86 + 18},
		{"aesgcm empty", nil, EncryptOptions{Encoding: AESGCM}, 18},
		{"aesgcm short", []byte("hi"), EncryptOptions{Encoding: AESGCM}, 20},
		{"aesgcm padded", []byte("hello"), EncryptOptions{Encoding: AESGCM, Padding: 100}, 123},
		{"aesgcm several records", big, EncryptOptions{Encoding: AESGCM, RecordSize: 1000, Padding: 3000}, 0},
		{"aesgcm exactly one full record", big[:4094], EncryptOptions{Encoding: AESGCM}, 4112 + 18},
		{"aesgcm tiny rs", []byte("abcdef"), EncryptOptions{Encoding: AESGCM, RecordSize: 3}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Encrypt(sub, tc.plain, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.size != 0 && len(m.Body) != tc.size {
				t.Fatalf("body is %d bytes, want %d", len(m.Body), tc.size)
			}
			got, err := k.Decrypt(*m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.plain) {
				t.Fatalf("round trip changed the message: %d bytes -> %d", len(tc.plain), len(got))
			}
			// Another subscription's keys cannot read it.
			other, _ := GenerateReceiverKeys()
			if _, err := other.Decrypt(*m); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("decrypt with other keys: err = %v", err)
			}
		})
	}
}

func TestEncryptContentMultiRecordPadding(t *testing.T) {
	ikm := bytes.Repeat([]byte{7}, 16)
	salt := bytes.Repeat([]byte{9}, 16)
	for _, n := range []int{0, 1, 7, 8, 9, 30} {
		for _, pad := range []int{0, 1, 2, 9, 40} {
			plain := bytes.Repeat([]byte("z"), n)
			body, err := EncryptContent(ikm, salt, nil, 25, plain, pad)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecryptContent(ikm, body)
			if err != nil {
				t.Fatalf("n=%d pad=%d: %v", n, pad, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("n=%d pad=%d: got %q", n, pad, got)
			}
			if n == 9 && pad == 0 {
				// A truncated stream (the last record dropped) is refused.
				if _, err := DecryptContent(ikm, body[:21+25]); !errors.Is(err, ErrDecrypt) {
					t.Fatalf("truncated: err = %v", err)
				}
			}
		}
	}
}

func TestEncryptRejects(t *testing.T) {
	k, _ := GenerateReceiverKeys()
	sub := k.Subscription("https://push.example.net/x")
	tests := []struct {
		name  string
		sub   Subscription
		plain []byte
		opts  EncryptOptions
	}{
		{"too long for one record", sub, make([]byte, 4080), EncryptOptions{}},
		{"padding too long", sub, []byte("x"), EncryptOptions{Padding: 4079}},
		{"negative padding", sub, nil, EncryptOptions{Padding: -1}},
		{"rs below 18", sub, nil, EncryptOptions{RecordSize: 17}},
		{"aesgcm rs 2", sub, nil, EncryptOptions{Encoding: AESGCM, RecordSize: 2}},
		{"retired aesgcm128", sub, nil, EncryptOptions{Encoding: "aesgcm128"}},
		{"short salt", sub, nil, EncryptOptions{Salt: []byte("short")}},
		{"no keys", Subscription{Endpoint: sub.Endpoint}, nil, EncryptOptions{}},
		{"bad p256dh", Subscription{Endpoint: sub.Endpoint, Keys: SubscriptionKeys{P256dh: "BAAA", Auth: sub.Keys.Auth}}, nil, EncryptOptions{}},
		{"short auth", Subscription{Endpoint: sub.Endpoint, Keys: SubscriptionKeys{P256dh: sub.Keys.P256dh, Auth: "AAAA"}}, nil, EncryptOptions{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Encrypt(tc.sub, tc.plain, tc.opts); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestDecryptRejects(t *testing.T) {
	k := mustReceiver(t, rfc8291UAPriv, rfc8291Auth)
	good := mustB64(t, rfc8291Body)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	withRS := func(rs uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[16:20], rs)
		return b
	}
	sub := k.Subscription("https://push.example.net/x")
	// A record whose delimiter is 1 although it is the last one, i.e. a
	// stream cut after a full record.
	ikmFor := func(m *Message) []byte {
		h, _, _ := ParseHeader(m.Body)
		as, _ := ecdh.P256().NewPublicKey(h.KeyID)
		secret, _ := k.Private.ECDH(as)
		ikm, _ := webPushIKM(secret, k.Auth, k.Private.PublicKey().Bytes(), h.KeyID)
		return ikm
	}
	sender := mustECDH(t, rfc8291ASPriv)
	m, _ := Encrypt(sub, []byte("abc"), EncryptOptions{SenderKey: sender})
	cut, _ := EncryptContent(ikmFor(m), m.Body[:16], m.Body[21:86], 18, []byte("abc"), 0)
	cut = cut[:86+18] // first of three records only

	aesgcmKeys := mustReceiver(t, aesgcmUAPriv, aesgcmAuth)
	agBody := mustB64(t, aesgcmCiphertext)
	agEnc, agKey := "salt="+aesgcmSalt, "dh="+aesgcmASPublic
	tests := []struct {
		name string
		k    *ReceiverKeys
		m    Message
	}{
		{"unknown encoding", k, Message{Encoding: "aesgcm128", Body: good}},
		{"empty encoding", k, Message{Body: good}},
		{"empty body", k, Message{Encoding: AES128GCM}},
		{"short header", k, Message{Encoding: AES128GCM, Body: good[:20]}},
		{"keyid longer than body", k, Message{Encoding: AES128GCM, Body: good[:80]}},
		{"header only", k, Message{Encoding: AES128GCM, Body: good[:86]}},
		{"record shorter than a tag", k, Message{Encoding: AES128GCM, Body: good[:90]}},
		{"flipped salt", k, Message{Encoding: AES128GCM, Body: flip(3)}},
		{"flipped keyid", k, Message{Encoding: AES128GCM, Body: flip(40)}},
		{"flipped ciphertext", k, Message{Encoding: AES128GCM, Body: flip(100)}},
		{"flipped tag", k, Message{Encoding: AES128GCM, Body: flip(143)}},
		{"rs below 18", k, Message{Encoding: AES128GCM, Body: withRS(17)}},
		{"rs splits the record", k, Message{Encoding: AES128GCM, Body: withRS(20)}},
		{"keyid not a point", k, Message{Encoding: AES128GCM, Body: append(append(bytes.Clone(good[:20]), 3, 1, 2, 3), good[86:]...)}},
		{"truncated after a full record", k, Message{Encoding: AES128GCM, Body: cut}},
		{"aesgcm no salt", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: "rs=4096", CryptoKey: agKey}},
		{"aesgcm bad salt", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: "salt=!!", CryptoKey: agKey}},
		{"aesgcm short salt", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: "salt=AAAA", CryptoKey: agKey}},
		{"aesgcm bad rs", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc + ";rs=x", CryptoKey: agKey}},
		{"aesgcm rs 2", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc + ";rs=2", CryptoKey: agKey}},
		{"aesgcm rs on boundary", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc + ";rs=17", CryptoKey: agKey}},
		{"aesgcm wrong rs", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc + ";rs=10", CryptoKey: agKey}},
		{"aesgcm no dh", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc, CryptoKey: "p256ecdsa=" + aesgcmASPublic}},
		{"aesgcm dh not a point", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc, CryptoKey: "dh=BAAA"}},
		{"aesgcm dh bad base64", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc, CryptoKey: "dh=!!"}},
		{"aesgcm empty body", aesgcmKeys, Message{Encoding: AESGCM, Encryption: agEnc, CryptoKey: agKey}},
		{"aesgcm flipped", aesgcmKeys, Message{Encoding: AESGCM, Body: append([]byte{agBody[0] ^ 1}, agBody[1:]...), Encryption: agEnc, CryptoKey: agKey}},
		{"aesgcm truncated", aesgcmKeys, Message{Encoding: AESGCM, Body: agBody[:17], Encryption: agEnc, CryptoKey: agKey}},
		{"aesgcm wrong auth", mustReceiver(t, aesgcmUAPriv, rfc8291Auth), Message{Encoding: AESGCM, Body: agBody, Encryption: agEnc, CryptoKey: agKey}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plain, err := tc.k.Decrypt(tc.m)
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %v (plaintext %q), want ErrDecrypt", err, plain)
			}
		})
	}
}

// Padding rules inside a decrypted record.
func TestUnpadRecord(t *testing.T) {
	tests := []struct {
		in   string
		last bool
		want string
		ok   bool
	}{
		{"abc\x02", true, "abc", true},
		{"abc\x02\x00\x00", true, "abc", true},
		{"abc\x01\x00", false, "abc", true},
		{"\x02", true, "", true},
		{"abc\x01", true, "", false},      // non-final delimiter on the last record
		{"abc\x02", false, "", false},     // final delimiter too early
		{"\x00\x00\x00", true, "", false}, // no delimiter at all
		{"", true, "", false},
		{"abc\x03\x00", true, "", false},
	}
	for _, tc := range tests {
		got, err := unpadRecord([]byte(tc.in), tc.last)
		if (err == nil) != tc.ok || string(got) != tc.want {
			t.Errorf("unpadRecord(%q, %v) = %q, %v", tc.in, tc.last, got, err)
		}
	}
}

func TestAESGCMPadding(t *testing.T) {
	k, _ := GenerateReceiverKeys()
	sub := k.Subscription("https://push.example.net/x")
	m, err := Encrypt(sub, []byte("payload"), EncryptOptions{Encoding: AESGCM, Padding: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Re-seal the record with a padding length past its end, and with
	// non-zero padding, under the message's own keys.
	salt, _, _, _ := parseEncryption(m.Encryption)
	dh, _ := findDH(m.CryptoKey, "")
	as, _ := ecdh.P256().NewPublicKey(dh)
	secret, _ := k.Private.ECDH(as)
	keys, err := aesgcmKeys(secret, k.Auth, k.Private.PublicKey().Bytes(), dh, salt)
	if err != nil {
		t.Fatal(err)
	}
	for name, rec := range map[string][]byte{
		"pad length past the end": {0, 20, 0, 0, 'x'},
		"non-zero padding":        {0, 2, 0, 1, 'x'},
		"shorter than the length": {0},
	} {
		body := keys.aead.Seal(nil, recordNonce(keys.nonce, 0), rec, nil)
		bad := Message{Encoding: AESGCM, Body: body, Encryption: m.Encryption, CryptoKey: m.CryptoKey}
		if _, err := k.Decrypt(bad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestParseSubscription(t *testing.T) {
	k := mustReceiver(t, rfc8291UAPriv, rfc8291Auth)
	ok := `{"endpoint":"https://push.example.net/wpush/v1/abc","expirationTime":null,"keys":{"p256dh":"` + rfc8291UAPublic + `","auth":"` + rfc8291Auth + `"}}`
	s, err := ParseSubscription([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if s != k.Subscription("https://push.example.net/wpush/v1/abc") {
		t.Fatalf("parsed %+v", s)
	}
	// Padded standard base64 keys are tolerated.
	std := strings.NewReplacer("-", "+", "_", "/").Replace(rfc8291UAPublic) + "="
	if _, err := ParseSubscription([]byte(`{"endpoint":"http://127.0.0.1:8080/x","keys":{"p256dh":"` + std + `","auth":"` + rfc8291Auth + `=="}}`)); err != nil {
		t.Fatalf("standard base64: %v", err)
	}
	for _, bad := range []string{
		``, `[]`, `{"endpoint":"https://x/y"}`,
		`{"endpoint":"/relative","keys":{"p256dh":"` + rfc8291UAPublic + `","auth":"` + rfc8291Auth + `"}}`,
		`{"endpoint":"ftp://x/y","keys":{"p256dh":"` + rfc8291UAPublic + `","auth":"` + rfc8291Auth + `"}}`,
		`{"endpoint":"https://x/y","keys":{"p256dh":"BAAA","auth":"` + rfc8291Auth + `"}}`,
		`{"endpoint":"https://x/y","keys":{"p256dh":"` + rfc8291UAPublic + `","auth":"AAAA"}}`,
		`{"endpoint":"https://x/y","keys":{"p256dh":"` + rfc8291UAPublic + `","auth":"!!"}}`,
	} {
		if _, err := ParseSubscription([]byte(bad)); err == nil {
			t.Errorf("ParseSubscription(%s): no error", bad)
		}
	}
}

func TestOrigin(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://push.example.net/wpush/v1/abc", "https://push.example.net"},
		{"HTTPS://Push.Example.NET:8443/x?y#z", "https://push.example.net:8443"},
		{"http://127.0.0.1:8080/wpush/v2/t", "http://127.0.0.1:8080"},
		{"https://[::1]:9/x", "https://[::1]:9"},
		{"ws://x/y", ""},
		{"/x", ""},
		{"https:///x", ""},
		{"%zz", ""},
	}
	for _, tc := range tests {
		got, err := Origin(tc.in)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("Origin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// A body from an independent implementation: webpush-go's SendNotification
// posts to a test server, and this package decrypts what it captured.
func TestDecryptWebpushGo(t *testing.T) {
	k, err := GenerateReceiverKeys()
	if err != nil {
		t.Fatal(err)
	}
	type captured struct {
		header http.Header
		body   []byte
	}
	got := make(chan captured, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- captured{r.Header.Clone(), b}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	vapidPriv, vapidPub, err := webpushgo.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	sub := k.Subscription(srv.URL + "/wpush/v1/token")
	for _, msg := range []string{"", "hello from webpush-go", strings.Repeat("é", 1000)} {
		resp, err := webpushgo.SendNotification([]byte(msg), &webpushgo.Subscription{
			Endpoint: sub.Endpoint,
			Keys:     webpushgo.Keys{P256dh: sub.Keys.P256dh, Auth: sub.Keys.Auth},
		}, &webpushgo.Options{Subscriber: "test@example.com", VAPIDPublicKey: vapidPub, VAPIDPrivateKey: vapidPriv, TTL: 30})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c := <-got
		if enc := c.header.Get("Content-Encoding"); enc != AES128GCM {
			t.Fatalf("Content-Encoding %q", enc)
		}
		if len(c.body) != 4096 {
			t.Fatalf("webpush-go body is %d bytes, want 4096 (padded)", len(c.body))
		}
		plain, err := k.Decrypt(Message{Encoding: c.header.Get("Content-Encoding"), Body: c.body})
		if err != nil {
			t.Fatal(err)
		}
		if string(plain) != msg {
			t.Fatalf("decrypted %q, want %q", plain, msg)
		}
	}
}
