package owner

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// TestHeldDelivered: a Delivered event waits for its message's ack
// (DeliveredHold) and is written the moment the ack is reported, so it
// precedes the connection node's Acked in one produce request; nothing
// held is ever dropped.
func TestHeldDelivered(t *testing.T) {
	uaid := uaidIn(1)
	id, err := schema.ParseUAID(uaid)
	if err != nil {
		t.Fatal(err)
	}
	delivered := func(off int64, attempt int32) *pb.Event {
		ev := schema.NewEvent(uaid, newFakeClock().Now())
		ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: &pb.MessageRef{Partition: 1, Offset: off}, Attempt: attempt}}
		return ev
	}
	written := func(rec *recorder) []string {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var out []string
		for _, ev := range rec.evs {
			d := ev.GetDelivered()
			out = append(out, fmt.Sprintf("%d/%d", d.GetMsg().GetOffset(), d.GetAttempt()))
		}
		return out
	}
	var pastBound []string // what the bound's case writes: every offset, in order
	for off := range maxHeld + 1 {
		pastBound = append(pastBound, strconv.Itoa(off)+"/1")
	}
	for _, tc := range []struct {
		name      string
		do        func(ps *partState)
		want      []string // written at once, in order
		stillHeld int
		later     bool  // want is written by a goroutine, not at once
		overflows int64 // times the bound was reached
	}{
		{"held until something happens", func(ps *partState) {
			ps.holdDelivered(5, delivered(5, 1))
		}, nil, 1, false, 0},
		{"an ack writes its own at once", func(ps *partState) {
			ps.holdDelivered(5, delivered(5, 1))
			ps.holdDelivered(6, delivered(6, 1))
			ps.ackedLocally(id, &pb.MessageRef{Partition: 1, Offset: 6})
		}, []string{"6/1"}, 1, false, 0},
		{"an ack of nothing held writes nothing", func(ps *partState) {
			ps.holdDelivered(5, delivered(5, 1))
			ps.ackedLocally(id, &pb.MessageRef{Partition: 1, Offset: 9})
		}, nil, 1, false, 0},
		{"a second attempt writes the first", func(ps *partState) {
			ps.holdDelivered(5, delivered(5, 1))
			ps.holdDelivered(5, delivered(5, 2))
		}, []string{"5/1"}, 1, false, 0},
		{"release writes all in offset order", func(ps *partState) {
			ps.holdDelivered(7, delivered(7, 1))
			ps.holdDelivered(3, delivered(3, 1))
			ps.holdDelivered(5, delivered(5, 1))
			ps.release()
		}, []string{"3/1", "5/1", "7/1"}, 0, true, 0},
		{"past the bound all are written", func(ps *partState) {
			for off := range int64(maxHeld + 1) {
				ps.holdDelivered(off, delivered(off, 1))
			}
		}, pastBound, 0, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, rec := newTestPart(t, 1, newFakeClock())
			ps.mu.Lock()
			tc.do(ps)
			held := len(ps.held)
			got := written(rec)
			ps.mu.Unlock()
			if tc.later {
				waitFor(t, "released events written", func() bool { return len(written(rec)) == len(tc.want) })
				got = written(rec)
			}
			if n := ps.env.heldOverflows.Load(); n != tc.overflows {
				t.Fatalf("overflows counted %d, want %d", n, tc.overflows)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("written %.200v, want %.200v", got, tc.want)
			}
			if held != tc.stillHeld {
				t.Fatalf("%d held, want %d", held, tc.stillHeld)
			}
			// What stays held is written when no ack comes.
			waitFor(t, "held events written after DeliveredHold", func() bool {
				ps.mu.Lock()
				defer ps.mu.Unlock()
				return len(ps.held) == 0 && len(written(rec)) == len(got)+held
			})
		})
	}
}

// TestWriteHeld: a node shutting down writes every partition's held
// Delivered events before it flushes its producer.
func TestWriteHeld(t *testing.T) {
	ps1, rec1 := newTestPart(t, 1, newFakeClock())
	ps2, rec2 := newTestPart(t, 2, newFakeClock())
	for _, ps := range []*partState{ps1, ps2} {
		ev := schema.NewEvent(uaidIn(ps.p), newFakeClock().Now())
		ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: &pb.MessageRef{Partition: ps.p, Offset: 4}, Attempt: 1}}
		ps.mu.Lock()
		ps.holdDelivered(4, ev)
		ps.mu.Unlock()
	}
	o := &Owner{parts: map[int32]*partState{1: ps1, 2: ps2}, env: ps1.env}
	o.WriteHeld()
	for i, rec := range []*recorder{rec1, rec2} {
		rec.mu.Lock()
		n := len(rec.evs)
		rec.mu.Unlock()
		if n != 1 {
			t.Fatalf("partition %d: %d events written, want 1", i+1, n)
		}
	}
	// Shutting down: a delivery from now on is written at once, within
	// the node's flushes, not held for one that will not come.
	ev := schema.NewEvent(uaidIn(1), newFakeClock().Now())
	ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: &pb.MessageRef{Partition: 1, Offset: 5}, Attempt: 1}}
	ps1.mu.Lock()
	ps1.holdDelivered(5, ev)
	held := len(ps1.held)
	ps1.mu.Unlock()
	rec1.mu.Lock()
	n := len(rec1.evs)
	rec1.mu.Unlock()
	if held != 0 || n != 2 {
		t.Fatalf("after WriteHeld: %d held, %d written; want 0 held, 2 written", held, n)
	}
}
