package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/big"

	"filippo.io/nistec"
)

// A sender that signs every push signs them all with one key, so the
// signature check u1·G + u2·Q (ECDSA, FIPS 186-5 §6.4.2) can treat Q as a
// fixed base, as crypto/ecdsa treats G: once a key has sent enough fresh
// tokens, a table of its multiples makes u2·Q about 37 point additions
// instead of crypto/ecdsa's 256 doublings and 64 additions. Everything
// here is public (key, digest, signature), so the table walk may branch on
// the scalar's digits: no secret is ever multiplied. The group arithmetic
// is filippo.io/nistec (the standard library's P-256 code, exported).

const (
	// p256Window is the table's radix, 2^7: signed digits in [-63, 64].
	// Wider than nistec's 6 bits for G: 74 additions a check instead of
	// 86, for 148 KiB a table instead of 86 (8 bits, 264 KiB, measured no
	// faster: the tables no longer stayed in cache).
	p256Window = 7
	// p256Windows covers 257 bits: a 256-bit scalar and the carry its
	// signed digits may leave (37 windows of 7 bits).
	p256Windows = (256 + p256Window) / p256Window
	// p256Half is how many multiples each window keeps: 1..64.
	p256Half = 1 << (p256Window - 1)
)

// p256Order is n, the order of P-256's base point.
var p256Order, _ = new(big.Int).SetString("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16)

// p256Digits returns k's signed base-2^7 digits, least significant first:
// k = Σ d[i]·2^(7i), d[i] in [-63, 64]. A 32-byte big-endian k < 2^256
// needs 37 of them (the last takes the top 4 bits and the carry).
func p256Digits(k *[32]byte) (d [p256Windows]int16) {
	limbs := p256Limbs(k)
	carry := uint64(0)
	for i := range p256Windows {
		v := int64(bitsAt(&limbs, i*p256Window, p256Window) + carry)
		carry = 0
		if v > p256Half {
			// The digit is v - 2^7, in [-63, 0], and 2^7 carries up.
			carry = 1
			v -= 1 << p256Window
		}
		d[i] = int16(v)
	}
	return d
}

// p256Limbs returns a 32-byte big-endian number as little-endian 64-bit
// limbs (nistec's order).
func p256Limbs(b *[32]byte) (l [4]uint64) {
	for i := range l {
		l[i] = binary.BigEndian.Uint64(b[32-8*(i+1):])
	}
	return l
}

// p256Multiples fills out (p256Windows·p256Half points) with
// (j+1)·2^(7i)·Q at i·p256Half+j, Q being raw (an uncompressed point), in
// nistec's Jacobian form.
func p256Multiples(raw []byte, out []nistec.P256Point) error {
	base, err := nistec.NewP256Point().SetBytes(raw)
	if err != nil {
		return err
	}
	if base.IsInfinity() == 1 {
		return errors.New("the point at infinity has no table")
	}
	for i := range p256Windows {
		row := out[i*p256Half : (i+1)*p256Half]
		row[0].Set(base)
		for j := 1; j < p256Half; j++ {
			row[j].Add(&row[j-1], base)
		}
		// The next window's base is 2^w times this one's: 2·(2^(w-1)·base).
		base.Double(&row[p256Half-1])
	}
	return nil
}

// bitsAt returns the n (≤ 64) bits of limbs starting at bit off; bits past
// 256 are zero.
func bitsAt(limbs *[4]uint64, off, n int) uint64 {
	w, b := off/64, off%64
	if w >= len(limbs) {
		return 0
	}
	v := limbs[w] >> b
	if b+n > 64 && w+1 < len(limbs) {
		v |= limbs[w+1] << (64 - b)
	}
	return v & (1<<n - 1)
}

// verify checks the ES256 signature sig (r||s) over signingInput with
// the table's key: r and s in [1, n-1], w = s⁻¹, u1 = e·w, u2 = r·w,
// R = u1·G + u2·Q not infinity, and x(R) mod n = r.
func (t *p256Table) verify(signingInput string, sig *[64]byte) bool {
	r, s := (*[32]byte)(sig[:32]), (*[32]byte)(sig[32:])
	if !p256InOrder(r) || !p256InOrder(s) {
		return false
	}
	digest := sha256.Sum256([]byte(signingInput)) // 256 bits, n's length: no truncation
	u1, u2 := p256Scalars(&digest, r, s)
	return t.check(&u1, &u2, r)
}

// p256Scalars returns u1 = e·s⁻¹ and u2 = r·s⁻¹ mod n, big-endian, for
// r and s in [1, n-1]. (nistec's inversion mod n, an addition chain of
// 292 Montgomery steps, took 2.5× math/big's GCD: a check got slower.)
func p256Scalars(e, r, s *[32]byte) (u1, u2 [32]byte) {
	w := new(big.Int).ModInverse(new(big.Int).SetBytes(s[:]), p256Order)
	x := new(big.Int).SetBytes(e[:])
	x.Mul(x, w).Mod(x, p256Order).FillBytes(u1[:])
	x.SetBytes(r[:])
	x.Mul(x, w).Mod(x, p256Order).FillBytes(u2[:])
	return u1, u2
}

// p256OrderBytes is n, big-endian.
var p256OrderBytes = [32]byte(p256Order.FillBytes(make([]byte, 32)))

// p256InOrder reports whether the big-endian x is in [1, n-1].
func p256InOrder(x *[32]byte) bool {
	return *x != [32]byte{} && bytes.Compare(x[:], p256OrderBytes[:]) < 0
}
