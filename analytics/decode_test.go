package analytics

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func acceptedTestEvent(m *pb.MessageAccepted) []byte {
	ev := testEvent(1_700_000_000_123)
	ev.Body = &pb.Event_MessageAccepted{MessageAccepted: m}
	b, err := proto.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return b
}

// fullRow is the row through schema.Decode and EventRow.
func fullRow(rec *kgo.Record) (Row, bool) {
	ev, err := schema.Decode(rec)
	if err != nil {
		return Row{}, false
	}
	return EventRow(rec, ev)
}

// sameRow compares rows as they are inserted (an empty and a missing
// event id are the same "").
func sameRow(a, b Row) bool {
	return bytes.Equal(a.EventID, b.EventID) &&
		reflect.DeepEqual(Row{Table: a.Table, TimeMs: a.TimeMs, UAID: a.UAID, Partition: a.Partition, Offset: a.Offset, Values: a.Values},
			Row{Table: b.Table, TimeMs: b.TimeMs, UAID: b.UAID, Partition: b.Partition, Offset: b.Offset, Values: b.Values})
}

// TestAcceptedRow: the fast path gives exactly the full decode's row for
// MessageAccepted events and leaves everything else to the full decode.
func TestAcceptedRow(t *testing.T) {
	full := &pb.MessageAccepted{
		ChannelId: testChan, Payload: make([]byte, 4096), Encoding: "aesgcm", Encryption: "salt=abc", CryptoKey: "dh=xyz",
		TtlS: 60, Topic: "t1", Urgency: pb.Urgency_URGENCY_HIGH, VapidSub: "mailto:s@example.com",
		VapidKeyHash: []byte{0xab, 0xcd}, KeyBound: true, ReceiptSub: []byte("r"),
	}
	valid := acceptedTestEvent(full)
	// A field of a newer writer that this build does not know.
	unknown := protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), valid...), 99, protowire.VarintType), 7)
	// The same field twice: the last one wins.
	twice := append(append([]byte(nil), valid...), acceptedTestEvent(&pb.MessageAccepted{ChannelId: testChan, TtlS: 5})...)
	badUAID := func() []byte {
		ev := testEvent(1)
		ev.Uaid = "not-a-uaid"
		ev.Body = &pb.Event_MessageAccepted{MessageAccepted: full}
		b, _ := proto.Marshal(ev)
		return b
	}()
	delivered := func() []byte {
		ev := testEvent(1)
		ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: testRef(), Node: "n"}}
		b, _ := proto.Marshal(ev)
		return b
	}()
	badUTF8 := acceptedTestEvent(&pb.MessageAccepted{ChannelId: testChan, Encryption: "x"})
	badUTF8[bytes.LastIndexByte(badUTF8, 'x')] = 0xff
	newer := []kgo.RecordHeader{{Key: schema.HeaderVersion, Value: []byte("99")}}
	tests := []struct {
		name    string
		value   []byte
		headers []kgo.RecordHeader
		fast    bool // the fast path reads it
	}{
		{"every field", valid, nil, true},
		{"minimal", acceptedTestEvent(&pb.MessageAccepted{}), nil, true},
		{"unknown field", unknown, nil, true},
		{"event twice (bodies merge)", twice, nil, false},
		{"bad uaid", badUAID, nil, false},
		{"another body", delivered, nil, false},
		{"invalid UTF-8 in an unkept string", badUTF8, nil, false},
		{"newer encoding version", valid, newer, false},
		{"truncated", valid[:len(valid)-1], nil, false},
		{"tombstone", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &kgo.Record{Value: tt.value, Headers: tt.headers, Partition: 2, Offset: 41}
			got, ok := acceptedRow(rec)
			if ok != tt.fast {
				t.Fatalf("fast path %v, want %v", ok, tt.fast)
			}
			if !ok {
				return
			}
			want, wok := fullRow(rec)
			if !wok || !sameRow(got, want) {
				t.Errorf("fast row %+v\nfull row %+v (%v)", got, want, wok)
			}
		})
	}
}

// FuzzAcceptedRow: whatever the fast path reads, the full decode reads
// the same way.
func FuzzAcceptedRow(f *testing.F) {
	f.Add(acceptedTestEvent(&pb.MessageAccepted{
		ChannelId: testChan, Payload: []byte("body"), Encoding: "aes128gcm", TtlS: 60, Topic: "t",
		Urgency: pb.Urgency_URGENCY_LOW, VapidSub: "mailto:s@example.com", VapidKeyHash: []byte{1}, KeyBound: true,
	}))
	f.Add(acceptedTestEvent(&pb.MessageAccepted{}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, value []byte) {
		rec := &kgo.Record{Value: value, Partition: 1, Offset: 9}
		got, ok := acceptedRow(rec)
		if !ok {
			return // the full decode decides
		}
		want, wok := fullRow(rec)
		if !wok || !sameRow(got, want) {
			t.Fatalf("fast row %+v\nfull row %+v (%v)", got, want, wok)
		}
	})
}

// BenchmarkAcceptedRow measures the projector's fast path for one
// MessageAccepted record (a 4 KB payload, every field set):
//
//	go test ./analytics -run '^$' -bench AcceptedRow -benchmem
func BenchmarkAcceptedRow(b *testing.B) {
	rec := &kgo.Record{Partition: 2, Offset: 41, Value: acceptedTestEvent(&pb.MessageAccepted{
		ChannelId: testChan, Payload: make([]byte, 4096), Encoding: "aes128gcm", TtlS: 60, Topic: "t1",
		Urgency: pb.Urgency_URGENCY_HIGH, VapidSub: "mailto:s@example.com", VapidKeyHash: make([]byte, 32), KeyBound: true,
	})}
	for b.Loop() {
		if _, ok := acceptedRow(rec); !ok {
			b.Fatal("fast path refused the record")
		}
	}
}
