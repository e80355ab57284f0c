//go:build (amd64 || arm64) && !purego

package ingest

import (
	"crypto/rand"
	"math/big"
	"testing"
	"unsafe"

	"filippo.io/nistec"
)

// TestP256Layout: the mirror types match nistec's: the generator's
// Montgomery coordinates are where p256Jacobian reads them; G's table
// starts with G, and walking it is ScalarBaseMult.
func TestP256Layout(t *testing.T) {
	if a, b := unsafe.Sizeof(nistec.P256Point{}), unsafe.Sizeof(p256Jacobian{}); a != b {
		t.Fatalf("nistec.P256Point is %d bytes, the mirror %d", a, b)
	}
	g := jacobian(nistec.NewP256Point().SetGenerator())
	wantX := p256Elem{0x79e730d418a9143c, 0x75ba95fc5fedb601, 0x79fb732b77622510, 0x18905f76a53755c6}
	if g.x != wantX || g.z != p256MontOne {
		t.Fatalf("generator read as %x", *g)
	}
	if p256GTable().points[0][0].x != wantX || p256GTable().points[0][0].y != g.y {
		t.Fatalf("G table starts with %x", p256GTable().points[0][0])
	}
	var nMinus1 [32]byte
	new(big.Int).Sub(p256Order, big.NewInt(1)).FillBytes(nMinus1[:])
	scalars := [][32]byte{{}, {31: 1}, {31: 32}, {31: 33}, {31: 64}, {31: 65}, {31: 127}, {31: 128}, {30: 0x3f, 31: 0xc1}, {0: 0x7f}, {0: 0xf0}, nMinus1}
	for range 100 {
		var k [32]byte
		_, _ = rand.Read(k[:])
		k[0] &= 0x7f // below n
		scalars = append(scalars, k)
	}
	for _, k := range scalars {
		want, err := nistec.NewP256Point().ScalarBaseMult(k[:])
		if err != nil {
			t.Fatal(err)
		}
		if d := p256Digits(&k); p256Walk(&p256GTable().points, &d).Equal(want) != 1 {
			t.Errorf("k=%x: walking G's table differs from ScalarBaseMult", k)
		}
	}
}

// TestP256XIs: x(R) mod n = r on Jacobian coordinates, including the
// x in [n, p) case no real signature can be made to reach (2^-128).
func TestP256XIs(t *testing.T) {
	pMinusN := new(big.Int).Sub(p256PrimeBig, p256Order)
	nMinus1 := new(big.Int).Sub(p256Order, big.NewInt(1))
	mont := func(x *big.Int) p256Elem {
		l := limbsOf(x)
		return p256ToMont(&l)
	}
	z := big.NewInt(12345)
	// (X, Y, Z) with X = x·Z², the Jacobian form of affine x.
	at := func(x *big.Int) *p256Jacobian {
		xz2 := new(big.Int).Mul(x, new(big.Int).Mul(z, z))
		xz2.Mod(xz2, p256PrimeBig)
		return &p256Jacobian{x: mont(xz2), y: mont(big.NewInt(1)), z: mont(z)}
	}
	r := big.NewInt(77)
	for _, tc := range []struct {
		name string
		j    *p256Jacobian
		r    *big.Int
		want bool
	}{
		{"x = r", at(r), r, true},
		{"x = r + 1", at(big.NewInt(78)), r, false},
		{"x = r + n < p", at(new(big.Int).Add(r, p256Order)), r, true},
		{"x = p - 1 = r + n", at(new(big.Int).Sub(p256PrimeBig, big.NewInt(1))), new(big.Int).Sub(pMinusN, big.NewInt(1)), true},
		{"r + n ≥ p: no second candidate", at(big.NewInt(5)), pMinusN, false},
		{"r + n ≥ 2^256: no second candidate", at(big.NewInt(5)), nMinus1, false},
		{"x = r = n - 1", at(nMinus1), nMinus1, true},
		{"infinity", &p256Jacobian{x: mont(r), y: mont(big.NewInt(1))}, r, false},
	} {
		var rb [32]byte
		tc.r.FillBytes(rb[:])
		if got := p256XIs(tc.j, &rb); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
