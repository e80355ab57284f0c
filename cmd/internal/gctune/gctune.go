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
// hardly collects at all.
//
// A busy process keeps plain GOGC, so its heap grows to twice its live
// size. When it goes quiet, a lower GOGC alone does not give that memory
// back: a goal change starts no collection, the runtime's background
// scavenger returns only what lies 10% above the last collection's heap
// goal, and an idle process may not allocate a heap's worth for minutes.
// So on each busy→quiet transition that leaves the heap holding well
// above the goal the tuner sets for it when quiet (held past live by more
// than 1.5× the growth that goal allows, see Releasable), the tuner
// collects once and returns the free pages to the OS (debug.FreeOSMemory):
// at most once per transition whose quiet lasts half a second, and at
// most 1% of the wall time (ReleaseGap; a release due sooner waits).
// Releases are counted in pushlog_gc_tune_releases_total and their time
// in pushlog_gc_tune_release_seconds_total. This is the process's own
// policy on its own allocation rate, the same in production as under a
// load tool, not a collection forced from outside; the tuner never
// collects otherwise.
package gctune

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pmetrics "github.com/pushlog/pushlog/cmd/internal/metrics"
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
	// Registerer receives pushlog_gc_tune_releases_total; nil: no metrics.
	Registerer prometheus.Registerer
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

	heap        []metrics.Sample                    // what a release would return
	heapStats   func() (live, objects, free uint64) // reads heap; tests replace it
	releases    prometheus.Counter
	releaseTime prometheus.Counter
	pending     bool // a busy→quiet transition has not been released yet
	// spellLive and spellScanned are the least live and scanned bytes a
	// collection of the last busy spell found. A
	// collection counts what is allocated while it marks as live, and a
	// busy process on a loaded machine marks long: the last collection's
	// figures can be hundreds of MiB of garbage, which made a heap that
	// was mostly garbage look at its quiet goal and kept it (the release
	// test failed under CI load). The least of them is the safer guess.
	spellLive, spellScanned uint64
	quietSince              time.Time // when that transition was seen
	nextRelease             time.Time // no release before (ReleaseGap after the last)
}

// New returns a tuner; nothing changes until Run.
func New(cfg Config) *Tuner {
	if cfg.MinPercent <= 0 {
		cfg.MinPercent = defaultMinPercent
	}
	t := &Tuner{
		cfg: cfg,
		samples: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/gc/scan/stack:bytes"},
			{Name: "/gc/scan/globals:bytes"},
			{Name: "/gc/heap/allocs:bytes"}, // last: not scanned
		},
		heap: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"},
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/free:bytes"},
		},
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: pmetrics.Name("gc_tune", "releases_total"),
			Help: "Collections that returned free heap pages to the OS, started by the GC tuner once when the process went from busy to quiet (--gc-headroom-bytes).",
		}),
		releaseTime: prometheus.NewCounter(prometheus.CounterOpts{
			Name: pmetrics.Name("gc_tune", "release_seconds_total"),
			Help: "Wall time spent in the GC tuner's releases (kept under 1% of the time).",
		}),
		gcs: make(chan struct{}, 1),
	}
	t.heapStats = t.readHeap
	return t
}

// readHeap reads the figures Releasable weighs: the live heap at the last
// collection, the bytes in objects (live or not yet swept) and the free
// pages not yet returned to the OS.
func (t *Tuner) readHeap() (live, objects, free uint64) {
	metrics.Read(t.heap)
	var v [3]uint64
	for i, s := range t.heap {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	return v[0], v[1], v[2]
}

// Run tunes GOGC until ctx ends, then restores the process's own value.
// It wakes once per collection (a sentinel's cleanup), and once a
// QuietCheck only while the process is busy or a release is pending.
// Off (no Headroom, or GOGC=off) it just waits for ctx.
func (t *Tuner) Run(ctx context.Context) error {
	t.max = debug.SetGCPercent(100)
	debug.SetGCPercent(t.max)
	if t.cfg.Headroom <= 0 || t.max < 0 { // GOGC=off: the operator manages collections
		<-ctx.Done()
		return nil
	}
	if err := pmetrics.Register(t.cfg.Registerer, t.releases, t.releaseTime); err != nil {
		return fmt.Errorf("gctune: %w", err)
	}
	defer debug.SetGCPercent(t.max)
	done := make(chan struct{})
	defer close(done)
	t.arm(done)
	current := t.max
	t.adjust(&current)
	// A process that was busy (plain GOGC) and then goes quiet would keep
	// a busy heap's goal until something allocates it full; while busy
	// (or a release waits for its gap), a look once a second tightens the
	// goal when the allocation stops.
	quiet := time.NewTicker(QuietCheck)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.gcs:
			t.adjust(&current)
		case <-quiet.C:
			if t.busy || t.pending {
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
	wasBusy := t.busy
	t.busy = headroom > t.cfg.Headroom
	if t.busy {
		var live uint64
		if v := t.samples[0].Value; v.Kind() == metrics.KindUint64 {
			live = v.Uint64()
		}
		if !wasBusy || live < t.spellLive {
			t.spellLive = live
		}
		if !wasBusy || scanned < t.spellScanned {
			t.spellScanned = scanned
		}
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
	switch {
	case t.busy:
		t.pending = false // the transition's spell of quiet ended
	case wasBusy:
		t.pending, t.quietSince = true, now
	}
	// Only a quiet that outlasts half a quiet check releases: a load near
	// the busy rate flips busy and quiet between collections, and a
	// release per flip would return pages it refaults at once.
	if t.pending && now.Sub(t.quietSince) >= QuietCheck/2 {
		t.release(now, scanned)
	}
}

// release collects once and returns the free heap to the OS if the busy
// spell left the heap well above its quiet goal (Releasable); scanned is
// what the collector scans, as adjust computed it. Within
// ReleaseGap of the last release it waits (pending) instead: a release
// that is due is deferred, not dropped, or a burst right after one would
// keep its heap.
func (t *Tuner) release(now time.Time, scanned uint64) {
	if now.Before(t.nextRelease) {
		return
	}
	t.pending = false
	live, objects, free := t.heapStats()
	live, scanned = min(live, t.spellLive), min(scanned, t.spellScanned)
	if !Releasable(live, objects, free, QuietGrowth(t.cfg.Headroom, scanned, t.cfg.MinPercent, t.max)) {
		return
	}
	// A forced collection, but the process's own and at most one per
	// busy→quiet transition: without it the memory of a busy spell stays
	// the process's until something allocates a heap's worth again.
	start := time.Now()
	debug.FreeOSMemory()
	took := time.Since(start)
	t.releases.Inc()
	t.releaseTime.Add(took.Seconds())
	t.nextRelease = start.Add(ReleaseGap(took))
}

// Releasable reports whether a heap of live bytes (at the last
// collection) that holds objects bytes in objects and free bytes of free,
// not yet returned pages holds clearly more than its quiet heap goal: more
// than live plus 1.5× growth, the growth that goal allows (QuietGrowth).
// The garbage among the objects and the free pages are what a collection
// and a scavenge would return. A heap at or near its quiet goal is what
// the tuner wants it to be: releasing it would force a collection, return
// pages the next quiet cycle faults back in, and (under a load hovering at
// the busy rate) do so once per transition. 0 growth: the tuner is off.
func Releasable(live, objects, free, growth uint64) bool {
	if growth == 0 {
		return false
	}
	held := objects + free
	return held > live && held-live > growth+growth/2
}

// QuietGrowth is how far past the live heap the tuner lets a quiet heap
// grow: headroom, or what the GOGC it sets, Percent(headroom, scanned, lo,
// hi), lets the heap grow past scanned bytes, whichever is more (more
// where Percent sits at its floor lo: a heap above headroom/lo). 0 when
// the tuner is off (no headroom).
func QuietGrowth(headroom int64, scanned uint64, lo, hi int) uint64 {
	if headroom <= 0 {
		return 0
	}
	p := Percent(headroom, scanned, lo, hi)
	pct := uint64(p)
	return max(uint64(headroom), scanned/100*pct+scanned%100*pct/100) // scanned×p/100 without overflow
}

// ReleaseGap is how long after a release that took took the next may
// start: a hundred times as long, so releases take at most 1% of the wall
// time, and at least QuietCheck. took is the wall time of
// debug.FreeOSMemory in the tuner's goroutine, not the CPU it burnt: its
// collection runs on several Ps at once, and pages it returned that are
// faulted back in later are paid by whoever touches them. The bound is
// honest for wall time and a rough one for CPU.
func ReleaseGap(took time.Duration) time.Duration {
	return max(QuietCheck, 100*took)
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
