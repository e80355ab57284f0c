//go:build (amd64 || arm64) && !purego

package ingest

import (
	"math/big"
	"math/bits"
	"sync"
	"unsafe"

	"filippo.io/nistec"
)

// With nistec's assembly the table holds affine points in its Montgomery
// form, and the walk uses its mixed addition (a Jacobian point plus an
// affine one), the step its own fixed-base multiplication of G takes. The
// exported complete addition computes a doubling beside every addition
// and needs a Jacobian operand, so the walk was 2.6× the cost of
// ScalarBaseMult; now they cost the same.
//
// The mixed addition is incomplete: it is wrong when both operands are the
// same point or one is the other's negation. That cannot happen here, for
// the reason it cannot in nistec's walk of G's table: before window i the
// accumulator is s·Q with s ≠ 0 and |s| ≤ 64·(2^(7i)-1)/127 < 2^(7i), and
// the addend is d·2^(7i)·Q with 1 ≤ |d| ≤ 64, so s ∓ d·2^(7i) is nonzero
// and, for i < 36, smaller than n in size; in the last window d is
// positive and at most 16 (a 32-byte scalar's top 4 bits and the carry),
// so a doubling would need the scalar to be 2^257 - n or more, and s + d·2^252
// ≡ 0 (the scalar is n) gives Z = 0, which is infinity anyway. The
// scalars are below n (p256Scalars reduces them).
//
// G's multiples are walked the same way, from a table of G built like a
// key's (p256GTable; nistec's own is 6-bit and read in constant time, 32
// entries per window, which nothing here needs), and the two products are
// summed with nistec's complete addition. x(R) mod n = r is checked on R's
// Jacobian coordinates, X = r·Z² (or (r+n)·Z²), without an inversion.
//
// The functions below are nistec v0.0.4's (go.mod pins it); the mirror
// types match its layout, which TestP256Layout checks.

// p256Elem is nistec's p256Element: a field element in the Montgomery
// domain, little-endian 64-bit limbs.
type p256Elem [4]uint64

// p256Jacobian mirrors nistec.P256Point (amd64/arm64): X, Y, Z.
type p256Jacobian struct{ x, y, z p256Elem }

// p256Affine is nistec's p256AffinePoint: x, y.
type p256Affine struct{ x, y p256Elem }

// p256MontOne is 1 in the Montgomery domain; p256Prime is p.
var (
	p256MontOne    = p256Elem{0x0000000000000001, 0xffffffff00000000, 0xffffffffffffffff, 0x00000000fffffffe}
	p256Prime      = limbsOf(p256PrimeBig)
	p256OrderLimbs = limbsOf(p256Order)
)

// p256PointAddAffineAsm sets res = in1 + in2 (in2 negated when sign is
// set); sel 0 leaves in1, zero 0 takes in2.
//
//go:linkname p256PointAddAffineAsm filippo.io/nistec.p256PointAddAffineAsm
//go:noescape
func p256PointAddAffineAsm(res, in1 *nistec.P256Point, in2 *p256Affine, sign, sel, zero int)

// p256Mul sets res = in1·in2·R⁻¹ mod p (Montgomery multiplication).
//
//go:linkname p256Mul filippo.io/nistec.p256Mul
//go:noescape
func p256Mul(res, in1, in2 *p256Elem)

// p256GTable is G's table, built on first use (1.6 ms, 148 KiB) and never
// changed after.
var p256GTable = sync.OnceValue(func() *p256Table {
	t, err := newP256Table(nistec.NewP256Point().SetGenerator().Bytes())
	if err != nil {
		panic(err)
	}
	return t
})

// p256Inverse sets out = in⁻¹ mod p (in the Montgomery domain).
//
//go:linkname p256Inverse filippo.io/nistec.p256Inverse
func p256Inverse(out, in *p256Elem)

// p256TableBytes is one table's heap: 37 × 64 affine points of 64 bytes.
const p256TableBytes = p256Windows * p256Half * 64

// p256Table holds (j+1)·2^(7i)·Q at [i][j] (the shape of nistec's table
// of G, one bit wider).
type p256Table struct {
	points [p256Windows][p256Half]p256Affine
}

// p256RR is R² mod p (R = 2^256): p256Mul(x, p256RR) takes x into the
// Montgomery domain.
var p256RR = limbsOf(new(big.Int).Mod(new(big.Int).Lsh(big.NewInt(1), 512), p256PrimeBig))

// limbsOf returns x (< 2^256) as little-endian 64-bit limbs.
func limbsOf(x *big.Int) p256Elem {
	var b [32]byte
	x.FillBytes(b[:])
	return p256Limbs(&b)
}

// p256ToMont returns x (< p) in the Montgomery domain.
func p256ToMont(x *p256Elem) (m p256Elem) {
	p256Mul(&m, x, &p256RR)
	return m
}

// newP256Table builds the table of raw (an uncompressed point): the
// multiples in Jacobian form with nistec's complete formulas, then all
// made affine with one inversion (Montgomery's trick); about 80 signature
// checks' worth of work (BenchmarkP256TableBuild), nearly all of it the
// complete additions.
func newP256Table(raw []byte) (*p256Table, error) {
	jac := make([]nistec.P256Point, p256Windows*p256Half)
	if err := p256Multiples(raw, jac); err != nil {
		return nil, err
	}
	// No multiple is the point at infinity (j·2^(7i) with j < n is not a
	// multiple of the prime n), so every Z is invertible.
	prefix := make([]p256Elem, len(jac)) // Z_0·…·Z_i
	for i := range jac {
		z := &jacobian(&jac[i]).z
		if i == 0 {
			prefix[0] = *z
			continue
		}
		p256Mul(&prefix[i], &prefix[i-1], z)
	}
	var inv p256Elem // (Z_0·…·Z_i)⁻¹, walking down
	p256Inverse(&inv, &prefix[len(jac)-1])
	t := new(p256Table)
	for i := len(jac) - 1; i >= 0; i-- {
		j := jacobian(&jac[i])
		zinv := inv
		if i > 0 {
			p256Mul(&zinv, &inv, &prefix[i-1])
			p256Mul(&inv, &inv, &j.z)
		}
		var zinv2, zinv3 p256Elem
		p256Mul(&zinv2, &zinv, &zinv)
		p256Mul(&zinv3, &zinv2, &zinv)
		pt := &t.points[i/p256Half][i%p256Half]
		p256Mul(&pt.x, &j.x, &zinv2) // x = X/Z²
		p256Mul(&pt.y, &j.y, &zinv3) // y = Y/Z³
	}
	return t, nil
}

func jacobian(p *nistec.P256Point) *p256Jacobian {
	return (*p256Jacobian)(unsafe.Pointer(p))
}

// mult returns k·Q for a 32-byte big-endian k.
func (t *p256Table) mult(k *[32]byte) *nistec.P256Point {
	d := p256Digits(k)
	return p256Walk(&t.points, &d)
}

// check reports whether R = k1·G + k2·Q is not infinity and x(R) mod n = r.
func (t *p256Table) check(k1, k2, r *[32]byte) bool {
	g, q := &p256GTable().points, &t.points
	d1, d2 := p256Digits(k1), p256Digits(k2)
	// The 74 entries are read before either walk, so their cache misses
	// overlap instead of each waiting behind an addition: in a busy server
	// the tables rarely stay in cache between two checks.
	p256Touch(g, &d1)
	p256Touch(q, &d2)
	R := p256Walk(g, &d1)
	R.Add(R, p256Walk(q, &d2))
	return p256XIs(jacobian(R), r)
}

// p256Touch reads the first word of each entry the digits d select; not
// inlined, so the loads are not dropped for their unused sum.
//
//go:noinline
func p256Touch(tab *[p256Windows][p256Half]p256Affine, d *[p256Windows]int16) (sum uint64) {
	for i, v := range d {
		if v < 0 {
			v = -v
		}
		if v != 0 {
			sum += tab[i][v-1].x[0]
		}
	}
	return sum
}

// p256XIs reports whether j is not infinity and its affine x mod n is r
// (big-endian, 0 < r < n).
func p256XIs(j *p256Jacobian, r *[32]byte) bool {
	var x, z, z2, rz2 p256Elem
	p256Mul(&x, &j.x, &p256MontOne) // fully reduced, for comparison
	p256Mul(&z, &j.z, &p256MontOne)
	if z == (p256Elem{}) {
		return false // the point at infinity
	}
	p256Mul(&z2, &z, &z)
	rl := p256Elem(p256Limbs(r))
	rm := p256ToMont(&rl)
	p256Mul(&rz2, &rm, &z2)
	if rz2 == x {
		return true
	}
	// x in [n, p) also reduces to r: x = r + n.
	rn, ok := p256AddOrder(&rl)
	if !ok {
		return false
	}
	rm = p256ToMont(&rn)
	p256Mul(&rz2, &rm, &z2)
	return rz2 == x
}

// p256AddOrder returns r + n and whether it is below p.
func p256AddOrder(r *p256Elem) (sum p256Elem, ok bool) {
	var carry, borrow uint64
	for i := range sum {
		sum[i], carry = bits.Add64(r[i], p256OrderLimbs[i], carry)
	}
	if carry != 0 {
		return sum, false
	}
	for i := range sum {
		_, borrow = bits.Sub64(sum[i], p256Prime[i], borrow)
	}
	return sum, borrow != 0
}

// p256PrimeBig is p.
var p256PrimeBig = new(big.Int).SetBytes([]byte{
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})

// p256Walk returns k·P for k's signed digits (p256Digits) and P's table
// tab, with mixed additions.
func p256Walk(tab *[p256Windows][p256Half]p256Affine, digits *[p256Windows]int16) *nistec.P256Point {
	acc := nistec.NewP256Point() // infinity until the first nonzero digit
	started := 0
	for i, d := range digits {
		if d == 0 {
			continue
		}
		sign := 0
		if d < 0 {
			sign, d = 1, -d
		}
		pt := &tab[i][d-1]
		if started == 0 {
			a := jacobian(acc)
			a.x, a.y, a.z = pt.x, pt.y, p256MontOne
			if sign == 1 {
				a.y = p256Negate(&pt.y)
			}
			started = 1
			continue
		}
		p256PointAddAffineAsm(acc, acc, pt, sign, 1, started)
	}
	return acc
}

// p256Negate returns p - y for y in [1, p-1]: -y mod p, in either domain.
func p256Negate(y *p256Elem) (r p256Elem) {
	var borrow uint64
	for i := range r {
		r[i], borrow = bits.Sub64(p256Prime[i], y[i], borrow)
	}
	return r
}
