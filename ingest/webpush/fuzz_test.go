package webpush

import (
	"errors"
	"testing"
)

// FuzzDecrypt feeds malformed messages to the receiver: they must fail
// with ErrDecrypt, never panic, and never "succeed" for the RFC keys
// unless the input is a real message. Seeds: the test vectors (also
// committed under testdata/fuzz/FuzzDecrypt).
func FuzzDecrypt(f *testing.F) {
	f.Add(AES128GCM, mustB64(f, rfc8291Body), "", "")
	f.Add(AESGCM, mustB64(f, aesgcmCiphertext), "salt="+aesgcmSalt, "dh="+aesgcmASPublic)
	f.Add(AESGCM, mustB64(f, aesgcmCiphertext), `keyid="a";salt="`+aesgcmSalt+`";rs=3`, `keyid=a;dh=`+aesgcmASPublic+`,dh=BAAA`)
	f.Add(AES128GCM, mustB64(f, "uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA"), "", "")
	f.Add("aesgcm128", []byte{}, ",,;;==", "dh=")

	rfc := mustReceiver(f, rfc8291UAPriv, rfc8291Auth)
	legacy := mustReceiver(f, aesgcmUAPriv, aesgcmAuth)
	ikm := mustB64(f, "BO3ZVPxUlnLORbVGMpbT1Q")
	f.Fuzz(func(t *testing.T, encoding string, body []byte, encryption, cryptoKey string) {
		m := Message{Encoding: encoding, Body: body, Encryption: encryption, CryptoKey: cryptoKey}
		for _, k := range []*ReceiverKeys{rfc, legacy} {
			if _, err := k.Decrypt(m); err != nil && !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error does not wrap ErrDecrypt: %v", err)
			}
		}
		if _, err := DecryptContent(ikm, body); err != nil && !errors.Is(err, ErrDecrypt) {
			t.Fatalf("error does not wrap ErrDecrypt: %v", err)
		}
		_, _, _ = ParseHeader(body)
	})
}

// FuzzParseSubscription: subscription JSON comes from users and files.
func FuzzParseSubscription(f *testing.F) {
	f.Add(`{"endpoint":"https://push.example.net/wpush/v1/abc","keys":{"p256dh":"` + rfc8291UAPublic + `","auth":"` + rfc8291Auth + `"}}`)
	f.Add(`{"endpoint":"http://[::1]:1/","keys":{"p256dh":"BAAA","auth":""}}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, s string) {
		sub, err := ParseSubscription([]byte(s))
		if err != nil {
			return
		}
		// Whatever parses can be encrypted to.
		if _, err := Encrypt(sub, []byte("x"), EncryptOptions{}); err != nil {
			t.Fatalf("parsed subscription %+v does not encrypt: %v", sub, err)
		}
	})
}
