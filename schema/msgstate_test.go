package schema

import (
	"testing"
	"unsafe"

	"github.com/pushlog/pushlog/schema/pb"
)

func msgEvent(t int64, body any) *pb.Event {
	ev := &pb.Event{TimeMs: t}
	ref := &pb.MessageRef{Partition: 1, Offset: 7}
	switch b := body.(type) {
	case *pb.MessageAccepted:
		ev.Body = &pb.Event_MessageAccepted{MessageAccepted: b}
	case string:
		switch b {
		case "delivered":
			ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Attempt: 1}}
		case "acked":
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}
		case "nacked":
			ev.Body = &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: ref, Code: 301}}
		case "expired":
			ev.Body = &pb.Event_Expired{Expired: &pb.Expired{Msg: ref}}
		case "deleted":
			ev.Body = &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: ref}}
		case "drop-deleted":
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_DELETED}}
		case "drop-topic":
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED}}
		}
	}
	return ev
}

func TestMessageStatusFold(t *testing.T) {
	acc := &pb.MessageAccepted{TtlS: 60, KeyBound: true, VapidKeyHash: make([]byte, 32), Urgency: pb.Urgency_URGENCY_HIGH}
	type step struct {
		t    int64
		body any
	}
	for _, tc := range []struct {
		name    string
		steps   []step
		want    MessageState
		settled int64
		reason  pb.DropReason
	}{
		{"pending", []step{{10, acc}}, StatePending, 0, 0},
		{"delivered", []step{{10, acc}, {20, "delivered"}, {25, "nacked"}}, StateDelivered, 0, 0},
		{"acked", []step{{10, acc}, {20, "delivered"}, {30, "acked"}}, StateAcked, 30, 0},
		{"ack before accept folded", []step{{30, "acked"}, {20, "delivered"}, {10, acc}}, StateAcked, 30, 0},
		{"expired", []step{{10, acc}, {70, "expired"}}, StateExpired, 70, 0},
		{"dropped", []step{{10, acc}, {15, "drop-topic"}}, StateDropped, 15, pb.DropReason_DROP_REASON_TOPIC_REPLACED},
		{"delete requested", []step{{10, acc}, {15, "deleted"}}, StatePending, 0, 0},
		{"deleted", []step{{10, acc}, {15, "deleted"}, {16, "drop-deleted"}}, StateDeleted, 16, 0},
		{"delete after ack", []step{{10, acc}, {30, "acked"}, {40, "deleted"}}, StateAcked, 30, 0},
		{"earliest settlement wins in any order", []step{{10, acc}, {40, "drop-topic"}, {30, "acked"}}, StateAcked, 30, 0},
		{"twice is once", []step{{10, acc}, {30, "acked"}, {30, "acked"}}, StateAcked, 30, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m MessageStatus
			for _, s := range tc.steps {
				ev := msgEvent(s.t, s.body)
				if k, ok := MessageKeyOf(1, 7, ev); !ok || k != (MessageKey{1, 7}) {
					t.Fatalf("key of %v: %v %v", ev, k, ok)
				}
				m.Apply(ev)
			}
			if m.State != tc.want || m.SettledMs != tc.settled || m.Reason != tc.reason {
				t.Fatalf("got %v at %d (%v), want %v at %d (%v)", m.State, m.SettledMs, m.Reason, tc.want, tc.settled, tc.reason)
			}
			if m.AcceptedMs != 10 || !m.KeyBound || m.Urgency != pb.Urgency_URGENCY_HIGH {
				t.Fatalf("accept not folded: %+v", m)
			}
		})
	}
}

func TestMessageKeyOfOthers(t *testing.T) {
	if _, ok := MessageKeyOf(0, 0, &pb.Event{Body: &pb.Event_UaidSeen{UaidSeen: &pb.UaidSeen{}}}); ok {
		t.Fatal("UaidSeen has no message")
	}
	if _, ok := MessageKeyOf(0, 0, &pb.Event{Body: &pb.Event_Acked{Acked: &pb.Acked{}}}); ok {
		t.Fatal("an ack without a ref has no message")
	}
	var acked MessageStatus
	acked.Apply(msgEvent(30, "acked"))
	acked.Apply(msgEvent(20, "expired")) // earlier: wins, and the ack code goes
	if acked.State != StateExpired || acked.AckCode != 0 {
		t.Fatalf("earlier expiry after an ack: %+v", acked)
	}
	acked.Apply(msgEvent(10, "acked"))
	if acked.State != StateAcked || acked.AckCode != 100 {
		t.Fatalf("ack code of the winning ack: %+v", acked)
	}
	if n := unsafe.Sizeof(MessageStatus{}); n > 96 {
		t.Fatalf("MessageStatus is %d bytes; the status table's bound assumes at most 96", n)
	}
	if DropReasonName(pb.DropReason_DROP_REASON_PENDING_LIMIT) != "pending_limit" || UrgencyName(pb.Urgency_URGENCY_VERY_LOW) != "very-low" {
		t.Fatal("names")
	}
}
