package projector

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// statusFoldStarts are statuses a record is folded into by the
// differential test: nothing yet, accepted, delivered, settled early and
// late.
var statusFoldStarts = []schema.MessageStatus{
	{},
	{AcceptedMs: 10, TTLSeconds: 60},
	{AcceptedMs: 10, DeliveredMs: 20, Deliveries: 1, State: schema.StateDelivered},
	{SettledMs: 5, State: schema.StateAcked, AckCode: 101},
	{SettledMs: 1 << 40, State: schema.StateDropped, Reason: pb.DropReason_DROP_REASON_PENDING_LIMIT},
}

// statusFoldSeeds are encoded events of both topics.
func statusFoldSeeds(t testing.TB) [][]byte {
	ref := &pb.MessageRef{Partition: 2, Offset: 7, ChannelId: "01234567-89ab-cdef-0123-456789abcdef", AcceptedMs: 3}
	var out [][]byte
	for _, body := range []any{
		&pb.MessageAccepted{TtlS: 60, Payload: []byte("payload"), Urgency: pb.Urgency_URGENCY_HIGH, KeyBound: true, VapidKeyHash: bytes.Repeat([]byte{7}, 32)},
		&pb.MessageAccepted{TtlS: 5, ReceiptSub: bytes.Repeat([]byte{1}, 16), VapidKeyHash: []byte("short")},
		&pb.Delivered{Msg: ref, Attempt: 2, Node: "n"},
		&pb.Acked{Msg: ref, Code: 102},
		&pb.Nacked{Msg: ref, Code: 301},
		&pb.Expired{Msg: ref},
		&pb.Expired{},
		&pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_DELETED},
		&pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED},
		&pb.Acked{Msg: &pb.MessageRef{Partition: -1, Offset: 3}},
		&pb.MessageDeleted{Msg: ref},
		&pb.UaidSeen{},
	} {
		ev := &pb.Event{TimeMs: 30, Uaid: statusUAID, Id: make([]byte, 16)}
		switch b := body.(type) {
		case *pb.MessageAccepted:
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: b}
		case *pb.Delivered:
			ev.Body = &pb.Event_Delivered{Delivered: b}
		case *pb.Acked:
			ev.Body = &pb.Event_Acked{Acked: b}
		case *pb.Nacked:
			ev.Body = &pb.Event_Nacked{Nacked: b}
		case *pb.Expired:
			ev.Body = &pb.Event_Expired{Expired: b}
		case *pb.Dropped:
			ev.Body = &pb.Event_Dropped{Dropped: b}
		case *pb.MessageDeleted:
			ev.Body = &pb.Event_MessageDeleted{MessageDeleted: b}
		case *pb.UaidSeen:
			ev.Body = &pb.Event_UaidSeen{UaidSeen: b}
		}
		v, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return append(out, nil, []byte{}, []byte{0xff, 0x01})
}

// checkStatusFold fails when the fold's reading of a record (partial
// where it can) gives another message key, status or follower event than
// the full decode.
func checkStatusFold(t *testing.T, value []byte, acks bool) {
	t.Helper()
	r := &kgo.Record{Value: value, Partition: 3, Offset: 11}
	sr, ok := readFoldRecord(r, acks)
	ev, err := schema.Decode(r)
	var key schema.MessageKey
	want := err == nil
	if want {
		key, want = schema.MessageKeyOf(r.Partition, r.Offset, ev)
	}
	if ok != want || (ok && sr.key != key) {
		t.Fatalf("%x (acks %v): fold reads %v %+v, full decode %v %+v", value, acks, ok, sr.key, want, key)
	}
	if !ok {
		return
	}
	for _, start := range statusFoldStarts {
		got, full := start, start
		sr.apply(&got)
		full.Apply(ev)
		if got != full {
			t.Fatalf("%x (acks %v) into %+v: fold %+v, full decode %+v", value, acks, start, got, full)
		}
	}
	// A follower (push receipts) gets the same MessageAccepted fields.
	var a schema.Accepted
	isAcc := sr.acceptedInto(&a)
	fullA, fullAcc := schema.AcceptedOf(ev)
	if isAcc != fullAcc || !a.Equal(fullA) {
		t.Fatalf("%x: followers get accepted %v %+v, full decode %v %+v", value, isAcc, a, fullAcc, fullA)
	}
}

func TestStatusFoldPartial(t *testing.T) {
	for _, v := range statusFoldSeeds(t) {
		for _, acks := range []bool{false, true} {
			checkStatusFold(t, v, acks)
		}
	}
	// A newer encoding version is left to the full decode, which refuses it.
	for _, v := range statusFoldSeeds(t)[:4] {
		for _, acks := range []bool{false, true} {
			r := &kgo.Record{Value: v, Headers: []kgo.RecordHeader{{Key: schema.HeaderVersion, Value: []byte("99")}}}
			if _, ok := readFoldRecord(r, acks); ok {
				t.Fatalf("%x of version 99 read", v)
			}
		}
	}
}

// FuzzStatusFoldPartial: for any record of either topic, the fold's
// partial reading gives the same message key, status and receipt request
// as the full decode.
func FuzzStatusFoldPartial(f *testing.F) {
	for _, v := range statusFoldSeeds(f) {
		f.Add(v, false)
		f.Add(v, true)
	}
	f.Fuzz(func(t *testing.T, value []byte, acks bool) { checkStatusFold(t, value, acks) })
}

// TestStatusTableFollowerEvents: followers get a MessageAccepted's
// fields (what push receipts keep), read partially, and nothing of the
// acks topic's events beyond the status.
func TestStatusTableFollowerEvents(t *testing.T) {
	tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	type seenChange struct {
		c   schema.StatusChange
		acc *schema.Accepted // a copy: the table reuses its own
	}
	var seen []seenChange
	tbl.Follow(func(c schema.StatusChange) {
		s := seenChange{c: c}
		if c.Accepted != nil {
			a := *c.Accepted
			s.acc = &a
		}
		seen = append(seen, s)
	})
	sub := bytes.Repeat([]byte{9}, 16)
	withReceipt := statusRecord(t, 0, 5, 10, &pb.MessageAccepted{TtlS: 60, ReceiptSub: sub, ChannelId: "c"})
	withReceipt.Topic = tbl.cfg.Names.Messages
	plain := statusRecord(t, 0, 6, 11, &pb.MessageAccepted{TtlS: 30})
	plain.Topic = tbl.cfg.Names.Messages
	ack := statusRecord(t, 1, 0, 30, &pb.MessageRef{Partition: 0, Offset: 5})
	ack.Topic = tbl.cfg.Names.Acks
	for _, r := range []*kgo.Record{withReceipt, plain, ack} {
		tbl.Apply(r)
	}
	if len(seen) != 3 {
		t.Fatalf("followers saw %d changes", len(seen))
	}
	if a := seen[0].acc; a == nil || !bytes.Equal(a.ReceiptSub, sub) || string(a.ChannelID) != "c" || string(a.UAIDText) != statusUAID || a.TimeMs != 10 || a.TTLS != 60 {
		t.Fatalf("accepted with a receipt: %+v", a)
	}
	if a := seen[1].acc; a == nil || len(a.ReceiptSub) != 0 || a.TTLS != 30 || seen[1].c.Key != (schema.MessageKey{Partition: 0, Offset: 6}) || seen[1].c.After.AcceptedMs != 11 {
		t.Fatalf("plain accepted: %+v %+v", seen[1].c, a)
	}
	if c := seen[2].c; seen[2].acc != nil || c.Key != (schema.MessageKey{Partition: 0, Offset: 5}) || c.Before.State != schema.StatePending || c.After.State != schema.StateAcked || c.After.AckCode != 100 {
		t.Fatalf("ack: %+v", seen[2])
	}
	if tbl.acc.Payload != nil || tbl.acc.UAIDText != nil {
		t.Fatal("the table holds the last record after its followers")
	}
}

// BenchmarkStatusApply folds 100,000 messages as a connected push leaves
// them: the MessageAccepted (a 256-byte push's payload, VAPID), its
// Delivered and its Acked.
func BenchmarkStatusApply(b *testing.B) {
	const n = 100_000
	names := schema.DefaultNames()
	recs := make([]*kgo.Record, 0, 3*n)
	hash := bytes.Repeat([]byte{3}, 32)
	for i := range int64(n) {
		ref := &pb.MessageRef{Partition: 0, Offset: i, ChannelId: "01234567-89ab-cdef-0123-456789abcdef", AcceptedMs: 1000 + i}
		for j, ev := range []*pb.Event{
			{Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: ref.ChannelId, Payload: make([]byte, 256+86), Encoding: "aes128gcm",
				TtlS: 60, Urgency: pb.Urgency_URGENCY_NORMAL, VapidSub: "mailto:load@example.com", VapidKeyHash: hash, KeyBound: true}}},
			{Body: &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: "node-1", ConnId: "conn-1", Attempt: 1}}},
			{Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}},
		} {
			ev.Id, ev.TimeMs, ev.Uaid = make([]byte, 16), 1000+i+int64(j), statusUAID
			r, err := schema.Record(ev)
			if err != nil {
				b.Fatal(err)
			}
			r.Topic, r.Partition, r.Offset = names.Acks, 0, 2*i+int64(j)
			if j == 0 {
				r.Topic, r.Offset = names.Messages, i
			}
			recs = append(recs, r)
		}
	}
	for _, followers := range []int{0, 1} {
		b.Run(fmt.Sprintf("followers=%d", followers), func(b *testing.B) {
			for b.Loop() {
				tbl, err := NewStatusTable(StatusTableConfig{MaxTTL: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				if followers > 0 {
					var n int
					tbl.Follow(func(c schema.StatusChange) { n += int(c.Key.Offset) }) // as receipts: always there
				}
				for _, r := range recs {
					tbl.Apply(r)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
		})
	}
}
