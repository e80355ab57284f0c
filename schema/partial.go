package schema

import (
	"bytes"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pushlog/pushlog/schema/pb"
)

// Partial decoding: the hot consumers of the log (the owner's fold, the
// analytics projector) read the few fields they need straight from the
// encoded value instead of building the message: proto.Unmarshal allocates
// the message and copies every field (a payload of up to 4 KB), and
// accepted events are the bulk of the log. A partial decoder is a fast
// path only: it refuses whatever it does not read exactly as Decode would,
// and the caller then decodes the record in full.

// Field numbers of pb.Event (events.proto), for the partial decoders
// here and elsewhere (TestFieldNumbers holds them to the descriptor).
const (
	FieldEventID        = 1
	FieldEventTimeMs    = 2
	FieldEventUAID      = 3
	FieldEventBodyFirst = 10 // the body oneof's field numbers
	FieldEventBodyLast  = 26
)

// Field numbers of pb.MessageAccepted and its place in pb.Event.
const (
	fieldEventAccepted     = 10
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
	fieldAcceptedReceipt   = 12
)

// Accepted is a MessageAccepted event as its hot consumers read it. Its
// byte slices alias the record value: whatever outlives the record is
// copied.
type Accepted struct {
	EventID  []byte
	TimeMs   int64
	UAIDText []byte // the uaid as written
	UAID     UAID   // UAIDText parsed
	// The MessageAccepted fields.
	ChannelID, Payload, Encoding, Encryption, CryptoKey []byte
	TTLS                                                int64
	Topic                                               []byte
	Urgency                                             pb.Urgency
	VapidSub, VapidKeyHash                              []byte
	KeyBound                                            bool
	ReceiptSub                                          []byte
}

// DecodeAccepted reads a record holding a MessageAccepted; ok is false
// for anything it does not read exactly as Decode would: a tombstone, a
// newer encoding version, another body or a repeated one (proto.Unmarshal
// would merge them), a known field with another wire type, invalid UTF-8,
// a malformed value, a bad UAID. Of a field given twice the last one
// wins, as in proto.Unmarshal.
//
// Both messages are read in this one function into a local: stores of
// slices into memory behind a pointer take a GC write barrier each, and
// the projector and the fold allocate enough for the GC to be running
// much of the time.
func DecodeAccepted(r *kgo.Record) (Accepted, bool) {
	var a Accepted
	if r.Value == nil || !currentVersion(r) {
		return a, false
	}
	bodies := 0
	var body []byte
	f := NewFieldReader(r.Value)
	for f.Next() {
		switch num := f.Num(); {
		case num == FieldEventID:
			a.EventID = f.Bytes()
		case num == FieldEventTimeMs:
			a.TimeMs = int64(f.Varint())
		case num == FieldEventUAID:
			a.UAIDText = f.Text()
		case num == fieldEventAccepted:
			body = f.Bytes()
			bodies++
		case num >= FieldEventBodyFirst && num <= FieldEventBodyLast:
			return a, false // another body: the full decode decides
		default:
			f.Skip()
		}
	}
	if !f.Done() || bodies != 1 {
		return a, false
	}
	f = NewFieldReader(body)
	for f.Next() {
		switch f.Num() {
		case fieldAcceptedChannelID:
			a.ChannelID = f.Text()
		case fieldAcceptedPayload:
			a.Payload = f.Bytes()
		case fieldAcceptedEncoding:
			a.Encoding = f.Text()
		case fieldAcceptedEncrypt:
			a.Encryption = f.Text()
		case fieldAcceptedCryptoKey:
			a.CryptoKey = f.Text()
		case fieldAcceptedTTL:
			a.TTLS = int64(f.Varint())
		case fieldAcceptedTopic:
			a.Topic = f.Text()
		case fieldAcceptedUrgency:
			a.Urgency = pb.Urgency(int32(f.Varint()))
		case fieldAcceptedVapidSub:
			a.VapidSub = f.Text()
		case fieldAcceptedKeyHash:
			a.VapidKeyHash = f.Bytes()
		case fieldAcceptedKeyBound:
			a.KeyBound = f.Varint() != 0
		case fieldAcceptedReceipt:
			a.ReceiptSub = f.Bytes()
		default:
			f.Skip()
		}
	}
	if !f.Done() {
		return a, false
	}
	id, err := ParseUAID(string(a.UAIDText))
	a.UAID = id
	return a, err == nil
}

// Equal reports whether a and b carry the same fields as their readers
// see them (a nil and an empty value are both "nothing"); the
// differential tests of the partial decoders compare with it.
func (a Accepted) Equal(b Accepted) bool {
	for _, p := range [][2][]byte{{a.EventID, b.EventID}, {a.UAIDText, b.UAIDText}, {a.ChannelID, b.ChannelID}, {a.Payload, b.Payload},
		{a.Encoding, b.Encoding}, {a.Encryption, b.Encryption}, {a.CryptoKey, b.CryptoKey}, {a.Topic, b.Topic},
		{a.VapidSub, b.VapidSub}, {a.VapidKeyHash, b.VapidKeyHash}, {a.ReceiptSub, b.ReceiptSub}} {
		if !bytes.Equal(p[0], p[1]) {
			return false
		}
	}
	return a.TimeMs == b.TimeMs && a.UAID == b.UAID && a.TTLS == b.TTLS && a.Urgency == b.Urgency && a.KeyBound == b.KeyBound
}

// AcceptedOf is the Accepted of a fully decoded event (the slow path);
// false when it is not a MessageAccepted or its UAID does not parse.
func AcceptedOf(ev *pb.Event) (Accepted, bool) {
	ma := ev.GetMessageAccepted()
	id, err := ParseUAID(ev.GetUaid())
	if ma == nil || err != nil {
		return Accepted{}, false
	}
	return Accepted{
		EventID:      ev.GetId(),
		TimeMs:       ev.GetTimeMs(),
		UAIDText:     []byte(ev.GetUaid()),
		UAID:         id,
		ChannelID:    []byte(ma.GetChannelId()),
		Payload:      ma.GetPayload(),
		Encoding:     []byte(ma.GetEncoding()),
		Encryption:   []byte(ma.GetEncryption()),
		CryptoKey:    []byte(ma.GetCryptoKey()),
		TTLS:         ma.GetTtlS(),
		Topic:        []byte(ma.GetTopic()),
		Urgency:      ma.GetUrgency(),
		VapidSub:     []byte(ma.GetVapidSub()),
		VapidKeyHash: ma.GetVapidKeyHash(),
		KeyBound:     ma.GetKeyBound(),
		ReceiptSub:   ma.GetReceiptSub(),
	}, true
}

// currentVersion reports whether r has no encoding version header other
// than the current one (Decode refuses those).
func currentVersion(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == HeaderVersion && string(h.Value) != EncodingVersion {
			return false
		}
	}
	return true
}

// FieldReader reads an encoded protobuf message field by field for the
// partial decoders. It refuses what they must leave to proto.Unmarshal: a
// field number past the largest valid one, a known field read with
// another wire type, a malformed value, a string that is not UTF-8. A
// refusal ends the fields (Next is false) and Done then reports it, so a
// decoder's cases need no error checks of their own:
//
//	f := NewFieldReader(b)
//	for f.Next() {
//		switch f.Num() {
//		case 1:
//			x = f.Varint()
//		default:
//			f.Skip()
//		}
//	}
//	ok := f.Done()
type FieldReader struct {
	b      []byte
	pos    int // b[pos:] is unread: an index, so reading stores no pointer (no GC write barrier)
	num    protowire.Number
	typ    protowire.Type
	failed bool
}

// NewFieldReader reads the fields of the encoded message b.
func NewFieldReader(b []byte) FieldReader { return FieldReader{b: b} }

// Next reads the next field's tag; false at the end or after a refusal.
func (f *FieldReader) Next() bool {
	if f.failed || f.pos >= len(f.b) {
		return false
	}
	// A one-byte tag (fields 1 to 15) without a call.
	if c := f.b[f.pos]; c < 0x80 && c >= 1<<3 {
		f.num, f.typ = protowire.Number(c>>3), protowire.Type(c&7)
		f.pos++
		return true
	}
	num, typ, n := protowire.ConsumeTag(f.b[f.pos:])
	if n < 0 || num > protowire.MaxValidNumber {
		f.failed = true
		return false
	}
	f.num, f.typ = num, typ
	f.pos += n
	return true
}

// Num is the current field's number.
func (f *FieldReader) Num() protowire.Number { return f.num }

// Done reports whether every field was read without a refusal.
func (f *FieldReader) Done() bool { return !f.failed && f.pos == len(f.b) }

// Varint reads the current field as a varint (int32, int64, bool, enum).
func (f *FieldReader) Varint() uint64 {
	if f.typ != protowire.VarintType {
		f.failed = true
		return 0
	}
	v, n := protowire.ConsumeVarint(f.b[f.pos:])
	if n < 0 {
		f.failed = true
		return 0
	}
	f.pos += n
	return v
}

// Bytes reads the current field as length-delimited bytes (bytes or an
// embedded message); the result aliases the message.
func (f *FieldReader) Bytes() []byte {
	if f.typ != protowire.BytesType {
		f.failed = true
		return nil
	}
	v, n := protowire.ConsumeBytes(f.b[f.pos:])
	if n < 0 {
		f.failed = true
		return nil
	}
	f.pos += n
	return v
}

// Text reads the current field as a proto3 string: valid UTF-8, or a
// refusal as in proto.Unmarshal. Read a string field the decoder does not
// keep with Text too, not Skip, for that check.
func (f *FieldReader) Text() []byte {
	v := f.Bytes()
	if !utf8.Valid(v) {
		f.failed = true
		return nil
	}
	return v
}

// Skip passes over the current field, whatever its wire type.
func (f *FieldReader) Skip() {
	n := protowire.ConsumeFieldValue(f.num, f.typ, f.b[f.pos:])
	if n < 0 {
		f.failed = true
		return
	}
	f.pos += n
}
