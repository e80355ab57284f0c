package schema

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pushlog/pushlog/schema/pb"
)

// Field numbers of the settlement bodies of the acks topic in pb.Event
// (Settlement.Kind), and of what DecodeSettlement reads in them.
const (
	FieldEventDelivered = 12
	FieldEventAcked     = 13
	FieldEventNacked    = 14
	FieldEventExpired   = 15
	FieldEventDropped   = 16

	fieldBodyMsg       = 1 // MessageRef msg = 1 in each of them
	fieldBodyCode      = 2 // Acked, Nacked: code; Dropped: reason
	fieldDeliveredNode = 2
	fieldDeliveredConn = 3
	fieldDeliveredTry  = 4
	fieldRefPartition  = 1
	fieldRefOffset     = 2
	fieldRefChannelID  = 3
	fieldRefAcceptedMs = 4
	fieldRefVapidSub   = 5
)

// Settlement is a Delivered, Acked, Nacked, Expired or Dropped event as
// its hot consumers (the owner's fold, the status fold) read it.
type Settlement struct {
	Kind      protowire.Number // the body's field number in pb.Event (FieldEventDelivered ...)
	HasRef    bool             // the body names a message
	Partition int32            // the message's partition and offset
	Offset    int64
	TimeMs    int64
	Attempt   int32         // Delivered only
	Code      int32         // Acked and Nacked only
	Reason    pb.DropReason // Dropped only
}

// Key is the message the settlement is about (as MessageKeyOf); false
// without a valid ref.
func (s Settlement) Key() (MessageKey, bool) {
	if !s.HasRef || s.Partition < 0 || s.Offset < 0 {
		return MessageKey{}, false
	}
	return MessageKey{Partition: s.Partition, Offset: s.Offset}, true
}

// DecodeSettlement reads an encoded pb.Event holding a Delivered, Acked,
// Nacked, Expired or Dropped body without building it (a takeover replays
// two or three of them per message, the status fold one or two per push).
// Like DecodeAccepted it is a fast path only: ok is false for anything it
// does not read exactly as proto.Unmarshal would, and the caller then
// decodes the record in full. It does not check the UAID (uaid is as
// written) nor the record's version header (DecodeSettlementRecord does).
func DecodeSettlement(b []byte) (uaid []byte, s Settlement, ok bool) {
	var body []byte
	f := NewFieldReader(b)
	for f.Next() {
		switch num := f.Num(); {
		case num == FieldEventUAID:
			uaid = f.Text()
		case num == FieldEventTimeMs:
			s.TimeMs = int64(f.Varint())
		case num >= FieldEventDelivered && num <= FieldEventDropped && s.Kind == 0:
			s.Kind, body = num, f.Bytes()
		case num >= FieldEventBodyFirst && num <= FieldEventBodyLast:
			return nil, s, false // another body, or a second one
		default:
			f.Skip()
		}
	}
	if !f.Done() || s.Kind == 0 || !decodeSettlementBody(body, &s) {
		return nil, s, false
	}
	return uaid, s, true
}

// DecodeSettlementRecord is DecodeSettlement of a record, with the checks
// Decode makes of it: no tombstone, the current encoding version, a UAID
// that parses.
func DecodeSettlementRecord(r *kgo.Record) (Settlement, bool) {
	if r.Value == nil || !currentVersion(r) {
		return Settlement{}, false
	}
	uaid, s, ok := DecodeSettlement(r.Value)
	if !ok {
		return Settlement{}, false
	}
	if _, err := ParseUAID(string(uaid)); err != nil {
		return Settlement{}, false
	}
	return s, true
}

// decodeSettlementBody reads the body's message ref and its attempt,
// code or reason; strings it skips are still checked for
// UTF-8, as proto.Unmarshal does.
func decodeSettlementBody(b []byte, s *Settlement) bool {
	delivered := s.Kind == FieldEventDelivered
	f := NewFieldReader(b)
	for f.Next() {
		switch num := f.Num(); {
		case num == fieldBodyMsg:
			if s.HasRef || !decodeRef(f.Bytes(), s) {
				return false // a second ref would be merged: the full decode does that
			}
			s.HasRef = true
		case delivered && (num == fieldDeliveredNode || num == fieldDeliveredConn):
			f.Text()
		case delivered && num == fieldDeliveredTry:
			s.Attempt = int32(f.Varint())
		case s.Kind == FieldEventAcked && num == fieldBodyCode, s.Kind == FieldEventNacked && num == fieldBodyCode:
			s.Code = int32(f.Varint())
		case s.Kind == FieldEventDropped && num == fieldBodyCode:
			s.Reason = pb.DropReason(int32(f.Varint()))
		default:
			f.Skip()
		}
	}
	return f.Done()
}

// decodeRef reads a MessageRef's partition and offset.
func decodeRef(b []byte, s *Settlement) bool {
	f := NewFieldReader(b)
	for f.Next() {
		switch f.Num() {
		case fieldRefPartition:
			s.Partition = int32(f.Varint())
		case fieldRefOffset:
			s.Offset = int64(f.Varint())
		case fieldRefAcceptedMs:
			f.Varint()
		case fieldRefChannelID, fieldRefVapidSub:
			f.Text()
		default:
			f.Skip()
		}
	}
	return f.Done()
}

// SettlementOf is the Settlement of a fully decoded event (the slow path);
// false for a body that does not belong on the acks topic.
func SettlementOf(ev *pb.Event) (Settlement, bool) {
	s := Settlement{TimeMs: ev.GetTimeMs()}
	var ref *pb.MessageRef
	switch b := ev.GetBody().(type) {
	case *pb.Event_Delivered:
		s.Kind, ref, s.Attempt = FieldEventDelivered, b.Delivered.GetMsg(), b.Delivered.GetAttempt()
	case *pb.Event_Acked:
		s.Kind, ref, s.Code = FieldEventAcked, b.Acked.GetMsg(), b.Acked.GetCode()
	case *pb.Event_Nacked:
		s.Kind, ref, s.Code = FieldEventNacked, b.Nacked.GetMsg(), b.Nacked.GetCode()
	case *pb.Event_Expired:
		s.Kind, ref = FieldEventExpired, b.Expired.GetMsg()
	case *pb.Event_Dropped:
		s.Kind, ref, s.Reason = FieldEventDropped, b.Dropped.GetMsg(), b.Dropped.GetReason()
	default:
		return s, false
	}
	s.HasRef, s.Partition, s.Offset = ref != nil, ref.GetPartition(), ref.GetOffset()
	return s, true
}
