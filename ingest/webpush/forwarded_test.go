package webpush

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestDecryptForwardedAESGCMHeaders: the aesgcm headers a notification
// carries are the sender's, cleaned only of quotes and padding (issue 13),
// so keyid on both headers, several Crypto-Key sections (the keyid's dh
// not first), p256ecdsa, rs, spaces and ','-separated parameters must all
// decrypt — as Firefox reads them: the first Encryption section, the dh
// whose keyid matches its keyid, else the first dh.
func TestDecryptForwardedAESGCMHeaders(t *testing.T) {
	k, err := GenerateReceiverKeys()
	if err != nil {
		t.Fatal(err)
	}
	decoy, err := GenerateReceiverKeys() // a valid P-256 point that is not the sender's
	if err != nil {
		t.Fatal(err)
	}
	sub := k.Subscription("https://push.example.net/wpush/v1/abc")
	plain := bytes.Repeat([]byte("forwarded as sent "), 20)
	m, err := Encrypt(sub, plain, EncryptOptions{Encoding: AESGCM, RecordSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	salt, _ := strings.CutPrefix(strings.Split(m.Encryption, ";")[0], "salt=")
	dh, _ := strings.CutPrefix(m.CryptoKey, "dh=")
	other := decoy.PublicKeyString()
	const ecdsa = "BA1Hxzyi1RUM1b5wjxsn7nGxAszw2u61m164i3MrAIxHF6YK5h4SDYic-dRuU_RCPCfA5aq9ojSwk5Y2EmClBPs"
	for _, tc := range []struct {
		name, encryption, cryptoKey string
		ok                          bool
	}{
		{"as encrypted", m.Encryption, m.CryptoKey, true},
		{"keyid on both", "keyid=p256dh;salt=" + salt + ";rs=100", "keyid=p256dh;dh=" + dh, true},
		{"keyid picks the second section", "keyid=b;salt=" + salt + ";rs=100", "keyid=a;dh=" + other + ",keyid=b;dh=" + dh + ",p256ecdsa=" + ecdsa, true},
		{"p256ecdsa beside dh", "salt=" + salt + ";rs=100", "dh=" + dh + ";p256ecdsa=" + ecdsa, true},
		{"p256ecdsa first, own section", "salt=" + salt + ";rs=100", "p256ecdsa=" + ecdsa + ",dh=" + dh, true},
		{"commas and spaces", "keyid=p256dh, salt=" + salt + ", rs=100", "keyid=p256dh; dh=" + dh + ", p256ecdsa=" + ecdsa, true},
		{"padding autopush keeps before a space", "salt=" + salt + "== ;rs=100", "dh=" + dh + "= ;p256ecdsa=" + ecdsa, true},
		{"first Encryption section wins", "keyid=b;salt=" + salt + ";rs=100,keyid=a;salt=AAAAAAAAAAAAAAAAAAAAAA;rs=4096", "keyid=a;dh=" + other + ",keyid=b;dh=" + dh, true},
		{"keyid matching the wrong key", "keyid=a;salt=" + salt + ";rs=100", "keyid=a;dh=" + other + ",keyid=b;dh=" + dh, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.Decrypt(Message{Encoding: AESGCM, Body: m.Body, Encryption: tc.encryption, CryptoKey: tc.cryptoKey})
			if !tc.ok {
				if !errors.Is(err, ErrDecrypt) {
					t.Fatalf("decrypted with the wrong dh: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("decrypted %q, want %q", got, plain)
			}
		})
	}
}
