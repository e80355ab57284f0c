// Package gctune bounds how far the Go heap grows past its live size
// between collections in bytes, not only in percent.
//
// With GOGC=100 the heap grows to twice its live size before the next
// collection, and the process keeps that memory: RSS is about twice the
// live heap. For a connection node, whose live heap is mostly idle
// sockets, that doubled every connection's cost (issue 17). The tuner
// sets GOGC after every collection so that the heap may grow by Headroom
// bytes past what the collector must scan, but by no less than MinPercent
// and no more than the process's own GOGC (100 unless the GOGC variable
// says otherwise). A busy process gets at least what it allocated in the
// last AllocWindow (50 ms), so that it collects at most about twenty times
// a second from allocation. A small heap keeps GOGC; a large one collects
// more often, which costs CPU only while it allocates: an idle process
// hardly collects at all. The tuner only calls debug.SetGCPercent after a
// collection the runtime chose; it never forces one (a lower GOGC that puts
// the heap past its new goal makes the runtime collect at once).
package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Config configures a Tuner.
type Config struct {
	// Headroom is how many bytes the heap may grow between collections
	// at least; 0 turns the tuner off.
	Headroom int64
	// MinPercent is the lowest GOGC set (default 25): past Headroom/MinPercent
	// of scanned memory the heap grows by that share again, so collections
	// do not become frequent in a very large heap.
	MinPercent int
}

const defaultMinPercent = 25

// AllocWindow is how much of the recent allocation rate the headroom
// covers at least.
const AllocWindow = 50 * time.Millisecond

// Tuner adjusts GOGC after each collection.
type Tuner struct {
	cfg     Config
	max     int // the process's GOGC; the tuner never goes above it
	samples []metrics.Sample
	gcs     chan struct{}

	lastAllocs uint64    // cumulative heap allocations at the last adjust
	lastAt     time.Time // when
	busy       bool      // the last adjust found the process busy (plain GOGC)
}

// New returns a tuner; nothing changes until Run.
func New(cfg Config) *Tuner {
	if cfg.MinPercent <= 0 {
		cfg.MinPercent = defaultMinPercent
	}
	return &Tuner{
		cfg: cfg,
		samples: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/scan/stack:bytes"},
			{Name: "/gc/scan/globals:bytes"},
			{Name: "/gc/heap/allocs:bytes"}, // last: not scanned
		},
		gcs: make(chan struct{}, 1),
	}
}

// Run tunes GOGC until ctx ends, then restores the process's own value.
// It wakes once per collection (a sentinel's cleanup), never on a timer.
// Off (no Headroom, or GOGC=off) it just waits for ctx.
func (t *Tuner) Run(ctx context.Context) error {
	t.max = debug.SetGCPercent(100)
	debug.SetGCPercent(t.max)
	if t.cfg.Headroom <= 0 || t.max < 0 { // GOGC=off: the operator manages collections
		<-ctx.Done()
		return nil
	}
	defer debug.SetGCPercent(t.max)
	done := make(chan struct{})
	defer close(done)
	t.arm(done)
	current := t.max
	t.adjust(&current)
	// A process that was busy (plain GOGC) and then goes quiet would keep
	// a busy heap's goal until something allocates it full; while busy,
	// a look once a second tightens the goal when the allocation stops.
	quiet := time.NewTicker(QuietCheck)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.gcs:
			t.adjust(&current)
		case <-quiet.C:
			if t.busy {
				t.adjust(&current)
			}
		}
	}
}

// QuietCheck is how often a busy process is checked for having gone quiet.
const QuietCheck = time.Second

// sentinel is allocated once per collection; its cleanup reports the
// collection that freed it. Big enough to stay out of the tiny allocator,
// whose blocks are freed together.
type sentinel struct{ _ [64]byte }

func (t *Tuner) arm(done <-chan struct{}) {
	s := new(sentinel)
	runtime.AddCleanup(s, func(done <-chan struct{}) {
		select {
		case <-done:
			return
		default:
		}
		select {
		case t.gcs <- struct{}{}:
		default:
		}
		t.arm(done)
	}, done)
}

// adjust sets GOGC for the live heap the last collection found and the
// allocation rate since the previous one.
func (t *Tuner) adjust(current *int) {
	metrics.Read(t.samples)
	now := time.Now()
	var scanned uint64
	for _, s := range t.samples[:len(t.samples)-1] {
		if s.Value.Kind() == metrics.KindUint64 {
			scanned += s.Value.Uint64()
		}
	}
	var allocs uint64
	if v := t.samples[len(t.samples)-1].Value; v.Kind() == metrics.KindUint64 {
		allocs = v.Uint64()
	}
	headroom := t.cfg.Headroom
	if !t.lastAt.IsZero() {
		headroom = Headroom(t.cfg.Headroom, allocs-t.lastAllocs, now.Sub(t.lastAt))
	}
	t.lastAllocs, t.lastAt = allocs, now
	p := Percent(headroom, scanned, t.cfg.MinPercent, t.max)
	t.busy = headroom > t.cfg.Headroom
	if t.busy {
		// Busy: the process allocates more than the headroom per
		// AllocWindow. A tight goal then lies behind what is allocated
		// between a collection and this turn after it, so collections ran
		// back to back and parked allocating goroutines in assists
		// (measured: half the accepted pushes/s at half the CPU). A busy
		// heap's garbage is short-lived anyway: plain GOGC.
		p = t.max
	}
	// Small moves are not worth a change of the pacer's goal.
	if p != *current && (p*10 < *current*9 || p*10 > *current*11 || p == t.max || p == t.cfg.MinPercent) {
		debug.SetGCPercent(p)
		*current = p
	}
}

// Headroom is base, or what was allocated in AllocWindow at the rate of
// allocated bytes in elapsed, whichever is more.
func Headroom(base int64, allocated uint64, elapsed time.Duration) int64 {
	if elapsed <= 0 {
		return base
	}
	rate := float64(allocated) / elapsed.Seconds()
	return max(base, int64(min(rate*AllocWindow.Seconds(), 1<<62)))
}

// Percent is the GOGC that lets a heap whose collector scans scanned bytes
// grow by headroom bytes, within [lo, hi].
func Percent(headroom int64, scanned uint64, lo, hi int) int {
	if scanned == 0 || headroom <= 0 {
		return hi
	}
	p := uint64(headroom) * 100 / scanned
	return int(max(uint64(lo), min(p, uint64(max(hi, lo)))))
}
