package protocol

import (
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/link"
)

func TestGCRA(t *testing.T) {
	const n = 4
	period := time.Minute
	var g Rate
	now := time.Unix(1000, 0).UnixNano()
	for i := range n {
		if !g.Allow(now, n, period, 1) {
			t.Fatalf("token %d refused", i)
		}
	}
	if g.Allow(now, n, period, 1) {
		t.Fatal("burst past n allowed")
	}
	step := int64(period) / n
	if !g.Allow(now+step, n, period, 1) || g.Allow(now+step, n, period, 1) {
		t.Fatal("one token per period/n")
	}
	if !g.Allow(now+100*int64(period), n, period, n) || g.Allow(now+100*int64(period), n, period, 1) {
		t.Fatal("an idle bucket holds n, not more")
	}
	if !g.Allow(now, n, period, 0) {
		t.Fatal("cost 0 refused")
	}
	if (&Rate{}).Allow(now, n, period, n+1) {
		t.Fatal("a cost above n allowed")
	}
}

func TestChanSet(t *testing.T) {
	id := func(b byte) [16]byte { return [16]byte{15: b} }
	tests := []struct {
		name string
		info link.UAIDInfo
		want int
	}{
		{"not valid: empty", link.UAIDInfo{Channels: [][16]byte{id(1)}}, 0},
		{"deduplicated", link.UAIDInfo{Valid: true, Channels: [][16]byte{id(3), id(1), id(3)}}, 2},
		{"none", link.UAIDInfo{Valid: true}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newChanSet(tc.info)
			if len(s.ids) != tc.want {
				t.Fatalf("%d ids, want %d", len(s.ids), tc.want)
			}
		})
	}
	s := newChanSet(link.UAIDInfo{Valid: true, Channels: [][16]byte{id(5), id(2)}, Partial: true})
	if !s.partial || !s.has(id(2)) || !s.has(id(5)) || s.has(id(3)) {
		t.Fatalf("set %+v", s)
	}
	s.add(id(3))
	s.add(id(3))
	s.remove(id(5))
	s.remove(id(9))
	if len(s.ids) != 2 || s.ids[0] != id(2) || s.ids[1] != id(3) {
		t.Fatalf("after add/remove: %v", s.ids)
	}
	s.remove(id(2))
	s.remove(id(3))
	if s.ids != nil {
		t.Fatal("an emptied set keeps its array")
	}
}

// TestClock: with an Epoch the rate buckets count on the monotonic
// clock from it (time.Time.Sub uses the monotonic readings, which no
// wall-clock step moves; a test cannot step the wall clock, so this holds
// the arithmetic); without one, Unix time as the tests give it.
func TestClock(t *testing.T) {
	epoch := time.Now()
	unix := time.Unix(1_800_000_000, 5)
	for _, tc := range []struct {
		name string
		c    Clock
		now  time.Time
		want int64
	}{
		{"no epoch: unix nanoseconds", Clock{}, unix, unix.UnixNano()},
		{"since the epoch", Clock{Epoch: epoch}, epoch.Add(90 * time.Second), int64(90 * time.Second)},
		{"at the epoch", Clock{Epoch: epoch}, epoch, 0},
	} {
		if got := tc.c.Nanos(tc.now); got != tc.want {
			t.Errorf("%s: clock = %d, want %d", tc.name, got, tc.want)
		}
	}
}
