package connector

import (
	"slices"
	"testing"
	"time"
	"unsafe"
)

func TestWheel(t *testing.T) {
	const tick = int64(time.Second)
	start := 100 * tick
	type step struct {
		op   string // schedule, remove, close, expired
		conn int
		at   int64 // schedule: due time; expired: now
		want []int // expired: the conns taken, in any order
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"due after its slot passes", []step{
			{op: "schedule", conn: 0, at: start + 3*tick},
			{op: "expired", at: start + 3*tick, want: nil}, // the slot after the due time
			{op: "expired", at: start + 4*tick, want: []int{0}},
			{op: "expired", at: start + 9*tick, want: nil},
		}},
		{"a past due time goes to the next slot, never a taken one", []step{
			{op: "expired", at: start + 5*tick},
			{op: "schedule", conn: 0, at: start},
			{op: "expired", at: start + 5*tick, want: nil},
			{op: "expired", at: start + 6*tick, want: []int{0}},
		}},
		{"rescheduling moves", []step{
			{op: "schedule", conn: 0, at: start + tick},
			{op: "schedule", conn: 0, at: start + 5*tick},
			{op: "expired", at: start + 3*tick, want: nil},
			{op: "expired", at: start + 6*tick, want: []int{0}},
		}},
		{"removal keeps the slot's others", []step{
			{op: "schedule", conn: 0, at: start + tick},
			{op: "schedule", conn: 1, at: start + tick},
			{op: "schedule", conn: 2, at: start + tick},
			{op: "remove", conn: 0},
			{op: "remove", conn: 0},
			{op: "expired", at: start + 10*tick, want: []int{1, 2}},
		}},
		{"a closed conn is not scheduled", []step{
			{op: "close", conn: 0},
			{op: "schedule", conn: 0, at: start + tick},
			{op: "expired", at: start + 10*tick, want: nil},
		}},
		{"late sweeps take every passed slot", []step{
			{op: "schedule", conn: 0, at: start + tick},
			{op: "schedule", conn: 1, at: start + 50*tick},
			{op: "schedule", conn: 2, at: start + 500*tick},
			{op: "expired", at: start + 100*tick, want: []int{0, 1}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWheel(time.Second, time.Now())
			conns := make([]*conn, 3)
			for i := range conns {
				conns[i] = &conn{}
			}
			for i, s := range tc.steps {
				switch s.op {
				case "schedule":
					w.schedule(conns[s.conn], s.at)
				case "remove":
					w.remove(conns[s.conn])
				case "close":
					conns[s.conn].proto.Close()
				case "expired":
					var got []int
					for _, c := range w.expired(s.at) {
						got = append(got, slices.Index(conns, c))
					}
					slices.Sort(got)
					if !slices.Equal(got, s.want) {
						t.Fatalf("step %d: expired(%d) = %v, want %v", i, s.at/tick, got, s.want)
					}
				}
			}
		})
	}
}

// TestWheelIgnoresWallClockSteps: the wheel's clock is the monotonic one,
// so a wall-clock step (NTP stepping an hour either way) neither fires a
// timeout early nor postpones it. The times are built as the sweeper gets
// them (a Ticker's, with a monotonic reading) with the wall reading
// stepped.
func TestWheelIgnoresWallClockSteps(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour, 24 * time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			epoch := time.Now()
			w := newWheel(time.Second, epoch)
			c := &conn{}
			w.schedule(c, w.at(epoch.Add(30*time.Second))) // an idle Ping due in 30s
			before := wallStepped(t, epoch.Add(10*time.Second), step)
			if got := w.at(before); got != int64(10*time.Second) {
				t.Fatalf("10s after the epoch with the wall stepped %v reads %v", step, time.Duration(got))
			}
			if got := w.expired(w.at(before)); len(got) != 0 {
				t.Fatalf("the wall stepped %v fired the 30s timeout after 10s", step)
			}
			due := wallStepped(t, epoch.Add(32*time.Second), step)
			if got := w.expired(w.at(due)); len(got) != 1 || got[0] != c {
				t.Fatalf("the wall stepped %v postponed the 30s timeout past 32s: %d taken", step, len(got))
			}
		})
	}
}

// wallStepped returns t with its wall-clock reading moved by step (whole
// seconds) and its monotonic reading kept: what time.Now returns after
// the system clock was stepped. time.Time offers no constructor for it, so
// this writes the seconds field of its documented-in-source layout (wall:
// hasMonotonic bit, 33 bits of seconds since 1885, 30 bits of nanoseconds;
// ext: the monotonic reading) and checks the result.
func wallStepped(tb testing.TB, t time.Time, step time.Duration) time.Time {
	tb.Helper()
	const nsecShift = 30
	type timeLayout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	s := t
	p := (*timeLayout)(unsafe.Pointer(&s))
	if p.wall>>63 != 1 {
		tb.Fatal("wallStepped: t has no monotonic reading")
	}
	p.wall += uint64(int64(step/time.Second)) << nsecShift
	if s.Sub(t) != 0 || s.Round(0).Sub(t.Round(0)) != step {
		tb.Fatalf("wallStepped: time.Time's layout changed (monotonic difference %v, wall difference %v, want 0 and %v)",
			s.Sub(t), s.Round(0).Sub(t.Round(0)), step)
	}
	return s
}
