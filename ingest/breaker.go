package ingest

import (
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// breaker guards Kafka produces. Closed, every produce runs; after
// FailureThreshold consecutive failures it opens and answers 503 at once,
// except that it lets one probe through every ProbeInterval (at most
// MaxProbes in flight). The first produce to succeed closes it.
//
// Unlike a classic breaker that stays open for a fixed time and closes
// only after a single half-open probe, probes here are not serialised: a
// probe that hangs on a dead broker until the produce timeout does not hold
// the next one back, and a failed probe costs one interval, not a new open
// period. So pushes resume at most about one ProbeInterval after Kafka
// accepts writes again (issue 11 finding 5: a fixed 10 s open period added
// 3-5 s to Kafka's own recovery and a too-early probe another 10 s).
type breaker struct {
	threshold int
	interval  time.Duration
	maxProbes int
	now       func() time.Time
	onChange  func(from, to gobreaker.State)

	mu        sync.Mutex
	open      bool
	failures  int       // consecutive, while closed
	lastProbe time.Time // while open: when the last probe was let through
	probes    int       // probes in flight
}

// ticket is what allow hands to a produce: whether it is a probe.
type ticket struct{ probe bool }

func newBreaker(threshold int, interval time.Duration, maxProbes int, now func() time.Time, onChange func(from, to gobreaker.State)) *breaker {
	return &breaker{threshold: threshold, interval: interval, maxProbes: maxProbes, now: now, onChange: onChange}
}

// allow reports whether a produce may run now.
func (b *breaker) allow() (ticket, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return ticket{}, true
	}
	now := b.now()
	if b.probes >= b.maxProbes || now.Sub(b.lastProbe) < b.interval {
		return ticket{}, false
	}
	from := b.stateLocked()
	b.lastProbe = now
	b.probes++
	b.notify(from)
	return ticket{probe: true}, true
}

// refusing reports, without taking a probe, whether allow would refuse now:
// callers check it before work that a refusal would waste.
func (b *breaker) refusing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open && (b.probes >= b.maxProbes || b.now().Sub(b.lastProbe) < b.interval)
}

// done records a produce's outcome. excluded outcomes (the sender went
// away) say nothing about Kafka: they only free the probe slot.
func (b *breaker) done(t ticket, err error, excluded bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := b.stateLocked()
	if t.probe {
		b.probes--
	}
	switch {
	case excluded:
	case err == nil:
		// Any success proves Kafka takes writes, probe or not.
		b.open, b.failures = false, 0
	case !b.open:
		b.failures++
		if b.failures >= b.threshold {
			b.open, b.failures = true, 0
			b.lastProbe = b.now() // the first probe comes one interval later
		}
	}
	b.notify(from)
}

// State maps the breaker onto gobreaker's states for metrics and
// heartbeats: half-open while a probe is in flight.
func (b *breaker) State() gobreaker.State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked()
}

func (b *breaker) stateLocked() gobreaker.State {
	switch {
	case !b.open:
		return gobreaker.StateClosed
	case b.probes > 0:
		return gobreaker.StateHalfOpen
	}
	return gobreaker.StateOpen
}

func (b *breaker) notify(from gobreaker.State) {
	if to := b.stateLocked(); to != from && b.onChange != nil {
		b.onChange(from, to)
	}
}
