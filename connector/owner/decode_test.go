package owner

import (
	"math/rand/v2"
	"testing"

	"github.com/pushlog/pushlog/schema"
)

func TestParseChannelIDBytes(t *testing.T) {
	for _, s := range []string{newChannel(), "0123456789ABCDEF0123456789abcdef", "01234567-89ab-cdef-0123-456789abcdeg", "01234567-89ab-cdef-0123+456789abcdef", "", "x"} {
		got, err := parseChannelID([]byte(s))
		want, werr := schema.ParseChannelID(s)
		if got != want || (err == nil) != (werr == nil) {
			t.Errorf("%q: %x, %v; schema.ParseChannelID %x, %v", s, got, err, want, werr)
		}
	}
}

// TestDequeSummaries: the deque's counts and oldest acceptance time agree
// with a walk of its entries through pushes, settles and pops.
func TestDequeSummaries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var d deque
	var live []*pending
	off := int64(0)
	for step := range 20000 {
		switch r := rng.IntN(10); {
		case r < 6:
			m := &pending{offset: off, acceptedMs: int64(rng.IntN(1000))} // 0: unknown time
			off += 1 + int64(rng.IntN(3))
			d.push(m)
			live = append(live, m)
		case len(live) > 0:
			i := rng.IntN(len(live))
			if r == 9 {
				i = 0 // the front, so pops happen
			}
			m := live[i]
			live = append(live[:i], live[i+1:]...)
			m.state = stSettled
			d.settledNow(m)
			d.popSettledFront()
		}
		if step%97 != 0 {
			continue
		}
		unsettled, settled, oldest := 0, 0, int64(0)
		for _, m := range d.items() {
			if m.state == stSettled {
				settled++
				continue
			}
			unsettled++
			if m.acceptedMs > 0 && (oldest == 0 || m.acceptedMs < oldest) {
				oldest = m.acceptedMs
			}
		}
		if d.unsettled != unsettled || d.settled != settled || d.oldestMs() != oldest {
			t.Fatalf("step %d: unsettled %d settled %d oldest %d, walk %d %d %d", step, d.unsettled, d.settled, d.oldestMs(), unsettled, settled, oldest)
		}
	}
}
