package schema

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pushlog/pushlog/schema/pb"
)

const partialUAID = "0123456789abcdef0123456789abcdef"

// acceptedSeeds are encoded events DecodeAccepted should read, or leave
// to the full decode, and whether it reads them.
func acceptedSeeds(t testing.TB) map[string]struct {
	value []byte
	fast  bool
} {
	ch := "01234567-89ab-cdef-0123-456789abcdef"
	full := &pb.Event{Id: []byte("0123456789abcdef"), Uaid: partialUAID, TimeMs: 17, Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{
		ChannelId: ch, Payload: []byte("payload"), Encoding: "aesgcm", Encryption: "salt=x", CryptoKey: "dh=y", TtlS: 60, Topic: "news",
		Urgency: pb.Urgency_URGENCY_HIGH, VapidSub: "mailto:a@example.com", VapidKeyHash: []byte("hash"), KeyBound: true, ReceiptSub: []byte("r"),
	}}}
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	accepted := func(ma *pb.MessageAccepted) []byte {
		return enc(&pb.Event{Uaid: partialUAID, Body: &pb.Event_MessageAccepted{MessageAccepted: ma}})
	}
	fb := enc(full)
	body := enc(full.GetMessageAccepted())
	twice := protowire.AppendTag(bytes.Clone(fb), fieldEventAccepted, protowire.BytesType)
	twice = protowire.AppendBytes(twice, enc(&pb.MessageAccepted{TtlS: 5}))
	lastWins := protowire.AppendTag(nil, fieldEventAccepted, protowire.BytesType)
	lastWins = protowire.AppendBytes(lastWins, append(bytes.Clone(body), enc(&pb.MessageAccepted{Topic: "later", TtlS: 9})...))
	lastWins = protowire.AppendTag(lastWins, FieldEventUAID, protowire.BytesType)
	lastWins = protowire.AppendString(lastWins, partialUAID)
	wrongType := protowire.AppendTag(bytes.Clone(fb), FieldEventTimeMs, protowire.BytesType)
	wrongType = protowire.AppendBytes(wrongType, []byte("x"))
	unknown := protowire.AppendTag(bytes.Clone(fb), 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 5)
	badUTF8 := protowire.AppendTag(bytes.Clone(fb), FieldEventUAID, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff})
	badUnkept := accepted(&pb.MessageAccepted{ChannelId: ch, Encryption: "x"})
	badUnkept[bytes.LastIndexByte(badUnkept, 'x')] = 0xff
	badUAID := enc(&pb.Event{Uaid: "not-a-uaid", Body: full.Body})
	dashed := enc(&pb.Event{Uaid: "01234567-89AB-cdef-0123-456789abcdef", Body: full.Body})
	return map[string]struct {
		value []byte
		fast  bool
	}{
		"full":                         {fb, true},
		"minimal":                      {accepted(&pb.MessageAccepted{}), true},
		"last wins":                    {lastWins, true},
		"unknown field":                {unknown, true},
		"negative ttl":                 {accepted(&pb.MessageAccepted{TtlS: -5, Urgency: -1}), true},
		"dashed upper-case uaid":       {dashed, true},
		"deleted":                      {enc(&pb.Event{Uaid: partialUAID, Body: &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: &pb.MessageRef{Offset: 3}}}}), false},
		"delivered":                    {enc(&pb.Event{Uaid: partialUAID, Body: &pb.Event_Delivered{Delivered: &pb.Delivered{Node: "n"}}}), false},
		"no body":                      {enc(&pb.Event{Uaid: partialUAID}), false},
		"body twice":                   {twice, false},
		"event twice":                  {append(bytes.Clone(fb), accepted(&pb.MessageAccepted{ChannelId: ch, TtlS: 5})...), false},
		"wrong wire type":              {wrongType, false},
		"invalid utf8":                 {badUTF8, false},
		"invalid utf8 in unkept field": {badUnkept, false},
		"bad uaid":                     {badUAID, false},
		"truncated":                    {fb[:len(fb)-3], false},
		"truncated by one":             {fb[:len(fb)-1], false},
		"empty":                        {[]byte{}, false},
		"tombstone":                    {nil, false},
		"garbage":                      {[]byte{0xff, 0xff, 0x01}, false},
		"field number zero":            {append([]byte{0x00, 0x01}, fb...), false},
	}
}

// checkAccepted fails when DecodeAccepted claims to have read rec but
// Decode disagrees on whether it is a MessageAccepted or on any field.
func checkAccepted(t *testing.T, rec *kgo.Record) bool {
	t.Helper()
	a, ok := DecodeAccepted(rec)
	if !ok {
		return false
	}
	ev, err := Decode(rec)
	if err != nil {
		t.Fatalf("fast path read %x, Decode refused it: %v", rec.Value, err)
	}
	want, ok := AcceptedOf(ev)
	if !ok {
		t.Fatalf("fast path read %x, Decode found body %T", rec.Value, ev.GetBody())
	}
	if !a.Equal(want) {
		t.Fatalf("fast path read %x as %+v, Decode as %+v", rec.Value, a, want)
	}
	return true
}

func TestDecodeAccepted(t *testing.T) {
	for name, s := range acceptedSeeds(t) {
		t.Run(name, func(t *testing.T) {
			if got := checkAccepted(t, &kgo.Record{Value: s.value}); got != s.fast {
				t.Fatalf("fast path %v, want %v", got, s.fast)
			}
		})
	}
	a, _ := DecodeAccepted(&kgo.Record{Value: acceptedSeeds(t)["last wins"].value})
	if string(a.Topic) != "later" || a.TTLS != 9 || string(a.ChannelID) == "" {
		t.Fatalf("last occurrence did not win: %+v", a)
	}
	// A record of a newer encoding version is left to Decode, which skips it.
	newer := &kgo.Record{Value: acceptedSeeds(t)["full"].value, Headers: []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte("99")}}}
	if checkAccepted(t, newer) {
		t.Fatal("fast path read a newer encoding version")
	}
	current := &kgo.Record{Value: newer.Value, Headers: []kgo.RecordHeader{{Key: HeaderType, Value: []byte("message_accepted")}, {Key: HeaderVersion, Value: []byte(EncodingVersion)}}}
	if !checkAccepted(t, current) {
		t.Fatal("fast path refused the current encoding version")
	}
}

// FuzzDecodeAccepted: whatever the fast path reads, Decode reads the same
// (record values are outside input: a bug, a foreign writer). It is the
// differential test of the owner's fold and the analytics projector's
// fast paths, which both read MessageAccepted records with DecodeAccepted.
func FuzzDecodeAccepted(f *testing.F) {
	for _, s := range acceptedSeeds(f) {
		f.Add(s.value, false)
	}
	f.Fuzz(func(t *testing.T, value []byte, newer bool) {
		rec := &kgo.Record{Value: value}
		if newer {
			rec.Headers = []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte("2")}}
		}
		checkAccepted(t, rec)
	})
}

// TestFieldReader: the reader's refusals, one per rule.
func TestFieldReader(t *testing.T) {
	varint := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 300)
	str := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "héllo")
	badStr := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{0xc3})
	fixed := protowire.AppendFixed32(protowire.AppendTag(nil, 3, protowire.Fixed32Type), 7)
	tooBig := protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber+1, protowire.VarintType), 1)
	read := func(b []byte) (uint64, string, bool) {
		var v uint64
		var s []byte
		f := NewFieldReader(b)
		for f.Next() {
			switch f.Num() {
			case 1:
				v = f.Varint()
			case 2:
				s = f.Text()
			default:
				f.Skip()
			}
		}
		return v, string(s), f.Done()
	}
	tests := []struct {
		name string
		b    []byte
		v    uint64
		s    string
		ok   bool
	}{
		{"empty", nil, 0, "", true},
		{"fields", bytes.Join([][]byte{varint, str, fixed}, nil), 300, "héllo", true},
		{"skipped fixed32", fixed, 0, "", true},
		{"varint read as bytes", protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1), 0, "", false},
		{"bytes read as varint", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "x"), 0, "", false},
		{"invalid UTF-8", badStr, 0, "", false},
		{"field number too large", tooBig, 0, "", false},
		{"truncated varint", varint[:len(varint)-1], 0, "", false},
		{"truncated string", str[:len(str)-1], 0, "", false},
		{"truncated skip", fixed[:len(fixed)-1], 0, "", false},
		{"end group without start", protowire.AppendTag(nil, 4, protowire.EndGroupType), 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, s, ok := read(tt.b)
			if ok != tt.ok || (ok && (v != tt.v || s != tt.s)) {
				t.Fatalf("read %d %q %v, want %d %q %v", v, s, ok, tt.v, tt.s, tt.ok)
			}
		})
	}
}

// BenchmarkDecodeAccepted measures the partial decode of one
// MessageAccepted record (a 4 KB payload, every field set):
//
//	go test ./schema -run '^$' -bench DecodeAccepted -benchmem
func BenchmarkDecodeAccepted(b *testing.B) {
	v, err := proto.Marshal(&pb.Event{Id: []byte("0123456789abcdef"), Uaid: partialUAID, TimeMs: 17, Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{
		ChannelId: "01234567-89ab-cdef-0123-456789abcdef", Payload: make([]byte, 4096), Encoding: "aes128gcm", TtlS: 60, Topic: "t1",
		Urgency: pb.Urgency_URGENCY_HIGH, VapidSub: "mailto:s@example.com", VapidKeyHash: make([]byte, 32), KeyBound: true,
	}}})
	if err != nil {
		b.Fatal(err)
	}
	rec := &kgo.Record{Value: v, Headers: []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte(EncodingVersion)}}}
	for b.Loop() {
		if _, ok := DecodeAccepted(rec); !ok {
			b.Fatal("fast path refused the record")
		}
	}
}

// TestFieldNumbers: the partial decoders' field numbers are those of
// events.proto.
func TestFieldNumbers(t *testing.T) {
	ev := (&pb.Event{}).ProtoReflect().Descriptor()
	ma := (&pb.MessageAccepted{}).ProtoReflect().Descriptor()
	dv := (&pb.Delivered{}).ProtoReflect().Descriptor()
	ref := (&pb.MessageRef{}).ProtoReflect().Descriptor()
	body := ev.Oneofs().ByName("body").Fields()
	first, last := body.Get(0).Number(), body.Get(body.Len()-1).Number()
	for i := range body.Len() {
		first, last = min(first, body.Get(i).Number()), max(last, body.Get(i).Number())
	}
	for _, c := range []struct {
		fields interface {
			ByName(protoreflect.Name) protoreflect.FieldDescriptor
		}
		name string
		num  protowire.Number
	}{
		{ev.Fields(), "id", FieldEventID},
		{ev.Fields(), "time_ms", FieldEventTimeMs},
		{ev.Fields(), "uaid", FieldEventUAID},
		{ev.Fields(), "message_accepted", fieldEventAccepted},
		{ma.Fields(), "channel_id", fieldAcceptedChannelID},
		{ma.Fields(), "payload", fieldAcceptedPayload},
		{ma.Fields(), "encoding", fieldAcceptedEncoding},
		{ma.Fields(), "encryption", fieldAcceptedEncrypt},
		{ma.Fields(), "crypto_key", fieldAcceptedCryptoKey},
		{ma.Fields(), "ttl_s", fieldAcceptedTTL},
		{ma.Fields(), "topic", fieldAcceptedTopic},
		{ma.Fields(), "urgency", fieldAcceptedUrgency},
		{ma.Fields(), "vapid_sub", fieldAcceptedVapidSub},
		{ma.Fields(), "vapid_key_hash", fieldAcceptedKeyHash},
		{ma.Fields(), "key_bound", fieldAcceptedKeyBound},
		{ma.Fields(), "receipt_sub", fieldAcceptedReceipt},
		{ev.Fields(), "delivered", FieldEventDelivered},
		{ev.Fields(), "acked", FieldEventAcked},
		{ev.Fields(), "nacked", FieldEventNacked},
		{ev.Fields(), "expired", FieldEventExpired},
		{ev.Fields(), "dropped", FieldEventDropped},
		{dv.Fields(), "msg", fieldBodyMsg},
		{dv.Fields(), "node", fieldDeliveredNode},
		{dv.Fields(), "conn_id", fieldDeliveredConn},
		{dv.Fields(), "attempt", fieldDeliveredTry},
		{(&pb.Acked{}).ProtoReflect().Descriptor().Fields(), "code", fieldBodyCode},
		{(&pb.Nacked{}).ProtoReflect().Descriptor().Fields(), "code", fieldBodyCode},
		{(&pb.Dropped{}).ProtoReflect().Descriptor().Fields(), "reason", fieldBodyCode},
		{(&pb.Expired{}).ProtoReflect().Descriptor().Fields(), "msg", fieldBodyMsg},
		{ref.Fields(), "partition", fieldRefPartition},
		{ref.Fields(), "offset", fieldRefOffset},
		{ref.Fields(), "channel_id", fieldRefChannelID},
		{ref.Fields(), "accepted_ms", fieldRefAcceptedMs},
		{ref.Fields(), "vapid_sub", fieldRefVapidSub},
	} {
		if f := c.fields.ByName(protoreflect.Name(c.name)); f == nil || f.Number() != c.num {
			t.Errorf("%s: field number %d, events.proto says %v", c.name, c.num, f)
		}
	}
	if first != FieldEventBodyFirst || last != FieldEventBodyLast {
		t.Errorf("body oneof %d..%d, events.proto says %d..%d", FieldEventBodyFirst, FieldEventBodyLast, first, last)
	}
}
