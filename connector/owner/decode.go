package owner

import (
	"unicode/utf8"
	"unique"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pushlog/pushlog/schema/pb"
)

// Field numbers of pb.Event and pb.MessageAccepted that the fold reads
// (schema/events.proto).
const (
	fieldEventTimeMs       = 2
	fieldEventUAID         = 3
	fieldEventAccepted     = 10
	fieldEventBodyFirst    = 10 // the body oneof's field numbers
	fieldEventBodyLast     = 26
	fieldAcceptedChannelID = 1
	fieldAcceptedPayload   = 2
	fieldAcceptedEncoding  = 3
	fieldAcceptedEncrypt   = 4
	fieldAcceptedCryptoKey = 5
	fieldAcceptedTTL       = 6
	fieldAcceptedTopic     = 7
	fieldAcceptedUrgency   = 8
	fieldAcceptedVapidSub  = 9
)

// accepted is what the fold reads of a MessageAccepted event. Its byte
// slices alias the record value: whatever outlives the fold is copied.
type accepted struct {
	timeMs    int64
	uaid      []byte
	channelID []byte
	payload   []byte
	encoding  []byte
	encrypt   []byte
	cryptoKey []byte
	topic     []byte
	vapidSub  []byte
	ttlS      int64
	urgency   pb.Urgency
}

// decodeAccepted reads the fields the fold needs from an encoded
// pb.Event holding a MessageAccepted, without building the message (a
// takeover folds a million of them: proto.Unmarshal's allocations and
// copies of fields the fold never reads were most of its decoding cost).
// It is a fast path only: ok is false for anything it does not read
// exactly as proto.Unmarshal would (another body, a repeated body, a
// known field with another wire type, invalid UTF-8, a malformed value),
// and the caller then decodes the record in full.
func decodeAccepted(b []byte) (a accepted, ok bool) {
	bodies := 0
	var body []byte
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return a, false
		}
		b = b[n:]
		switch {
		case num == fieldEventTimeMs:
			v, n := consumeVarint(b, typ)
			if n < 0 {
				return a, false
			}
			a.timeMs, b = int64(v), b[n:]
		case num == fieldEventUAID:
			v, n := consumeString(b, typ)
			if n < 0 {
				return a, false
			}
			a.uaid, b = v, b[n:]
		case num == fieldEventAccepted:
			v, n := consumeBytes(b, typ)
			if n < 0 {
				return a, false
			}
			bodies++
			body, b = v, b[n:]
		case num >= fieldEventBodyFirst && num <= fieldEventBodyLast:
			return a, false // another body: the full decode decides
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return a, false
			}
			b = b[n:]
		}
	}
	// Two occurrences of the body would be merged by proto.Unmarshal.
	if bodies != 1 {
		return a, false
	}
	return a, decodeAcceptedBody(body, &a)
}

// decodeAcceptedBody reads the MessageAccepted fields of b into a; the
// last occurrence of a field wins, as in proto.Unmarshal.
func decodeAcceptedBody(b []byte, a *accepted) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		var str *[]byte
		switch num {
		case fieldAcceptedChannelID:
			str = &a.channelID
		case fieldAcceptedEncoding:
			str = &a.encoding
		case fieldAcceptedEncrypt:
			str = &a.encrypt
		case fieldAcceptedCryptoKey:
			str = &a.cryptoKey
		case fieldAcceptedTopic:
			str = &a.topic
		case fieldAcceptedVapidSub:
			str = &a.vapidSub
		case fieldAcceptedPayload:
			v, n := consumeBytes(b, typ)
			if n < 0 {
				return false
			}
			a.payload, b = v, b[n:]
			continue
		case fieldAcceptedTTL, fieldAcceptedUrgency:
			v, n := consumeVarint(b, typ)
			if n < 0 {
				return false
			}
			if num == fieldAcceptedTTL {
				a.ttlS = int64(v)
			} else {
				a.urgency = pb.Urgency(int32(v))
			}
			b = b[n:]
			continue
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := consumeString(b, typ)
		if n < 0 {
			return false
		}
		*str, b = v, b[n:]
	}
	return true
}

// consumeTag is protowire.ConsumeTag refusing field numbers above the
// largest valid one, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

func consumeVarint(b []byte, typ protowire.Type) (uint64, int) {
	if typ != protowire.VarintType {
		return 0, -1
	}
	return protowire.ConsumeVarint(b)
}

func consumeBytes(b []byte, typ protowire.Type) ([]byte, int) {
	if typ != protowire.BytesType {
		return nil, -1
	}
	return protowire.ConsumeBytes(b)
}

// consumeString is a proto3 string: valid UTF-8 or an error.
func consumeString(b []byte, typ protowire.Type) ([]byte, int) {
	v, n := consumeBytes(b, typ)
	if n < 0 || !utf8.Valid(v) {
		return nil, -1
	}
	return v, n
}

// acceptedOf converts a fully decoded event (the slow path) into the
// fold's view of it.
func acceptedOf(ev *pb.Event, ma *pb.MessageAccepted) accepted {
	return accepted{
		timeMs:    ev.GetTimeMs(),
		uaid:      []byte(ev.GetUaid()),
		channelID: []byte(ma.GetChannelId()),
		payload:   ma.GetPayload(),
		encoding:  []byte(ma.GetEncoding()),
		encrypt:   []byte(ma.GetEncryption()),
		cryptoKey: []byte(ma.GetCryptoKey()),
		topic:     []byte(ma.GetTopic()),
		vapidSub:  []byte(ma.GetVapidSub()),
		ttlS:      ma.GetTtlS(),
		urgency:   ma.GetUrgency(),
	}
}

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
// two or three of them per message). Like decodeAccepted it is a fast path
// only: ok is false for anything it does not read exactly as
// proto.Unmarshal would, and the caller then decodes the record in full.
func decodeSettlement(b []byte) (uaid []byte, s settlement, ok bool) {
	var body []byte
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, s, false
		}
		b = b[n:]
		switch {
		case num == fieldEventUAID:
			v, n := consumeString(b, typ)
			if n < 0 {
				return nil, s, false
			}
			uaid, b = v, b[n:]
		case num >= fieldEventDelivered && num <= fieldEventDropped && s.kind == 0:
			v, n := consumeBytes(b, typ)
			if n < 0 {
				return nil, s, false
			}
			s.kind, body, b = num, v, b[n:]
		case num >= fieldEventBodyFirst && num <= fieldEventBodyLast:
			return nil, s, false // another body, or a second one
		default:
			if num == fieldEventTimeMs && typ != protowire.VarintType {
				return nil, s, false
			}
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, s, false
			}
			b = b[n:]
		}
	}
	if s.kind == 0 || !decodeSettlementBody(body, &s) {
		return nil, s, false
	}
	return uaid, s, true
}

// decodeSettlementBody reads the body's message ref and, of a Delivered,
// its attempt; strings it skips are still checked for UTF-8, as
// proto.Unmarshal does.
func decodeSettlementBody(b []byte, s *settlement) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == fieldBodyMsg:
			v, n := consumeBytes(b, typ)
			if n < 0 || s.hasRef || !decodeRef(v, s) {
				return false // a second ref would be merged: the full decode does that
			}
			s.hasRef, b = true, b[n:]
		case s.kind == fieldEventDelivered && (num == fieldDeliveredNode || num == fieldDeliveredConn):
			_, n := consumeString(b, typ)
			if n < 0 {
				return false
			}
			b = b[n:]
		case s.kind == fieldEventDelivered && num == fieldDeliveredTry,
			s.kind != fieldEventDelivered && s.kind != fieldEventExpired && num == 2: // code, reason
			v, n := consumeVarint(b, typ)
			if n < 0 {
				return false
			}
			if s.kind == fieldEventDelivered {
				s.attempt = int32(v)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	return true
}

// decodeRef reads a MessageRef's partition and offset.
func decodeRef(b []byte, s *settlement) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case fieldRefPartition, fieldRefOffset, fieldRefAcceptedMs:
			v, n := consumeVarint(b, typ)
			if n < 0 {
				return false
			}
			switch num {
			case fieldRefPartition:
				s.part = int32(v)
			case fieldRefOffset:
				s.offset = int64(v)
			}
			b = b[n:]
		case fieldRefChannelID, fieldRefVapidSub:
			_, n := consumeString(b, typ)
			if n < 0 {
				return false
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	return true
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
