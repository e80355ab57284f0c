package analytics

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema/pb"
)

// senderReportConn connects to the ClickHouse of CLICKHOUSE_ADDR with a
// fresh database; skipped without one (failed under CI=1).
func senderReportConn(t *testing.T) (context.Context, *SenderReporter, string) {
	t.Helper()
	addr := os.Getenv("CLICKHOUSE_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "1" {
			t.Fatal("CI=1 and CLICKHOUSE_ADDR is not set")
		}
		t.Skip("CLICKHOUSE_ADDR not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	db := fmt.Sprintf("pushlog_sender_report_%d", time.Now().UnixNano())
	r, err := NewSenderReporter(addr, db)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := r.connection(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = r.Close()
	})
	return ctx, r, db
}

func TestSenderReportClickHouse(t *testing.T) {
	ctx, r, db := senderReportConn(t)
	conn, _ := r.connection(ctx)
	mine, other := sha256.Sum256([]byte("mine")), sha256.Sum256([]byte("other"))
	base := time.Date(2026, 12, 5, 23, 59, 0, 0, time.UTC).UnixMilli() // a window over midnight
	var off int64
	var rows []Row
	add := func(partition int32, ms int64, body any) int64 {
		ev := &pb.Event{TimeMs: ms, Uaid: "0123456789abcdef0123456789abcdef", Id: []byte(fmt.Sprint(off))}
		switch b := body.(type) {
		case *pb.MessageAccepted:
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: b}
		case *pb.Acked:
			ev.Body = &pb.Event_Acked{Acked: b}
		case *pb.Expired:
			ev.Body = &pb.Event_Expired{Expired: b}
		case *pb.Dropped:
			ev.Body = &pb.Event_Dropped{Dropped: b}
		case *pb.Delivered:
			ev.Body = &pb.Event_Delivered{Delivered: b}
		case *pb.MessageDeleted:
			ev.Body = &pb.Event_MessageDeleted{MessageDeleted: b}
		}
		off++
		row, ok := EventRow(&kgo.Record{Partition: partition, Offset: off}, ev)
		if !ok {
			t.Fatalf("no row for %v", ev)
		}
		rows = append(rows, row)
		return off
	}
	accept := func(key [32]byte, ms int64, u pb.Urgency) *pb.MessageRef {
		o := add(0, ms, &pb.MessageAccepted{VapidKeyHash: key[:], Urgency: u, TtlS: 60})
		return &pb.MessageRef{Partition: 0, Offset: o, AcceptedMs: ms}
	}
	// Mine, in the window: 3 acked (latencies 100, 200, 300; one acked
	// twice), 1 expired, 2 dropped (topic, pending limit), 1 deleted
	// (request, then the owner's drop), 1 deleted after its ack (stays
	// acked), 2 pending (one delivered).
	for i, lat := range []int64{100, 200, 300} {
		m := accept(mine, base+int64(i), pb.Urgency_URGENCY_HIGH)
		add(1, m.AcceptedMs+lat/2, &pb.Delivered{Msg: m, Attempt: 1})
		add(1, m.AcceptedMs+lat, &pb.Acked{Msg: m, Code: 100})
		if i == 0 {
			add(1, m.AcceptedMs+lat+5, &pb.Acked{Msg: m, Code: 100})
		}
	}
	m := accept(mine, base+10, pb.Urgency_URGENCY_NORMAL)
	add(1, base+70_000, &pb.Expired{Msg: m})
	m = accept(mine, base+11, pb.Urgency_URGENCY_NORMAL)
	add(1, base+20, &pb.Dropped{Msg: m, Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED})
	m = accept(mine, base+12, pb.Urgency_URGENCY_LOW)
	add(1, base+20, &pb.Dropped{Msg: m, Reason: pb.DropReason_DROP_REASON_PENDING_LIMIT})
	m = accept(mine, base+13, pb.Urgency_URGENCY_LOW)
	add(0, base+30, &pb.MessageDeleted{Msg: m})
	add(1, base+31, &pb.Dropped{Msg: m, Reason: pb.DropReason_DROP_REASON_DELETED})
	m = accept(mine, base+14, pb.Urgency_URGENCY_VERY_LOW)
	add(1, base+400, &pb.Acked{Msg: m, Code: 100})
	add(0, base+500, &pb.MessageDeleted{Msg: m})
	m = accept(mine, base+15, pb.Urgency_URGENCY_NORMAL)
	add(1, base+16, &pb.Delivered{Msg: m, Attempt: 1})
	accept(mine, base+16, pb.Urgency_URGENCY_NORMAL)
	// Outside the window, and another key's: never counted.
	m = accept(mine, base-3_600_000, pb.Urgency_URGENCY_NORMAL)
	add(1, base+5, &pb.Acked{Msg: m, Code: 100})
	m = accept(other, base+1, pb.Urgency_URGENCY_NORMAL)
	add(1, base+5, &pb.Acked{Msg: m, Code: 100})

	byTable := map[string][]Row{}
	for _, r := range rows {
		byTable[r.Table] = append(byTable[r.Table], r)
	}
	for table, rs := range byTable {
		if err := InsertRows(ctx, conn, db, table, rs); err != nil {
			t.Fatal(err)
		}
	}
	since, until := time.UnixMilli(base-60_000), time.UnixMilli(base+120_000)
	got, err := r.Report(ctx, hex.EncodeToString(mine[:]), since, until)
	if err != nil {
		t.Fatal(err)
	}
	want := SenderCounts{Accepted: 10, Delivered: 4, Acked: 4, Expired: 1, Dropped: 2, Deleted: 1, Pending: 2,
		AckP50: 200, AckP95: 386, AckP99: 386}
	if got.Accepted != want.Accepted || got.Delivered != want.Delivered || got.Acked != want.Acked || got.Expired != want.Expired ||
		got.Dropped != want.Dropped || got.Deleted != want.Deleted || got.Pending != want.Pending {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if !got.Balanced() {
		t.Fatalf("identity broken: %+v", got)
	}
	if got.DroppedByReason["topic_replaced"] != 1 || got.DroppedByReason["pending_limit"] != 1 || len(got.DroppedByReason) != 2 {
		t.Fatalf("dropped by reason %v", got.DroppedByReason)
	}
	if got.Urgency["high"] != 3 || got.Urgency["normal"] != 4 || got.Urgency["low"] != 2 || got.Urgency["very-low"] != 1 {
		t.Fatalf("urgency %v", got.Urgency)
	}
	if got.AckP50 < 200 || got.AckP50 > 300 || got.AckP99 < 300 {
		t.Fatalf("latency p50 %v p95 %v p99 %v", got.AckP50, got.AckP95, got.AckP99)
	}
	if _, err := r.Report(ctx, "NOT-HEX", since, until); err == nil {
		t.Fatal("a bad key hash was queried")
	}
	empty, err := r.Report(ctx, hex.EncodeToString(other[:]), until, until.Add(time.Hour))
	if err != nil || empty.Accepted != 0 || !empty.Balanced() {
		t.Fatalf("empty window: %+v %v", empty, err)
	}
}
