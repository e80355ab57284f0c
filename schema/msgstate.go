package schema

import (
	"crypto/sha256"
	"strings"

	"github.com/pushlog/pushlog/schema/pb"
)

// MessageKey names an accepted message by its place in the messages topic
// (what a sealed MessageID and every MessageRef carry).
type MessageKey struct {
	Partition int32
	Offset    int64
}

// MessageState is where an accepted message is in its life.
type MessageState uint8

// The states of a message. Every state from StateAcked on is settled: the
// owner will not deliver the message again.
const (
	StatePending   MessageState = iota // accepted, not sent to the user agent yet
	StateDelivered                     // sent to the user agent or bridge, not acknowledged
	StateAcked
	StateExpired
	StateDropped
	StateDeleted
)

var stateNames = [...]string{"pending", "delivered", "acked", "expired", "dropped", "deleted"}

func (s MessageState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Settled reports whether the message reached a final state.
func (s MessageState) Settled() bool { return s >= StateAcked }

// MessageStatus is the fold of one message's events (MessageAccepted from
// the messages topic; Delivered, Acked, Expired, Dropped from the acks
// topic) in any order: the two topics are read
// independently, so the settlement is the settling event with the earliest
// time (ties: the first folded), which is also what analytics counts.
// Fixed size (no pointers), so a table of them costs a known amount.
type MessageStatus struct {
	AcceptedMs  int64 // 0 until the MessageAccepted is folded
	DeliveredMs int64 // first delivery
	SettledMs   int64 // when it reached State (0: not settled)
	TTLSeconds  int64
	Deliveries  int32
	Reason      pb.DropReason
	Urgency     pb.Urgency
	AckCode     int32        // StateAcked: the user agent's ack code (100, 101, 102)
	State       MessageState // never StateDelivered while settled
	KeyBound    bool
	KeyHash     [sha256.Size]byte // the sender's VAPID key hash (zero without VAPID)
}

// StatusChange is one event folded into a message's status, as the one
// fold of the messages and acks topics (projector.StatusTable) reports it
// to what follows it (push receipts): Before and After are the message's
// status around the event. A refold after a restart reports events again,
// with Before already holding them. The fold reads most records without
// decoding them in full (DecodeAccepted, DecodeSettlement), so a change
// carries what it read, not the event.
type StatusChange struct {
	Key MessageKey
	// Accepted is the event's fields when it is a MessageAccepted, nil
	// for the other events. It aliases the record and the fold reuses it:
	// valid during the call only (copy what outlives it).
	Accepted *Accepted
	Before   MessageStatus
	After    MessageStatus
}

// MessageKeyOf returns the message an event of the messages or acks topic
// is about: for a MessageAccepted its own place (partition, offset of the
// record), else its MessageRef. False for other events.
func MessageKeyOf(partition int32, offset int64, ev *pb.Event) (MessageKey, bool) {
	var ref *pb.MessageRef
	switch b := ev.GetBody().(type) {
	case *pb.Event_MessageAccepted:
		return MessageKey{Partition: partition, Offset: offset}, true
	case *pb.Event_MessageDeleted:
		ref = b.MessageDeleted.GetMsg()
	case *pb.Event_Delivered:
		ref = b.Delivered.GetMsg()
	case *pb.Event_Acked:
		ref = b.Acked.GetMsg()
	case *pb.Event_Nacked:
		ref = b.Nacked.GetMsg()
	case *pb.Event_Expired:
		ref = b.Expired.GetMsg()
	case *pb.Event_Dropped:
		ref = b.Dropped.GetMsg()
	default:
		return MessageKey{}, false
	}
	if ref == nil || ref.GetPartition() < 0 || ref.GetOffset() < 0 {
		return MessageKey{}, false
	}
	return MessageKey{Partition: ref.GetPartition(), Offset: ref.GetOffset()}, true
}

// Apply folds ev (about this message: see MessageKeyOf) into m. Applying an
// event twice is the same as once. A Nacked or a MessageDeleted changes
// nothing (the owner redelivers, drops or settles the deletion later).
func (m *MessageStatus) Apply(ev *pb.Event) {
	if b, ok := ev.GetBody().(*pb.Event_MessageAccepted); ok {
		a := b.MessageAccepted
		m.accepted(ev.GetTimeMs(), a.GetTtlS(), a.GetUrgency(), a.GetKeyBound(), a.GetVapidKeyHash())
		return
	}
	if s, ok := SettlementOf(ev); ok {
		m.ApplySettlement(s)
	}
	// A MessageDeleted (the DELETE request) settles nothing by itself:
	// the owner settles an unsettled message with a Dropped(deleted) and
	// ignores the request for a settled one, so the owner's answer is the
	// state (as analytics counts it: issue 16's deleted-once rule).
}

// ApplyAccepted is Apply of a partially decoded MessageAccepted
// (DecodeAccepted).
func (m *MessageStatus) ApplyAccepted(a *Accepted) {
	m.accepted(a.TimeMs, a.TTLS, a.Urgency, a.KeyBound, a.VapidKeyHash)
}

func (m *MessageStatus) accepted(t, ttl int64, u pb.Urgency, keyBound bool, keyHash []byte) {
	m.AcceptedMs = t
	m.TTLSeconds = ttl
	m.Urgency = u
	m.KeyBound = keyBound
	copy(m.KeyHash[:], keyHash)
}

// ApplySettlement is Apply of a settlement event (DecodeSettlement or
// SettlementOf).
func (m *MessageStatus) ApplySettlement(s Settlement) {
	t := s.TimeMs
	switch s.Kind {
	case FieldEventDelivered:
		if m.DeliveredMs == 0 || t < m.DeliveredMs {
			m.DeliveredMs = t
		}
		m.Deliveries = max(m.Deliveries, s.Attempt)
		if !m.State.Settled() {
			m.State = StateDelivered
		}
	case FieldEventAcked:
		if m.settle(StateAcked, 0, t) {
			m.AckCode = s.Code
		}
	case FieldEventExpired:
		m.settle(StateExpired, 0, t)
	case FieldEventDropped:
		if s.Reason == pb.DropReason_DROP_REASON_DELETED {
			m.settle(StateDeleted, 0, t)
		} else {
			m.settle(StateDropped, s.Reason, t)
		}
	}
}

// settle makes s the state unless an earlier settlement was folded; true
// when it did.
func (m *MessageStatus) settle(s MessageState, r pb.DropReason, t int64) bool {
	if m.State.Settled() && m.SettledMs <= t {
		return false
	}
	m.State, m.Reason, m.SettledMs, m.AckCode = s, r, t, 0
	if s != StateDropped {
		m.Reason = 0
	}
	return true
}

// DropReasonName names a drop reason as the APIs spell it ("pending_limit",
// "topic_replaced", ...; the number for one this build does not know).
func DropReasonName(r pb.DropReason) string {
	name := r.String()
	if s, ok := strings.CutPrefix(name, "DROP_REASON_"); ok {
		return strings.ToLower(s)
	}
	return name
}

// UrgencyName names an urgency as the Urgency header spells it.
func UrgencyName(u pb.Urgency) string {
	name := u.String()
	if s, ok := strings.CutPrefix(name, "URGENCY_"); ok {
		return strings.ReplaceAll(strings.ToLower(s), "_", "-")
	}
	return name
}
