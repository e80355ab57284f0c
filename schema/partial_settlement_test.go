package schema

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema/pb"
)

// settlementSeeds are encoded events DecodeSettlement should read, or
// leave to the full decode.
func settlementSeeds(t testing.TB) map[string][]byte {
	ref := &pb.MessageRef{Partition: 1, Offset: 42, ChannelId: "01234567-89ab-cdef-0123-456789abcdef", AcceptedMs: 7, VapidSub: "mailto:a@example.com"}
	enc := func(ev *pb.Event) []byte {
		ev.Uaid, ev.TimeMs, ev.Id = partialUAID, 9, []byte("0123456789abcdef")
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	acked := enc(&pb.Event{Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}})
	twoRefs := protowire.AppendTag(nil, FieldEventAcked, protowire.BytesType)
	inner := protowire.AppendTag(nil, fieldBodyMsg, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte{0x08, 0x01})
	inner = protowire.AppendTag(inner, fieldBodyMsg, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte{0x10, 0x05})
	twoRefs = protowire.AppendBytes(twoRefs, inner)
	twoRefs = protowire.AppendTag(twoRefs, FieldEventUAID, protowire.BytesType)
	twoRefs = protowire.AppendString(twoRefs, partialUAID)
	badNode := protowire.AppendTag(nil, FieldEventDelivered, protowire.BytesType)
	badNode = protowire.AppendBytes(badNode, protowire.AppendBytes(protowire.AppendTag(nil, fieldDeliveredNode, protowire.BytesType), []byte{0xc3}))
	negTime, err := proto.Marshal(&pb.Event{Uaid: partialUAID, TimeMs: -5, Body: &pb.Event_Expired{Expired: &pb.Expired{Msg: ref}}})
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"delivered":       enc(&pb.Event{Body: &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: "n", ConnId: "c", Attempt: 3}}}),
		"acked":           acked,
		"nacked":          enc(&pb.Event{Body: &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: ref, Code: 301}}}),
		"expired":         enc(&pb.Event{Body: &pb.Event_Expired{Expired: &pb.Expired{Msg: ref}}}),
		"expired noref":   enc(&pb.Event{Body: &pb.Event_Expired{Expired: &pb.Expired{}}}),
		"dropped":         enc(&pb.Event{Body: &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: 99}}}),
		"dropped deleted": enc(&pb.Event{Body: &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_DELETED}}}),
		"negative":        enc(&pb.Event{Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{Partition: -1, Offset: -3}}}}),
		"accepted":        enc(&pb.Event{Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{}}}),
		"message deleted": enc(&pb.Event{Body: &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: ref}}}),
		"two refs":        twoRefs,
		"bad node":        badNode,
		"body twice":      append(bytes.Clone(acked), acked...),
		"truncated":       acked[:len(acked)-2],
		"negative time":   negTime,
		"empty":           {},
	}
}

// checkSettlement fails when DecodeSettlement claims to have read b but
// proto.Unmarshal disagrees.
func checkSettlement(t *testing.T, b []byte) bool {
	t.Helper()
	uaid, got, ok := DecodeSettlement(b)
	if !ok {
		return false
	}
	ev := &pb.Event{}
	if err := proto.Unmarshal(b, ev); err != nil {
		t.Fatalf("fast path read %x, proto.Unmarshal refused it: %v", b, err)
	}
	want, ok := SettlementOf(ev)
	if !ok || got != want || string(uaid) != ev.GetUaid() {
		t.Fatalf("fast path read %x as %q %+v, proto.Unmarshal as %q %+v (%T)", b, uaid, got, ev.GetUaid(), want, ev.GetBody())
	}
	return true
}

func TestDecodeSettlement(t *testing.T) {
	slow := map[string]bool{"accepted": true, "message deleted": true, "two refs": true, "bad node": true, "body twice": true, "truncated": true, "empty": true}
	for name, b := range settlementSeeds(t) {
		t.Run(name, func(t *testing.T) {
			if got := checkSettlement(t, b); got == slow[name] {
				t.Fatalf("fast path %v, want %v", got, !slow[name])
			}
		})
	}
}

// FuzzDecodeSettlement: whatever the fast path reads of an acks topic
// record, proto.Unmarshal reads the same.
func FuzzDecodeSettlement(f *testing.F) {
	for _, b := range settlementSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkSettlement(t, b) })
}
