package schema_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	chTestA = "0e7f2c1a-5b3d-4c8e-9f10-2a3b4c5d6e7f"
	chTestB = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
	chTestC = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
)

// chTestStep is one registrations event at an offset (-1: unknown).
type chTestStep struct {
	ev     *pb.Event
	offset int64
}

func chTestReg(ch string, ms int64) *pb.Event {
	return &pb.Event{TimeMs: ms, Body: &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch, KeyHash: []byte(ch[:4])}}}
}

func chTestUnreg(ch string, ms int64) *pb.Event {
	return &pb.Event{TimeMs: ms, Body: &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: ch, Code: 200}}}
}

func chTestReset(ms int64) *pb.Event {
	return &pb.Event{TimeMs: ms, Body: &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "test"}}}
}

func TestApplyRegistration(t *testing.T) {
	type want struct {
		active, gone []string // channels expected active / gone
		neither      []string // neither active nor gone (never seen)
		reset        bool
		offset       int64
		changed      []bool // ApplyRegistration's result per step
	}
	tests := []struct {
		name  string
		steps []chTestStep
		want  want
	}{
		{
			name:  "register",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}},
			want:  want{active: []string{chTestA}, neither: []string{chTestB}, offset: 1, changed: []bool{true}},
		},
		{
			name:  "register twice is idempotent",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}, {chTestReg(chTestA, 2), 1}},
			want:  want{active: []string{chTestA}, offset: 2, changed: []bool{true, false}},
		},
		{
			name:  "unregister",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}, {chTestReg(chTestB, 1), 1}, {chTestUnreg(chTestB, 2), 2}},
			want:  want{active: []string{chTestA}, gone: []string{chTestB}, offset: 3, changed: []bool{true, true, true}},
		},
		{
			// Issue 10 finding 2: an unknown unregister costs nothing lasting.
			name:  "unregister unknown channel changes nothing",
			steps: []chTestStep{{chTestUnreg(chTestA, 1), 4}},
			want:  want{neither: []string{chTestA}, offset: 5, changed: []bool{false}},
		},
		{
			name:  "unregister twice",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}, {chTestUnreg(chTestA, 2), 1}, {chTestUnreg(chTestA, 3), 2}},
			want:  want{gone: []string{chTestA}, offset: 3, changed: []bool{true, true, false}},
		},
		{
			name:  "register again after unregister",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}, {chTestUnreg(chTestA, 2), 1}, {chTestReg(chTestA, 3), 2}},
			want:  want{active: []string{chTestA}, offset: 3, changed: []bool{true, true, true}},
		},
		{
			name:  "reset makes every channel gone, even unseen ones",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}, {chTestReg(chTestB, 1), 1}, {chTestReset(2), 2}},
			want:  want{gone: []string{chTestA, chTestB, chTestC}, reset: true, offset: 3, changed: []bool{true, true, true}},
		},
		{
			name:  "reset twice",
			steps: []chTestStep{{chTestReg(chTestA, 1), 0}, {chTestReset(2), 1}, {chTestReset(3), 2}},
			want:  want{gone: []string{chTestA}, reset: true, offset: 3, changed: []bool{true, true, false}},
		},
		{
			name: "registration revives a reset UAID, other channels stay gone",
			steps: []chTestStep{
				{chTestReg(chTestA, 1), 0}, {chTestReg(chTestB, 1), 1}, {chTestReset(2), 2}, {chTestReg(chTestA, 3), 3},
			},
			want: want{active: []string{chTestA}, gone: []string{chTestB}, neither: []string{chTestC}, offset: 4, changed: []bool{true, true, true, true}},
		},
		{
			name: "new channel revives a reset UAID",
			steps: []chTestStep{
				{chTestReg(chTestA, 1), 0}, {chTestReset(2), 1}, {chTestReg(chTestC, 3), 2},
			},
			want: want{active: []string{chTestC}, gone: []string{chTestA}, offset: 3, changed: []bool{true, true, true}},
		},
		{
			name: "unregister during reset keeps the reset",
			steps: []chTestStep{
				{chTestReg(chTestA, 1), 0}, {chTestReset(2), 1}, {chTestUnreg(chTestB, 3), 2},
			},
			want: want{gone: []string{chTestA, chTestB, chTestC}, reset: true, offset: 3, changed: []bool{true, true, false}},
		},
		{
			name: "offsets already folded are skipped",
			steps: []chTestStep{
				{chTestReg(chTestA, 1), 5}, {chTestUnreg(chTestA, 2), 3}, {chTestUnreg(chTestA, 2), 5},
			},
			want: want{active: []string{chTestA}, offset: 6, changed: []bool{true, false, false}},
		},
		{
			name: "unknown offsets are always folded and never move the offset",
			steps: []chTestStep{
				{chTestReg(chTestA, 1), 7}, {chTestUnreg(chTestA, 2), -1},
			},
			want: want{gone: []string{chTestA}, offset: 8, changed: []bool{true, true}},
		},
		{
			name: "a gap in offsets is fine",
			steps: []chTestStep{
				{chTestReg(chTestA, 1), 0}, {chTestReg(chTestB, 1), 100},
			},
			want: want{active: []string{chTestA, chTestB}, offset: 101, changed: []bool{true, true}},
		},
		{
			name:  "a non-registration event only moves the offset",
			steps: []chTestStep{{&pb.Event{Body: &pb.Event_Acked{Acked: &pb.Acked{}}}, 9}},
			want:  want{neither: []string{chTestA}, offset: 10, changed: []bool{false}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &pb.ChannelState{}
			for i, s := range tt.steps {
				if got := schema.ApplyRegistration(st, s.ev, s.offset); got != tt.want.changed[i] {
					t.Errorf("step %d: changed = %v, want %v", i, got, tt.want.changed[i])
				}
			}
			chTestCheck(t, st, tt.want.active, tt.want.gone, tt.want.neither)
			if st.GetUaidReset() != tt.want.reset {
				t.Errorf("uaid_reset = %v, want %v", st.GetUaidReset(), tt.want.reset)
			}
			if st.GetRegistrationsOffset() != tt.want.offset {
				t.Errorf("registrations_offset = %d, want %d", st.GetRegistrationsOffset(), tt.want.offset)
			}
		})
	}
}

func chTestCheck(t *testing.T, st *pb.ChannelState, active, gone, neither []string) {
	t.Helper()
	for _, ch := range active {
		if !schema.ChannelActive(st, ch) || schema.ChannelGone(st, ch) {
			t.Errorf("%s: active=%v gone=%v, want active", ch, schema.ChannelActive(st, ch), schema.ChannelGone(st, ch))
		}
	}
	for _, ch := range gone {
		if schema.ChannelActive(st, ch) || !schema.ChannelGone(st, ch) {
			t.Errorf("%s: active=%v gone=%v, want gone", ch, schema.ChannelActive(st, ch), schema.ChannelGone(st, ch))
		}
	}
	for _, ch := range neither {
		if schema.ChannelActive(st, ch) || schema.ChannelGone(st, ch) {
			t.Errorf("%s: active=%v gone=%v, want neither (never seen)", ch, schema.ChannelActive(st, ch), schema.ChannelGone(st, ch))
		}
	}
}

// Folding the same events twice, in order, with their offsets, gives the
// same state as folding them once: a replay after a crash is harmless.
func TestApplyRegistrationReplay(t *testing.T) {
	evs := []*pb.Event{
		chTestReg(chTestA, 1), chTestReg(chTestB, 2), chTestUnreg(chTestA, 3),
		chTestReset(4), chTestReg(chTestC, 5), chTestUnreg(chTestB, 6), chTestReg(chTestA, 7),
	}
	once := &pb.ChannelState{}
	for i, ev := range evs {
		schema.ApplyRegistration(once, ev, int64(i))
	}
	for cut := range len(evs) + 1 {
		twice := &pb.ChannelState{}
		for i, ev := range evs[:cut] {
			schema.ApplyRegistration(twice, ev, int64(i))
		}
		snapshot := proto.Clone(twice).(*pb.ChannelState)
		for i, ev := range evs {
			if schema.ApplyRegistration(snapshot, ev, int64(i)) && i < cut {
				t.Errorf("cut %d: event %d below the snapshot offset changed the state", cut, i)
			}
		}
		if !proto.Equal(snapshot, once) {
			t.Errorf("cut %d: replayed state\n%v\nwant\n%v", cut, snapshot, once)
		}
	}
}

func TestChannelQueriesOnEmptyState(t *testing.T) {
	st := &pb.ChannelState{}
	if schema.ChannelActive(st, chTestA) || schema.ChannelGone(st, chTestA) {
		t.Fatal("empty state: channel must be neither active nor gone")
	}
	st.UaidReset = true
	if schema.ChannelActive(st, chTestA) || !schema.ChannelGone(st, chTestA) {
		t.Fatal("reset state: every channel must be gone")
	}
}
