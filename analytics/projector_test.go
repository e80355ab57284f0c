package analytics

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

func TestNewProjectorConfig(t *testing.T) {
	opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	tests := []struct {
		name string
		cfg  ProjectorConfig
		ok   bool
	}{
		{"defaults", ProjectorConfig{ClientOpts: opts, Addr: "127.0.0.1:9000"}, true},
		{"no kafka", ProjectorConfig{Addr: "127.0.0.1:9000"}, false},
		{"no clickhouse", ProjectorConfig{ClientOpts: opts}, false},
		{"bad database", ProjectorConfig{ClientOpts: opts, Addr: "x:1", Database: "a-b"}, false},
		{"negative batch", ProjectorConfig{ClientOpts: opts, Addr: "x:1", BatchRows: -1}, false},
		{"negative interval", ProjectorConfig{ClientOpts: opts, Addr: "x:1", BatchInterval: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProjector(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				return
			}
			c := p.cfg
			if c.Group != DefaultGroup || c.Database != DefaultDatabase ||
				c.BatchRows != DefaultBatchRows || c.BatchInterval != DefaultBatchInterval ||
				c.RetryMax != DefaultRetryMax || c.OpTimeout != DefaultOpTimeout {
				t.Fatalf("defaults not applied: %+v", c)
			}
		})
	}
}

// testProjector is a projector that is never Run: for the retry
// and rebalance logic alone.
func testProjector(t *testing.T, retryMax time.Duration) *Projector {
	t.Helper()
	p, err := NewProjector(ProjectorConfig{
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

// tripBreaker opens the projector's circuit breaker.
func tripBreaker(p *Projector) {
	for range 3 {
		_, _ = p.cb.Execute(func() (struct{}, error) { return struct{}{}, errors.New("down") })
	}
}

func TestRetryModes(t *testing.T) {
	errDown := errors.New("clickhouse down")
	tests := []struct {
		name      string
		mode      retryMode
		rebalance bool // a rebalance is waiting
		open      bool // the breaker is open before the first attempt
		fails     int  // op fails this many times, then succeeds
		wantCalls int
		wantErr   error
	}{
		{"forever: until success, through the breaker", retryForever, true, false, 4, 5, nil},
		{"until rebalance: retries while none waits", retryUntilRebalance, false, false, 2, 3, nil},
		{"until rebalance: gives up when one waits", retryUntilRebalance, true, false, 5, 1, errAbandon},
		{"until rebalance: success needs no give-up", retryUntilRebalance, true, false, 0, 1, nil},
		{"once: one attempt", retryOnce, false, false, 5, 1, errDown},
		{"once: success", retryOnce, false, false, 0, 1, nil},
		{"once: an open breaker means no attempt", retryOnce, false, true, 0, 0, gobreaker.ErrOpenState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			retryMax := 10 * time.Millisecond // the breaker half-opens soon
			if tt.open {
				retryMax = time.Hour
			}
			p := testProjector(t, retryMax)
			if tt.open {
				tripBreaker(p)
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

func TestRetryStopsWithContext(t *testing.T) {
	p := testProjector(t, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	err := p.retry(ctx, "test", retryForever, func(context.Context) error {
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

// downConn fails every insert and query and counts them.
type downConn struct {
	driver.Conn // nil: other calls panic
	prepares    atomic.Int64
	queries     atomic.Int64
}

func (c *downConn) PrepareBatch(context.Context, string, ...driver.PrepareBatchOption) (driver.Batch, error) {
	c.prepares.Add(1)
	return nil, errors.New("clickhouse down")
}

func (c *downConn) Query(context.Context, string, ...any) (driver.Rows, error) {
	c.queries.Add(1)
	return nil, errors.New("clickhouse down")
}

// TestRevokeWhileFailing: revoking partitions while ClickHouse
// fails makes at most one attempt to store the batch (a rebalance is
// waiting for it), then forgets the revoked partitions and their rows and
// keeps the others.
func TestRevokeWhileFailing(t *testing.T) {
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
			p := testProjector(t, time.Hour)
			conn := &downConn{}
			p.conn = conn
			p.failing.Store(tt.failing)
			if tt.open {
				tripBreaker(p)
			}
			for part := range int32(2) {
				p.parts[topicPartition{topic, part}] = &partitionState{loaded: true, progress: 4, firstSeen: -1,
					stored: map[insertKey]int64{}, last: kgo.EpochOffset{Offset: 5}, dirty: true}
				row := Row{Table: TableAccepted, TimeMs: 1_700_000_000_000, Partition: part, Offset: 5}
				k := insertKey{row.Table, row.Day()}
				if p.inserts[k] == nil {
					p.inserts[k] = &insert{}
				}
				p.inserts[k].rows = append(p.inserts[k].rows, row)
				p.rows++
			}
			p.firstDirty = time.Now()

			p.onRevoked(t.Context(), nil, map[string][]int32{topic: {1}})

			if n, q := conn.prepares.Load(), conn.queries.Load(); n != tt.wantPrepares || q != 0 {
				t.Errorf("%d insert attempts and %d queries, want %d and none", n, q, tt.wantPrepares)
			}
			if _, ok := p.parts[topicPartition{topic, 1}]; ok {
				t.Error("the revoked partition is still known")
			}
			if st := p.parts[topicPartition{topic, 0}]; st == nil || !st.dirty {
				t.Errorf("the kept partition lost its state: %+v", st)
			}
			var parts []int32
			for _, g := range p.inserts {
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
