package owner

import (
	"unique"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// handleCache interns the short strings of folded messages (topics, VAPID
// subjects, encodings) without converting each record's bytes to a string
// first: a lookup by string(b) does not allocate.
type handleCache map[string]unique.Handle[string]

// maxHandleCache bounds a partition's cache; past it values are interned
// without it (a sender choosing a new topic per push cannot grow it).
const maxHandleCache = 4096

func (c *handleCache) of(b []byte) unique.Handle[string] {
	if h, ok := (*c)[string(b)]; ok {
		return h
	}
	h := unique.Make(string(b))
	if len(*c) < maxHandleCache {
		if *c == nil {
			*c = make(handleCache)
		}
		(*c)[h.Value()] = h
	}
	return h
}

// Field numbers of the settlement bodies of pushlog.acks and of what the
// fold reads in them (schema/events.proto).
const (
	fieldEventDelivered = 12
	fieldEventAcked     = 13
	fieldEventNacked    = 14
	fieldEventExpired   = 15
	fieldEventDropped   = 16
	fieldBodyMsg        = 1 // MessageRef msg = 1 in each of them
	fieldDeliveredNode  = 2
	fieldDeliveredConn  = 3
	fieldDeliveredTry   = 4
	fieldRefPartition   = 1
	fieldRefOffset      = 2
	fieldRefChannelID   = 3
	fieldRefAcceptedMs  = 4
	fieldRefVapidSub    = 5
)

// settlement is what the fold reads of an event of pushlog.acks.
type settlement struct {
	kind    protowire.Number // the body's field number in pb.Event
	hasRef  bool             // the body names a message
	part    int32            // the message's partition and offset
	offset  int64
	attempt int32 // Delivered only
}

// decodeSettlement reads an encoded pb.Event holding a Delivered, Acked,
// Nacked, Expired or Dropped body without building it (a takeover replays
// two or three of them per message). Like schema.DecodeAccepted it is a
// fast path only: ok is false for anything it does not read exactly as
// proto.Unmarshal would, and the caller then decodes the record in full.
func decodeSettlement(b []byte) (uaid []byte, s settlement, ok bool) {
	var body []byte
	f := schema.NewFieldReader(b)
	for f.Next() {
		switch num := f.Num(); {
		case num == schema.FieldEventUAID:
			uaid = f.Text()
		case num == schema.FieldEventTimeMs:
			f.Varint()
		case num >= fieldEventDelivered && num <= fieldEventDropped && s.kind == 0:
			s.kind, body = num, f.Bytes()
		case num >= schema.FieldEventBodyFirst && num <= schema.FieldEventBodyLast:
			return nil, s, false // another body, or a second one
		default:
			f.Skip()
		}
	}
	if !f.Done() || s.kind == 0 || !decodeSettlementBody(body, &s) {
		return nil, s, false
	}
	return uaid, s, true
}

// decodeSettlementBody reads the body's message ref and, of a Delivered,
// its attempt; strings it skips are still checked for UTF-8, as
// proto.Unmarshal does.
func decodeSettlementBody(b []byte, s *settlement) bool {
	delivered := s.kind == fieldEventDelivered
	f := schema.NewFieldReader(b)
	for f.Next() {
		switch num := f.Num(); {
		case num == fieldBodyMsg:
			if s.hasRef || !decodeRef(f.Bytes(), s) {
				return false // a second ref would be merged: the full decode does that
			}
			s.hasRef = true
		case delivered && (num == fieldDeliveredNode || num == fieldDeliveredConn):
			f.Text()
		case delivered && num == fieldDeliveredTry:
			s.attempt = int32(f.Varint())
		case s.kind != fieldEventExpired && num == 2: // Acked, Nacked: code; Dropped: reason
			f.Varint()
		default:
			f.Skip()
		}
	}
	return f.Done()
}

// decodeRef reads a MessageRef's partition and offset.
func decodeRef(b []byte, s *settlement) bool {
	f := schema.NewFieldReader(b)
	for f.Next() {
		switch f.Num() {
		case fieldRefPartition:
			s.part = int32(f.Varint())
		case fieldRefOffset:
			s.offset = int64(f.Varint())
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

// settlementOf converts a fully decoded event (the slow path) into the
// fold's view of it; false for a body that does not belong on pushlog.acks.
func settlementOf(ev *pb.Event) (settlement, bool) {
	var s settlement
	var ref *pb.MessageRef
	switch b := ev.GetBody().(type) {
	case *pb.Event_Delivered:
		s.kind, ref, s.attempt = fieldEventDelivered, b.Delivered.GetMsg(), b.Delivered.GetAttempt()
	case *pb.Event_Acked:
		s.kind, ref = fieldEventAcked, b.Acked.GetMsg()
	case *pb.Event_Nacked:
		s.kind, ref = fieldEventNacked, b.Nacked.GetMsg()
	case *pb.Event_Expired:
		s.kind, ref = fieldEventExpired, b.Expired.GetMsg()
	case *pb.Event_Dropped:
		s.kind, ref = fieldEventDropped, b.Dropped.GetMsg()
	default:
		return s, false
	}
	s.hasRef, s.part, s.offset = ref != nil, ref.GetPartition(), ref.GetOffset()
	return s, true
}
