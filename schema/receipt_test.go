package schema

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestReceiptSubSeal(t *testing.T) {
	s, err := NewSealer([][]byte{bytes.Repeat([]byte{7}, KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSealer([][]byte{bytes.Repeat([]byte{8}, KeySize)})
	kh := sha256.Sum256([]byte("key"))
	for _, tc := range []struct {
		name string
		sub  ReceiptSub
	}{
		{"unbound", ReceiptSub{ID: [16]byte{1, 2, 3}}},
		{"key bound", ReceiptSub{ID: [16]byte{9}, KeyHash: kh[:]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := s.SealReceiptSub(tc.sub)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.OpenReceiptSub(tok)
			if err != nil || got.ID != tc.sub.ID || !bytes.Equal(got.KeyHash, tc.sub.KeyHash) {
				t.Fatalf("open = %+v, %v; want %+v", got, err, tc.sub)
			}
			if _, err := other.OpenReceiptSub(tok); err != ErrBadToken {
				t.Fatalf("other key opened it: %v", err)
			}
			// A receipt token is not an endpoint or a message id, and vice versa.
			if _, err := s.OpenEndpoint(tok); err == nil {
				t.Fatal("receipt token opened as an endpoint")
			}
			if _, err := s.OpenMessageID(tok); err == nil {
				t.Fatal("receipt token opened as a message id")
			}
			if _, err := s.OpenReceiptSub(tok[:len(tok)-2] + "AA"); err != ErrBadToken {
				t.Fatal("tampered token opened")
			}
		})
	}
	if _, err := s.SealReceiptSub(ReceiptSub{KeyHash: []byte{1}}); err == nil {
		t.Fatal("short key hash sealed")
	}
}
