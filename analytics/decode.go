package analytics

import (
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Field numbers of pb.Event and pb.MessageAccepted that the accepted
// row reads (schema/events.proto).
const (
	fieldEventID           = 1
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
	fieldAcceptedKeyHash   = 10
	fieldAcceptedKeyBound  = 11
)

// accepted is what the accepted table keeps of a MessageAccepted event.
// Its byte slices alias the record value.
type accepted struct {
	id, uaid                             []byte
	timeMs                               int64
	channelID, encoding, topic, vapidSub []byte
	keyHash                              []byte
	payloadLen                           int
	ttlS                                 int64
	urgency                              pb.Urgency
	keyBound                             bool
}

// acceptedRow maps a MessageAccepted record to its row without building
// the message: proto.Unmarshal copies the payload (up to 4 KB) only for
// the row to keep its length, and accepted events are the bulk of the
// log. It is a fast path only: ok is false for anything it does not read
// exactly as schema.Decode would (another body, a repeated body, a known
// field with another wire type, invalid UTF-8, a bad UAID, a newer
// encoding version), and the caller then decodes the record in full.
func acceptedRow(rec *kgo.Record) (Row, bool) {
	for _, h := range rec.Headers {
		if h.Key == schema.HeaderVersion && string(h.Value) != schema.EncodingVersion {
			return Row{}, false
		}
	}
	a, ok := decodeAccepted(rec.Value)
	if !ok {
		return Row{}, false
	}
	uaid := string(a.uaid)
	if _, err := schema.ParseUAID(uaid); err != nil {
		return Row{}, false
	}
	return Row{
		Table:     TableAccepted,
		TimeMs:    a.timeMs,
		EventID:   append([]byte(nil), a.id...), // not the whole record value
		UAID:      uaid,
		Partition: rec.Partition,
		Offset:    rec.Offset,
		Values: acceptedValues(string(a.channelID), string(a.vapidSub), a.keyHash, a.keyBound,
			a.payloadLen, string(a.encoding), a.ttlS, a.urgency, len(a.topic) > 0),
	}, true
}

// decodeAccepted reads an encoded pb.Event holding a MessageAccepted.
func decodeAccepted(b []byte) (a accepted, ok bool) {
	if b == nil {
		return a, false
	}
	bodies := 0
	var body []byte
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return a, false
		}
		b = b[n:]
		switch {
		case num == fieldEventID:
			v, n := consumeBytes(b, typ)
			if n < 0 {
				return a, false
			}
			a.id, b = v, b[n:]
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
	var ignored []byte
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
		case fieldAcceptedEncrypt, fieldAcceptedCryptoKey:
			str = &ignored // not kept, but proto.Unmarshal checks its UTF-8
		case fieldAcceptedTopic:
			str = &a.topic
		case fieldAcceptedVapidSub:
			str = &a.vapidSub
		case fieldAcceptedPayload, fieldAcceptedKeyHash:
			v, n := consumeBytes(b, typ)
			if n < 0 {
				return false
			}
			if num == fieldAcceptedPayload {
				a.payloadLen = len(v)
			} else {
				a.keyHash = v
			}
			b = b[n:]
			continue
		case fieldAcceptedTTL, fieldAcceptedUrgency, fieldAcceptedKeyBound:
			v, n := consumeVarint(b, typ)
			if n < 0 {
				return false
			}
			switch num {
			case fieldAcceptedTTL:
				a.ttlS = int64(v)
			case fieldAcceptedUrgency:
				a.urgency = pb.Urgency(int32(v))
			default:
				a.keyBound = v != 0
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
