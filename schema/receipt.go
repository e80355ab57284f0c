package schema

import (
	"crypto/sha256"
	"fmt"
)

const purposeReceipt = "pushlog receipt subscription v1"

// ReceiptSub is what a receipt subscription URI (RFC 8030 §5.1, link
// relation urn:ietf:params:push:receipt) carries: a random id, the one
// stored in MessageAccepted.receipt_sub, and, when the sender that created
// it authenticated with VAPID, the SHA-256 of its public key, so only that
// sender can request receipts into it or read them.
type ReceiptSub struct {
	ID      [16]byte
	KeyHash []byte // nil: not bound to a key
}

// SealReceiptSub returns the opaque token of a receipt subscription.
func (s *Sealer) SealReceiptSub(r ReceiptSub) (string, error) {
	if len(r.KeyHash) != 0 && len(r.KeyHash) != sha256.Size {
		return "", fmt.Errorf("key hash is %d bytes, want %d", len(r.KeyHash), sha256.Size)
	}
	plain := make([]byte, 0, 16+sha256.Size)
	plain = append(plain, r.ID[:]...)
	plain = append(plain, r.KeyHash...)
	return s.seal(purposeReceipt, plain), nil
}

// OpenReceiptSub authenticates and decodes a receipt subscription token:
// anything not sealed by this deployment is ErrBadToken.
func (s *Sealer) OpenReceiptSub(token string) (ReceiptSub, error) {
	plain, err := s.open(purposeReceipt, token)
	if err != nil {
		return ReceiptSub{}, err
	}
	if len(plain) != 16 && len(plain) != 16+sha256.Size {
		return ReceiptSub{}, ErrBadToken
	}
	var r ReceiptSub
	copy(r.ID[:], plain)
	if len(plain) > 16 {
		r.KeyHash = append([]byte(nil), plain[16:]...)
	}
	return r, nil
}
