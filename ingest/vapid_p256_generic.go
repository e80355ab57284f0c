//go:build !((amd64 || arm64) && !purego)

package ingest

import (
	"math/big"

	"filippo.io/nistec"
)

// Without nistec's assembly (vapid_p256_asm.go) the table holds Jacobian
// points and is walked with nistec's complete addition.

// p256TableBytes is one table's heap: 37 × 64 points of 96 bytes.
const p256TableBytes = p256Windows * p256Half * 96

// p256Table holds j·2^(7i)·Q for i < p256Windows, j in 1..p256Half.
type p256Table struct {
	points [p256Windows * p256Half]nistec.P256Point
}

// newP256Table builds the table of raw (an uncompressed point), about 17
// signature checks' worth of work.
func newP256Table(raw []byte) (*p256Table, error) {
	t := new(p256Table)
	if err := p256Multiples(raw, t.points[:]); err != nil {
		return nil, err
	}
	return t, nil
}

// mult returns k·Q for a 32-byte big-endian k, walking k's signed digits.
func (t *p256Table) mult(k *[32]byte) *nistec.P256Point {
	acc := nistec.NewP256Point()
	var neg nistec.P256Point
	for i, d := range p256Digits(k) {
		switch {
		case d < 0:
			acc.Add(acc, neg.Negate(&t.points[i*p256Half+int(-d)-1]))
		case d > 0:
			acc.Add(acc, &t.points[i*p256Half+int(d)-1])
		}
	}
	return acc
}

// check reports whether R = k1·G + k2·Q is not infinity and x(R) mod n = r.
func (t *p256Table) check(k1, k2, r *[32]byte) bool {
	p, err := nistec.NewP256Point().ScalarBaseMult(k1[:])
	if err != nil {
		return false
	}
	p.Add(p, t.mult(k2))
	xb, err := p.BytesX() // fails for the point at infinity
	if err != nil {
		return false
	}
	x := new(big.Int).SetBytes(xb)
	return x.Mod(x, p256Order).Cmp(new(big.Int).SetBytes(r[:])) == 0
}
