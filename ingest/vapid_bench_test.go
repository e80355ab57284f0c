package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// freshTokens is a pool of distinct ES256 JWTs from one key, as a sender
// that signs every push makes them (npm web-push, pywebpush): signed once
// per test binary, since signing costs as much as verifying.
type freshTokens struct {
	vk     *testVAPID
	key    [keyLen]byte
	aud    string
	exp    time.Time
	tokens []string
}

// freshPoolSize is larger than the default cache holds (16 MiB at ~700
// accounted bytes per entry), so cycling through the pool never hits.
const freshPoolSize = 32768

var (
	freshMu   sync.Mutex
	freshPool = map[string]*freshTokens{}
)

// freshJWTs returns n distinct JWTs for aud (valid for 12 h), signed by
// one key; pools are kept per aud for the test binary's life.
func freshJWTs(tb testing.TB, aud string, n int) *freshTokens {
	tb.Helper()
	freshMu.Lock()
	defer freshMu.Unlock()
	if p, ok := freshPool[aud]; ok && len(p.tokens) >= n {
		return p
	}
	vk := newTestVAPID(tb)
	key, err := decodeKey(vk.k)
	if err != nil {
		tb.Fatal(err)
	}
	p := &freshTokens{vk: vk, key: key, aud: aud, exp: time.Now().Add(12 * time.Hour)}
	for i := range n {
		// exp differs per token, as a sender setting exp = now + 12 h
		// at every push makes it; the jti keeps them distinct.
		p.tokens = append(p.tokens, vk.jwt(tb, jwt.MapClaims{"aud": aud, "exp": p.exp.Unix() + int64(i%60),
			"sub": "mailto:bench@example.com", "jti": i}))
	}
	freshPool[aud] = p
	return p
}

// warmVerifier returns a pool of 8,192 fresh tokens of one key and a
// verifier that has checked the first 1,024 (earning the key its table);
// the benchmarks start at token 1,024.
func warmVerifier(b *testing.B) (*freshTokens, *vapidVerifier) {
	p := freshJWTs(b, testPublicURL, 8192)
	v := newVAPIDVerifier([]string{testPublicURL}, time.Now, 256<<10, 0)
	for _, tok := range p.tokens[:1024] {
		if _, aerr := v.verify(tok, p.key); aerr != nil {
			b.Fatal(aerr)
		}
	}
	return p, v
}

// BenchmarkVAPIDFresh is the verifier alone with a token it has never seen
// per call (every call pays the signature check), the steady state of a
// sender that signs every push: nothing is cached (a token is cached the
// second time it is verified).
//
//	go test ./ingest -run x -bench 'VAPIDFresh|ECDSAFloor' -benchmem
func BenchmarkVAPIDFresh(b *testing.B) {
	p, v := warmVerifier(b)
	start := v.slowVerifies.Load()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime(rusageThread)
	for i := range b.N {
		if (1024+i)%len(p.tokens) == 0 {
			clear(v.seen[:]) // a token coming round again is still new
		}
		if _, aerr := v.verify(p.tokens[(1024+i)%len(p.tokens)], p.key); aerr != nil {
			b.Fatal(aerr)
		}
	}
	reportCPU(b, cpuTime(rusageThread)-cpu)
	b.StopTimer()
	if n := v.slowVerifies.Load() - start; n != int64(b.N) {
		b.Fatalf("%d signature checks for %d fresh tokens", n, b.N)
	}
}

// BenchmarkVAPIDCached is the same verifier answering a reused token from
// its cache.
func BenchmarkVAPIDCached(b *testing.B) {
	p := freshJWTs(b, testPublicURL, 8192)
	v := newVAPIDVerifier([]string{testPublicURL}, time.Now, 0, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, aerr := v.verify(p.tokens[0], p.key); aerr != nil {
			b.Fatal(aerr)
		}
	}
}

// BenchmarkECDSAFloor is the one check a fresh token cannot avoid: ES256's
// P-256 verification of a SHA-256 digest against a parsed key, r and s
// already decoded. BenchmarkVAPIDFresh minus this is everything around it.
func BenchmarkECDSAFloor(b *testing.B) {
	p := freshJWTs(b, testPublicURL, 8192)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p.key[:])
	if err != nil {
		b.Fatal(err)
	}
	tok := p.tokens[0]
	dot := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil || len(sig) != 64 {
		b.Fatal("signature", err)
	}
	digest := sha256.Sum256([]byte(tok[:dot]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	b.Run("Verify", func(b *testing.B) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		b.ReportAllocs()
		cpu := cpuTime(rusageThread)
		for range b.N {
			if !ecdsa.Verify(pub, digest[:], r, s) {
				b.Fatal("does not verify")
			}
		}
		reportCPU(b, cpuTime(rusageThread)-cpu)
	})
}

// Linux getrusage targets: the process, and the calling thread (the
// benchmark loop, locked to its thread: GC workers on other threads are
// not counted, the allocation figures show that cost).
const (
	rusageSelf   = 0
	rusageThread = 1
)

// cpuTime is user+sys CPU time of who (0 where getrusage fails).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(who, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU time per op: on a shared machine ns/op (wall
// time) moves with the neighbours' load, this not.
func reportCPU(b *testing.B, cpu time.Duration) {
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkP256TableBuild is what a key's table costs once it has earned
// one (vapidTableAfter): compare with BenchmarkVAPIDFresh.
func BenchmarkP256TableBuild(b *testing.B) {
	tv := newTestVAPID(b)
	b.ReportAllocs()
	for range b.N {
		if _, err := newP256Table(tv.raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVAPIDFreshCold is BenchmarkVAPIDFresh with the caches flushed
// (8 MiB read) before each check, outside the timer, as in a busy server
// where the key's and G's tables rarely stay cached between two checks.
func BenchmarkVAPIDFreshCold(b *testing.B) {
	p, v := warmVerifier(b)
	flush := make([]uint64, 1<<20)
	var sink uint64
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if (1024+i)%len(p.tokens) == 0 {
			clear(v.seen[:])
		}
		for j := 0; j < len(flush); j += 8 {
			flush[j]++
			sink += flush[j]
		}
		b.StartTimer()
		if _, aerr := v.verify(p.tokens[(1024+i)%len(p.tokens)], p.key); aerr != nil {
			b.Fatal(aerr)
		}
	}
	b.StopTimer()
	if sink == 0 {
		b.Log(sink)
	}
}
