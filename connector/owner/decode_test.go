package owner

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func TestParseChannelIDBytes(t *testing.T) {
	for _, s := range []string{newChannel(), "0123456789ABCDEF0123456789abcdef", "01234567-89ab-cdef-0123-456789abcdeg", "01234567-89ab-cdef-0123+456789abcdef", "", "x"} {
		got, err := parseChannelID([]byte(s))
		want, werr := schema.ParseChannelID(s)
		if got != want || (err == nil) != (werr == nil) {
			t.Errorf("%q: %x, %v; schema.ParseChannelID %x, %v", s, got, err, want, werr)
		}
	}
}

// TestDequeSummaries: the deque's counts and oldest acceptance time agree
// with a walk of its entries through pushes, settles and pops.
func TestDequeSummaries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var d deque
	var live []*pending
	off := int64(0)
	for step := range 20000 {
		switch r := rng.IntN(10); {
		case r < 6:
			m := &pending{offset: off, acceptedMs: int64(rng.IntN(1000))} // 0: unknown time
			off += 1 + int64(rng.IntN(3))
			d.push(m)
			live = append(live, m)
		case len(live) > 0:
			i := rng.IntN(len(live))
			if r == 9 {
				i = 0 // the front, so pops happen
			}
			m := live[i]
			live = append(live[:i], live[i+1:]...)
			m.state = stSettled
			d.settledNow(m)
			d.popSettledFront()
		}
		if step%97 != 0 {
			continue
		}
		unsettled, settled, oldest := 0, 0, int64(0)
		for _, m := range d.items() {
			if m.state == stSettled {
				settled++
				continue
			}
			unsettled++
			if m.acceptedMs > 0 && (oldest == 0 || m.acceptedMs < oldest) {
				oldest = m.acceptedMs
			}
		}
		if d.unsettled != unsettled || d.settled != settled || d.oldestMs() != oldest {
			t.Fatalf("step %d: unsettled %d settled %d oldest %d, walk %d %d %d", step, d.unsettled, d.settled, d.oldestMs(), unsettled, settled, oldest)
		}
	}
}

// settlementSeeds are encoded events decodeSettlement should read, or
// leave to the full decode.
func settlementSeeds(t testing.TB) map[string][]byte {
	uaid := uaidIn(1)
	ref := &pb.MessageRef{Partition: 1, Offset: 42, ChannelId: newChannel(), AcceptedMs: 7, VapidSub: "mailto:a@example.com"}
	enc := func(ev *pb.Event) []byte {
		ev.Uaid, ev.TimeMs, ev.Id = uaid, 9, []byte("0123456789abcdef")
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	acked := enc(&pb.Event{Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}})
	twoRefs := protowire.AppendTag(nil, fieldEventAcked, protowire.BytesType)
	inner := protowire.AppendTag(nil, fieldBodyMsg, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte{0x08, 0x01})
	inner = protowire.AppendTag(inner, fieldBodyMsg, protowire.BytesType)
	inner = protowire.AppendBytes(inner, []byte{0x10, 0x05})
	twoRefs = protowire.AppendBytes(twoRefs, inner)
	twoRefs = protowire.AppendTag(twoRefs, schema.FieldEventUAID, protowire.BytesType)
	twoRefs = protowire.AppendString(twoRefs, uaid)
	badNode := protowire.AppendTag(nil, fieldEventDelivered, protowire.BytesType)
	badNode = protowire.AppendBytes(badNode, protowire.AppendBytes(protowire.AppendTag(nil, fieldDeliveredNode, protowire.BytesType), []byte{0xc3}))
	return map[string][]byte{
		"delivered":     enc(&pb.Event{Body: &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: "n", ConnId: "c", Attempt: 3}}}),
		"acked":         acked,
		"nacked":        enc(&pb.Event{Body: &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: ref, Code: 301}}}),
		"expired":       enc(&pb.Event{Body: &pb.Event_Expired{Expired: &pb.Expired{Msg: ref}}}),
		"expired noref": enc(&pb.Event{Body: &pb.Event_Expired{Expired: &pb.Expired{}}}),
		"dropped":       enc(&pb.Event{Body: &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: 99}}}),
		"negative":      enc(&pb.Event{Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{Partition: -1, Offset: -3}}}}),
		"accepted":      enc(&pb.Event{Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{}}}),
		"two refs":      twoRefs,
		"bad node":      badNode,
		"body twice":    append(bytes.Clone(acked), acked...),
		"truncated":     acked[:len(acked)-2],
	}
}

// checkSettlement fails when decodeSettlement claims to have read b but
// proto.Unmarshal disagrees.
func checkSettlement(t *testing.T, b []byte) bool {
	t.Helper()
	uaid, got, ok := decodeSettlement(b)
	if !ok {
		return false
	}
	ev := &pb.Event{}
	if err := proto.Unmarshal(b, ev); err != nil {
		t.Fatalf("fast path read %x, proto.Unmarshal refused it: %v", b, err)
	}
	want, ok := settlementOf(ev)
	if !ok || got != want || string(uaid) != ev.GetUaid() {
		t.Fatalf("fast path read %x as %q %+v, proto.Unmarshal as %q %+v (%T)", b, uaid, got, ev.GetUaid(), want, ev.GetBody())
	}
	return true
}

func TestDecodeSettlement(t *testing.T) {
	slow := map[string]bool{"accepted": true, "two refs": true, "bad node": true, "body twice": true, "truncated": true}
	for name, b := range settlementSeeds(t) {
		t.Run(name, func(t *testing.T) {
			if got := checkSettlement(t, b); got == slow[name] {
				t.Fatalf("fast path %v, want %v", got, !slow[name])
			}
		})
	}
}

// FuzzDecodeSettlement: whatever the fast path reads of a pushlog.acks
// record, proto.Unmarshal reads the same.
func FuzzDecodeSettlement(f *testing.F) {
	for _, b := range settlementSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkSettlement(t, b) })
}
