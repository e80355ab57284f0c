package connector

import (
	"slices"
	"testing"
	"time"
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
			w := newWheel(time.Second, start)
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
