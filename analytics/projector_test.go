package projector

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	analyticsTestUAID = "0123456789abcdef0123456789abcdef"
	analyticsTestChan = "01234567-89ab-cdef-0123-456789abcdef"
)

func analyticsTestEvent(timeMs int64) *pb.Event {
	return &pb.Event{Id: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, TimeMs: timeMs, Uaid: analyticsTestUAID}
}

func analyticsTestRef() *pb.MessageRef {
	return &pb.MessageRef{Partition: 3, Offset: 77, ChannelId: analyticsTestChan, AcceptedMs: 1_000, VapidSub: "mailto:s@example.com"}
}

func TestAnalyticsRow(t *testing.T) {
	keyHash := []byte{0xab, 0xcd}
	refCols := []any{analyticsTestChan, int32(3), int64(77), int64(1_000), "mailto:s@example.com", int64(250)}
	with := func(extra ...any) []any { return append(append([]any(nil), refCols...), extra...) }
	tests := []struct {
		name   string
		body   func(ev *pb.Event)
		table  string
		values []any
	}{
		{"accepted", func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{
				ChannelId: analyticsTestChan, Payload: make([]byte, 4096), Encoding: "aes128gcm",
				TtlS: 60, Topic: "t1", Urgency: pb.Urgency_URGENCY_VERY_LOW, VapidSub: "mailto:s@example.com",
				VapidKeyHash: keyHash, KeyBound: true,
			}}
		}, analytics.TableAccepted, []any{analyticsTestChan, "mailto:s@example.com", "abcd", uint8(1), uint32(4096), "aes128gcm", int64(60), "very-low", uint8(1)}},
		{"accepted minimal", func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: analyticsTestChan}}
		}, analytics.TableAccepted, []any{analyticsTestChan, "", "", uint8(0), uint32(0), "", int64(0), "normal", uint8(0)}},
		{"deleted", func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: analyticsTestRef()}}
		}, analytics.TableDeleted, with()},
		{"delivered", func(ev *pb.Event) {
			ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: analyticsTestRef(), Node: "n1", ConnId: "c1", Attempt: 2}}
		}, analytics.TableDelivered, with("n1", "c1", int32(2))},
		{"acked", func(ev *pb.Event) {
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: analyticsTestRef(), Code: 100}}
		}, analytics.TableAcked, with(int32(100))},
		{"acked without accept time has no latency", func(ev *pb.Event) {
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{ChannelId: analyticsTestChan}, Code: 101}}
		}, analytics.TableAcked, []any{analyticsTestChan, int32(0), int64(0), int64(0), "", int64(0), int32(101)}},
		{"acked without ref", func(ev *pb.Event) {
			ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Code: 102}}
		}, analytics.TableAcked, []any{"", int32(0), int64(0), int64(0), "", int64(0), int32(102)}},
		{"nacked", func(ev *pb.Event) {
			ev.Body = &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: analyticsTestRef(), Code: 302}}
		}, analytics.TableNacked, with(int32(302))},
		{"expired", func(ev *pb.Event) {
			ev.Body = &pb.Event_Expired{Expired: &pb.Expired{Msg: analyticsTestRef()}}
		}, analytics.TableExpired, with()},
		{"dropped", func(ev *pb.Event) {
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: analyticsTestRef(), Reason: pb.DropReason_DROP_REASON_TTL_ZERO_OFFLINE}}
		}, analytics.TableDropped, with("ttl_zero_offline", int32(6))},
		{"dropped with a future reason", func(ev *pb.Event) {
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: analyticsTestRef(), Reason: pb.DropReason(42)}}
		}, analytics.TableDropped, with("42", int32(42))},
		{"registered", func(ev *pb.Event) {
			ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: analyticsTestChan, KeyHash: keyHash}}
		}, analytics.TableRegistrations, []any{"registered", analyticsTestChan, "abcd", int32(0), ""}},
		{"unregistered", func(ev *pb.Event) {
			ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: analyticsTestChan, Code: 202}}
		}, analytics.TableRegistrations, []any{"unregistered", analyticsTestChan, "", int32(202), ""}},
		{"reset", func(ev *pb.Event) {
			ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "unknown uaid"}}
		}, analytics.TableRegistrations, []any{"reset", "", "", int32(0), "unknown uaid"}},
		{"connected", func(ev *pb.Event) {
			ev.Body = &pb.Event_Connected{Connected: &pb.Connected{Node: "n1", LinkAddr: "127.0.0.1:1", ConnId: "c1", SinceMs: 900, UserAgent: "Firefox"}}
		}, analytics.TableConnections, []any{"connected", "n1", "c1", "127.0.0.1:1", int64(900), "Firefox", int64(0)}},
		{"disconnected", func(ev *pb.Event) {
			ev.Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{Node: "n1", ConnId: "c1", DurationMs: 5_000}}
		}, analytics.TableConnections, []any{"disconnected", "n1", "c1", "", int64(0), "", int64(5_000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := analyticsTestEvent(1_250)
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
			row, ok := AnalyticsRow(rec, decoded)
			if !ok {
				t.Fatal("no row")
			}
			if row.Table != tt.table {
				t.Fatalf("table %s, want %s", row.Table, tt.table)
			}
			if row.Partition != 5 || row.Offset != 1234 || row.TimeMs != 1_250 || row.UAID != analyticsTestUAID ||
				hex.EncodeToString(row.EventID) != "0102030405060708090a0b0c0d0e0f10" {
				t.Fatalf("common fields %+v", row)
			}
			if !reflect.DeepEqual(row.Values, tt.values) {
				t.Fatalf("values\n got %#v\nwant %#v", row.Values, tt.values)
			}
			tb, _ := analytics.LookupTable(row.Table)
			if len(row.Values) != len(tb.Columns) {
				t.Fatalf("%d values for %d columns", len(row.Values), len(tb.Columns))
			}
			if tb.Topic != rec.Topic {
				t.Fatalf("event on %s lands in %s, a table of %s", rec.Topic, row.Table, tb.Topic)
			}
		})
	}
}

func TestAnalyticsRowWithoutTable(t *testing.T) {
	ev := analyticsTestEvent(1)
	ev.Body = &pb.Event_ChannelState{ChannelState: &pb.ChannelState{}}
	if _, ok := AnalyticsRow(&kgo.Record{}, ev); ok {
		t.Fatal("channel state got a row")
	}
	if _, ok := AnalyticsRow(&kgo.Record{}, analyticsTestEvent(1)); ok {
		t.Fatal("empty body got a row")
	}
}

func TestAnalyticsNames(t *testing.T) {
	urg := map[pb.Urgency]string{
		pb.Urgency_URGENCY_NORMAL: "normal", pb.Urgency_URGENCY_VERY_LOW: "very-low",
		pb.Urgency_URGENCY_LOW: "low", pb.Urgency_URGENCY_HIGH: "high", pb.Urgency(9): "9",
	}
	for u, want := range urg {
		if got := AnalyticsUrgency(u); got != want {
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
		if got := AnalyticsDropReason(r); got != want {
			t.Errorf("reason %d: %q, want %q", r, got, want)
		}
	}
}

func TestAnalyticsNewProjectorConfig(t *testing.T) {
	opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	tests := []struct {
		name string
		cfg  AnalyticsConfig
		ok   bool
	}{
		{"defaults", AnalyticsConfig{ClientOpts: opts, Addr: "127.0.0.1:9000"}, true},
		{"no kafka", AnalyticsConfig{Addr: "127.0.0.1:9000"}, false},
		{"no clickhouse", AnalyticsConfig{ClientOpts: opts}, false},
		{"bad database", AnalyticsConfig{ClientOpts: opts, Addr: "x:1", Database: "a-b"}, false},
		{"negative batch", AnalyticsConfig{ClientOpts: opts, Addr: "x:1", BatchRows: -1}, false},
		{"negative interval", AnalyticsConfig{ClientOpts: opts, Addr: "x:1", BatchInterval: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewAnalyticsProjector(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				return
			}
			c := p.cfg
			if c.Group != AnalyticsDefaultGroup || c.Database != analytics.DefaultDatabase ||
				c.BatchRows != AnalyticsDefaultBatchRows || c.BatchInterval != AnalyticsDefaultBatchInterval ||
				c.RetryMax != AnalyticsDefaultRetryMax || c.OpTimeout != AnalyticsDefaultOpTimeout {
				t.Fatalf("defaults not applied: %+v", c)
			}
		})
	}
}

// analyticsTestProjector is a projector that is never Run: for the retry
// and rebalance logic alone.
func analyticsTestProjector(t *testing.T, retryMax time.Duration) *AnalyticsProjector {
	t.Helper()
	p, err := NewAnalyticsProjector(AnalyticsConfig{
		ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")},
		Addr:       "127.0.0.1:1",
		RetryMax:   retryMax,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// analyticsTripBreaker opens the projector's circuit breaker.
func analyticsTripBreaker(p *AnalyticsProjector) {
	for range 3 {
		_, _ = p.cb.Execute(func() (struct{}, error) { return struct{}{}, errors.New("down") })
	}
}

func TestAnalyticsRetryModes(t *testing.T) {
	errDown := errors.New("clickhouse down")
	tests := []struct {
		name      string
		mode      analyticsRetry
		rebalance bool // a rebalance is waiting
		open      bool // the breaker is open before the first attempt
		fails     int  // op fails this many times, then succeeds
		wantCalls int
		wantErr   error
	}{
		{"forever: until success, through the breaker", analyticsRetryForever, true, false, 4, 5, nil},
		{"until rebalance: retries while none waits", analyticsRetryUntilRebalance, false, false, 2, 3, nil},
		{"until rebalance: gives up when one waits", analyticsRetryUntilRebalance, true, false, 5, 1, errAnalyticsAbandon},
		{"until rebalance: success needs no give-up", analyticsRetryUntilRebalance, true, false, 0, 1, nil},
		{"once: one attempt", analyticsRetryOnce, false, false, 5, 1, errDown},
		{"once: success", analyticsRetryOnce, false, false, 0, 1, nil},
		{"once: an open breaker means no attempt", analyticsRetryOnce, false, true, 0, 0, gobreaker.ErrOpenState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			retryMax := 10 * time.Millisecond // the breaker half-opens soon
			if tt.open {
				retryMax = time.Hour
			}
			p := analyticsTestProjector(t, retryMax)
			if tt.open {
				analyticsTripBreaker(p)
			}
			p.rebalanceWanted.Store(tt.rebalance)
			calls := 0
			err := p.retry(t.Context(), "test", tt.mode, func(context.Context) error {
				calls++
				if calls <= tt.fails {
					return errDown
				}
				return nil
			})
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if p.failing.Load() != (err != nil) {
				t.Errorf("failing %v after err %v", p.failing.Load(), err)
			}
		})
	}
}

func TestAnalyticsRetryStopsWithContext(t *testing.T) {
	p := analyticsTestProjector(t, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	err := p.retry(ctx, "test", analyticsRetryForever, func(context.Context) error {
		calls++
		if calls == 2 {
			cancel()
		}
		return errors.New("down")
	})
	if !errors.Is(err, context.Canceled) || calls != 2 {
		t.Fatalf("err %v after %d calls, want context.Canceled after 2", err, calls)
	}
}

// analyticsDownConn fails every insert and query and counts them.
type analyticsDownConn struct {
	driver.Conn // nil: other calls panic
	prepares    atomic.Int64
	queries     atomic.Int64
}

func (c *analyticsDownConn) PrepareBatch(context.Context, string, ...driver.PrepareBatchOption) (driver.Batch, error) {
	c.prepares.Add(1)
	return nil, errors.New("clickhouse down")
}

func (c *analyticsDownConn) Query(context.Context, string, ...any) (driver.Rows, error) {
	c.queries.Add(1)
	return nil, errors.New("clickhouse down")
}

// TestAnalyticsRevokeWhileFailing: revoking partitions while ClickHouse
// fails makes at most one attempt to store the batch (a rebalance is
// waiting for it), then forgets the revoked partitions and their rows and
// keeps the others.
func TestAnalyticsRevokeWhileFailing(t *testing.T) {
	tests := []struct {
		name         string
		failing      bool // the last ClickHouse operation failed
		open         bool // the breaker is open
		wantPrepares int64
	}{
		// A progress load after an abandon can succeed while inserts
		// still fail: then one insert is tried, not retried.
		{"last operation succeeded", false, false, 1},
		{"last operation failed", true, false, 0},
		{"breaker open", false, true, 0},
	}
	topic := schema.TopicMessages
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := analyticsTestProjector(t, time.Hour)
			conn := &analyticsDownConn{}
			p.conn = conn
			p.failing.Store(tt.failing)
			if tt.open {
				analyticsTripBreaker(p)
			}
			for part := range int32(2) {
				p.parts[analyticsTP{topic, part}] = &analyticsPartition{loaded: true, progress: 4, firstSeen: -1,
					stored: map[analyticsGroupKey]int64{}, last: kgo.EpochOffset{Offset: 5}, dirty: true}
				row := analytics.Row{Table: analytics.TableAccepted, TimeMs: 1_700_000_000_000, Partition: part, Offset: 5}
				k := analyticsGroupKey{row.Table, row.Day()}
				if p.groups[k] == nil {
					p.groups[k] = &analyticsGroup{}
				}
				p.groups[k].rows = append(p.groups[k].rows, row)
				p.rows++
			}
			p.firstDirty = time.Now()

			p.onRevoked(t.Context(), nil, map[string][]int32{topic: {1}})

			if n, q := conn.prepares.Load(), conn.queries.Load(); n != tt.wantPrepares || q != 0 {
				t.Errorf("%d insert attempts and %d queries, want %d and none", n, q, tt.wantPrepares)
			}
			if _, ok := p.parts[analyticsTP{topic, 1}]; ok {
				t.Error("the revoked partition is still known")
			}
			if st := p.parts[analyticsTP{topic, 0}]; st == nil || !st.dirty {
				t.Errorf("the kept partition lost its state: %+v", st)
			}
			var parts []int32
			for _, g := range p.groups {
				for _, r := range g.rows {
					parts = append(parts, r.Partition)
				}
			}
			if !reflect.DeepEqual(parts, []int32{0}) || p.rows != 1 {
				t.Errorf("unstored rows of partitions %v (%d counted), want only partition 0's", parts, p.rows)
			}
		})
	}
}

// FuzzAnalyticsRow: whatever a record holds, decoding and mapping never
// panic, and a mapped row always fits its table and topic.
func FuzzAnalyticsRow(f *testing.F) {
	seeds := []func(*pb.Event){
		func(ev *pb.Event) {
			ev.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: analyticsTestChan, Payload: []byte("x"), VapidKeyHash: []byte{1}}}
		},
		func(ev *pb.Event) { ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: analyticsTestRef(), Code: 100}} },
		func(ev *pb.Event) {
			ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: analyticsTestRef(), Reason: 3}}
		},
		func(ev *pb.Event) { ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "r"}} },
		func(ev *pb.Event) { ev.Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{DurationMs: 1}} },
	}
	for _, set := range seeds {
		ev := analyticsTestEvent(1_700_000_000_000)
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
		row, ok := AnalyticsRow(rec, ev)
		if !ok {
			return
		}
		tb, found := analytics.LookupTable(row.Table)
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
