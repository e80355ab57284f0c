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
// says otherwise). A small process keeps GOGC; a large one collects more
// often, which costs CPU only while it allocates: an idle process does not
// collect at all.
package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
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

// Tuner adjusts GOGC after each collection.
type Tuner struct {
	cfg     Config
	max     int // the process's GOGC; the tuner never goes above it
	samples []metrics.Sample
	gcs     chan struct{}
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
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.gcs:
			t.adjust(&current)
		}
	}
}

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

// adjust sets GOGC for the live heap the last collection found.
func (t *Tuner) adjust(current *int) {
	metrics.Read(t.samples)
	var scanned uint64
	for _, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			scanned += s.Value.Uint64()
		}
	}
	p := Percent(t.cfg.Headroom, scanned, t.cfg.MinPercent, t.max)
	// Small moves are not worth a change of the pacer's goal.
	if p != *current && (p*10 < *current*9 || p*10 > *current*11 || p == t.max || p == t.cfg.MinPercent) {
		debug.SetGCPercent(p)
		*current = p
	}
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
