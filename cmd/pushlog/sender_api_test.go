package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"github.com/pushlog/pushlog/ingest/webpush"
)

func TestSenderKeyHash(t *testing.T) {
	k, err := webpush.GenerateVAPIDKey()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(k.PublicKeyBytes())
	want := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{k.PublicKeyString(), true},
		{base64.StdEncoding.EncodeToString(k.PublicKeyBytes()), true},
		{want, true},
		{"mailto:ops@example.com", false},
		{"", false},
		{hex.EncodeToString(sum[:16]), false},
		{base64.RawURLEncoding.EncodeToString(append([]byte{5}, k.PublicKeyBytes()[1:]...)), false},
	} {
		got, ok := senderKeyHash(tc.in)
		if ok != tc.ok || ok && got != want {
			t.Errorf("senderKeyHash(%q) = %q %v, want %v", tc.in, got, ok, tc.ok)
		}
	}
}
