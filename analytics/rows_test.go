package analytics

import (
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	testUAID = "0123456789abcdef0123456789abcdef"
	testChan = "01234567-89ab-cdef-0123-456789abcdef"
)

func testEvent(timeMs int64) *pb.Event {
	return &pb.Event{Id: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, TimeMs: timeMs, Uaid: testUAID}
}

func testRef() *pb.MessageRef {
	return &pb.MessageRef{Partition: 3, Offset: 77, ChannelId: testChan, AcceptedMs: 1_000, VapidSub: "mailto:s@example.com"}
}

func TestEventRow(t *testing.T) {
	keyHash := []byte{0xab, 0xcd}
	refCols := []any{testChan, int32(3), int64(77), int64(1_000), "mailto:s@example.com", int64(250)}
	with := func(extra ...any) []any { return append(append([]any(nil), refCols...), extra...) }
	tests := []struct {
		name   string
		body   func(ev *pb.Event)
		table  string
		values []any
	}{
		{"accepted", func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{
				ChannelId: testChan, Payload: make([]byte, 4096), Encoding: "aes128gcm",
				TtlS: 60, Topic: "t1", Urgency: pb.Urgency_URGENCY_VERY_LOW, VapidSub: "mailto:s@example.com",
				VapidKeyHash: keyHash, KeyBound: true,
			}}
		}, TableAccepted, []any{testChan, "mailto:s@example.com", "abcd", uint8(1), uint32(4096), "aes128gcm", int64(60), "very-low", uint8(1)}},
		{"accepted minimal", func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: testChan}}
		}, TableAccepted, []any{testChan, "", "", uint8(0), uint32(0), "", int64(0), "normal", uint8(0)}},
		{"deleted", func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: testRef()}}
		}, TableDeleted, with()},
		{"delivered", func(ev *pb.Event) {
			ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: testRef(), Node: "n1", ConnId: "c1", Attempt: 2}}
		}, TableDelivered, with("n1", "c1", int32(2))},
		{"acked", func(ev *pb.Event) {
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: testRef(), Code: 100}}
		}, TableAcked, with(int32(100))},
		{"acked without accept time has no latency", func(ev *pb.Event) {
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{ChannelId: testChan}, Code: 101}}
		}, TableAcked, []any{testChan, int32(0), int64(0), int64(0), "", int64(0), int32(101)}},
		{"acked without ref", func(ev *pb.Event) {
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Code: 102}}
		}, TableAcked, []any{"", int32(0), int64(0), int64(0), "", int64(0), int32(102)}},
		{"nacked", func(ev *pb.Event) {
			ev.Body = &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: testRef(), Code: 302}}
		}, TableNacked, with(int32(302))},
		{"expired", func(ev *pb.Event) {
			ev.Body = &pb.Event_Expired{Expired: &pb.Expired{Msg: testRef()}}
		}, TableExpired, with()},
		{"dropped", func(ev *pb.Event) {
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: testRef(), Reason: pb.DropReason_DROP_REASON_TTL_ZERO_OFFLINE}}
		}, TableDropped, with("ttl_zero_offline", int32(6))},
		{"dropped with a future reason", func(ev *pb.Event) {
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: testRef(), Reason: pb.DropReason(42)}}
		}, TableDropped, with("42", int32(42))},
		{"registered", func(ev *pb.Event) {
			ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: testChan, KeyHash: keyHash}}
		}, TableRegistrations, []any{"registered", testChan, "abcd", int32(0), ""}},
		{"unregistered", func(ev *pb.Event) {
			ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: testChan, Code: 202}}
		}, TableRegistrations, []any{"unregistered", testChan, "", int32(202), ""}},
		{"reset", func(ev *pb.Event) {
			ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "unknown uaid"}}
		}, TableRegistrations, []any{"reset", "", "", int32(0), "unknown uaid"}},
		{"connected", func(ev *pb.Event) {
			ev.Body = &pb.Event_Connected{Connected: &pb.Connected{Node: "n1", LinkAddr: "127.0.0.1:1", ConnId: "c1", SinceMs: 900, UserAgent: "Firefox"}}
		}, TableConnections, []any{"connected", "n1", "c1", "127.0.0.1:1", int64(900), "Firefox", int64(0)}},
		{"disconnected", func(ev *pb.Event) {
			ev.Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{Node: "n1", ConnId: "c1", DurationMs: 5_000}}
		}, TableConnections, []any{"disconnected", "n1", "c1", "", int64(0), "", int64(5_000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := testEvent(1_250)
			tt.body(ev)
			rec, err := schema.Record(ev)
			if err != nil {
				t.Fatal(err)
			}
			rec.Partition, rec.Offset = 5, 1234
			decoded, err := schema.Decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			row, ok := EventRow(rec, decoded)
			if !ok {
				t.Fatal("no row")
			}
			if row.Table != tt.table {
				t.Fatalf("table %s, want %s", row.Table, tt.table)
			}
			if row.Partition != 5 || row.Offset != 1234 || row.TimeMs != 1_250 || row.UAID != testUAID ||
				hex.EncodeToString(row.EventID) != "0102030405060708090a0b0c0d0e0f10" {
				t.Fatalf("common fields %+v", row)
			}
			if !reflect.DeepEqual(row.Values, tt.values) {
				t.Fatalf("values\n got %#v\nwant %#v", row.Values, tt.values)
			}
			tb, _ := LookupTable(row.Table)
			if len(row.Values) != len(tb.Columns) {
				t.Fatalf("%d values for %d columns", len(row.Values), len(tb.Columns))
			}
			if tb.Topic != rec.Topic {
				t.Fatalf("event on %s lands in %s, a table of %s", rec.Topic, row.Table, tb.Topic)
			}
		})
	}
}

func TestEventRowWithoutTable(t *testing.T) {
	ev := testEvent(1)
	ev.Body = &pb.Event_ChannelState{ChannelState: &pb.ChannelState{}}
	if _, ok := EventRow(&kgo.Record{}, ev); ok {
		t.Fatal("channel state got a row")
	}
	if _, ok := EventRow(&kgo.Record{}, testEvent(1)); ok {
		t.Fatal("empty body got a row")
	}
}

func TestUrgencyAndDropReasonNames(t *testing.T) {
	urg := map[pb.Urgency]string{
		pb.Urgency_URGENCY_NORMAL: "normal", pb.Urgency_URGENCY_VERY_LOW: "very-low",
		pb.Urgency_URGENCY_LOW: "low", pb.Urgency_URGENCY_HIGH: "high", pb.Urgency(9): "9",
	}
	for u, want := range urg {
		if got := Urgency(u); got != want {
			t.Errorf("urgency %d: %q, want %q", u, got, want)
		}
	}
	reasons := map[pb.DropReason]string{
		pb.DropReason_DROP_REASON_UNSPECIFIED: "unspecified", pb.DropReason_DROP_REASON_PENDING_LIMIT: "pending_limit",
		pb.DropReason_DROP_REASON_TOPIC_REPLACED: "topic_replaced", pb.DropReason_DROP_REASON_UNREGISTERED: "unregistered",
		pb.DropReason_DROP_REASON_USER_RESET: "user_reset", pb.DropReason_DROP_REASON_DELETED: "deleted",
		pb.DropReason_DROP_REASON_TTL_ZERO_OFFLINE: "ttl_zero_offline",
	}
	for r, want := range reasons {
		if got := DropReason(r); got != want {
			t.Errorf("reason %d: %q, want %q", r, got, want)
		}
	}
}

// FuzzEventRow: whatever a record holds, decoding and mapping never
// panic, and a mapped row always fits its table and topic.
func FuzzEventRow(f *testing.F) {
	seeds := []func(*pb.Event){
		func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: testChan, Payload: []byte("x"), VapidKeyHash: []byte{1}}}
		},
		func(ev *pb.Event) { ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: testRef(), Code: 100}} },
		func(ev *pb.Event) {
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: testRef(), Reason: 3}}
		},
		func(ev *pb.Event) { ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "r"}} },
		func(ev *pb.Event) { ev.Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{DurationMs: 1}} },
	}
	for _, set := range seeds {
		ev := testEvent(1_700_000_000_000)
		set(ev)
		rec, err := schema.Record(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec.Topic, rec.Value)
	}
	f.Add(schema.TopicPresence, []byte(nil))
	f.Add(schema.TopicAcks, []byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, topic string, value []byte) {
		rec := &kgo.Record{Topic: topic, Value: value, Partition: 1, Offset: 2}
		ev, err := schema.Decode(rec)
		if err != nil {
			return
		}
		row, ok := EventRow(rec, ev)
		if !ok {
			return
		}
		tb, found := LookupTable(row.Table)
		if !found {
			t.Fatalf("row for unknown table %q", row.Table)
		}
		if len(row.Values) != len(tb.Columns) {
			t.Fatalf("%s: %d values for %d columns", row.Table, len(row.Values), len(tb.Columns))
		}
		if tb.Topic != schema.TopicOf(ev) {
			t.Fatalf("%s event lands in %s", schema.TopicOf(ev), row.Table)
		}
		_ = row.Time()
		_ = row.Day()
	})
}
