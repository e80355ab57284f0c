package ingest

import (
	"errors"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// fakeClock is a manual clock for the breaker.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func mustAllow(t *testing.T, b *breaker) ticket {
	t.Helper()
	tk, ok := b.allow()
	if !ok {
		t.Fatal("refused")
	}
	return tk
}

var errKafka = errors.New("kafka down")

func TestBreakerStates(t *testing.T) {
	clk := newFakeClock()
	var changes []string
	b := newBreaker(3, 500*time.Millisecond, 2, clk.now, func(from, to gobreaker.State) {
		changes = append(changes, from.String()+">"+to.String())
	})
	for range 2 {
		b.done(mustAllow(t, b), errKafka, false)
	}
	if b.State() != gobreaker.StateClosed {
		t.Fatal("opened below the threshold")
	}
	b.done(mustAllow(t, b), nil, false) // a success resets the count
	for range 3 {
		b.done(mustAllow(t, b), errKafka, false)
	}
	if b.State() != gobreaker.StateOpen {
		t.Fatalf("state %s after 3 failures", b.State())
	}
	if _, ok := b.allow(); ok {
		t.Fatal("open breaker let a produce through at once")
	}
	clk.add(499 * time.Millisecond)
	if _, ok := b.allow(); ok {
		t.Fatal("probe before the interval")
	}
	clk.add(time.Millisecond)
	p1 := mustAllow(t, b)
	if !p1.probe || b.State() != gobreaker.StateHalfOpen {
		t.Fatalf("probe %v state %s", p1.probe, b.State())
	}
	if _, ok := b.allow(); ok {
		t.Fatal("two probes in one interval")
	}
	// A probe stuck on a dead broker does not hold the next one back.
	clk.add(500 * time.Millisecond)
	p2 := mustAllow(t, b)
	clk.add(500 * time.Millisecond)
	if _, ok := b.allow(); ok {
		t.Fatal("more probes in flight than HalfOpenRequests")
	}
	// A failed probe keeps it open for one interval only.
	b.done(p1, errKafka, false)
	if b.State() != gobreaker.StateHalfOpen { // p2 still in flight
		t.Fatalf("state %s", b.State())
	}
	p3 := mustAllow(t, b) // p1's slot is free and an interval has passed
	b.done(p2, errKafka, false)
	// A probe whose sender went away says nothing about Kafka.
	b.done(p3, errClientGone, true)
	if b.State() != gobreaker.StateOpen {
		t.Fatalf("state %s after failed and excluded probes", b.State())
	}
	clk.add(500 * time.Millisecond)
	b.done(mustAllow(t, b), nil, false)
	if b.State() != gobreaker.StateClosed {
		t.Fatalf("state %s after a successful probe", b.State())
	}
	if _, ok := b.allow(); !ok {
		t.Fatal("closed breaker refused")
	}
	if changes[0] != "closed>open" || changes[len(changes)-1] != "half-open>closed" {
		t.Errorf("changes %v", changes)
	}
}

// TestBreakerRecoveryDelay (issue 11 finding 5): with Kafka failing until T
// and produces sent continuously, the breaker closes within one probe
// interval of T, whenever T falls, and however many probes failed before.
// Time is simulated; nothing here depends on the machine's speed.
func TestBreakerRecoveryDelay(t *testing.T) {
	const interval = 500 * time.Millisecond
	const step = 10 * time.Millisecond
	for _, recoverAt := range []time.Duration{0, 490 * time.Millisecond, 510 * time.Millisecond, 3210 * time.Millisecond, 15 * time.Second} {
		clk := newFakeClock()
		start := clk.t
		b := newBreaker(5, interval, 4, clk.now, nil)
		for range 5 {
			b.done(mustAllow(t, b), errKafka, false)
		}
		for {
			clk.add(step)
			if tk, ok := b.allow(); ok {
				var err error
				if clk.t.Sub(start) < recoverAt {
					err = errKafka
				}
				b.done(tk, err, false)
			}
			if b.State() == gobreaker.StateClosed {
				break
			}
			if clk.t.Sub(start) > recoverAt+time.Minute {
				t.Fatalf("recover at %s: never closed", recoverAt)
			}
		}
		if late := clk.t.Sub(start) - recoverAt; late > interval {
			t.Errorf("recover at %s: closed %s later, want at most %s", recoverAt, late, interval)
		}
	}
}

// TestBreakerDefaults: probes every 500ms and Retry-After 1 while open.
func TestBreakerDefaults(t *testing.T) {
	e := newEnv(t)
	if e.srv.cfg.Breaker.OpenTimeout != DefaultBreakerProbeInterval || e.srv.openSecs != 1 || e.srv.cfg.Breaker.HalfOpenRequests != 4 {
		t.Fatalf("breaker defaults %+v, Retry-After %d", e.srv.cfg.Breaker, e.srv.openSecs)
	}
}
