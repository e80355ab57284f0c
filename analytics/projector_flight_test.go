package analytics

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// TestFlightFailureGoesBackToTheBatch: a batch that fails to store while
// the next one is being collected goes back in front of it, uncertain
// (ClickHouse may have stored part of it), with its partition dirty and
// its progress unchanged. (Stored flights: the integration tests.)
func TestFlightFailureGoesBackToTheBatch(t *testing.T) {
	tp := topicPartition{schema.TopicMessages, 0}
	day := (&Row{TimeMs: 1_700_000_000_000}).Day()
	key := insertKey{TableAccepted, day}
	for _, tt := range []struct {
		name         string
		failing      bool
		wantOffsets  []int64
		wantProgress int64
	}{
		{"failed", true, []int64{5, 6, 7}, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testProjector(t, time.Hour)
			p.conn = &downConn{}
			p.parts[tp] = &partitionState{loaded: true, progress: 4, firstSeen: -1, stored: map[insertKey]int64{}}
			add := func(off int64) {
				row := Row{Table: TableAccepted, TimeMs: 1_700_000_000_000, Partition: 0, Offset: off}
				if p.inserts[key] == nil {
					p.inserts[key] = &insert{}
				}
				p.inserts[key].rows = append(p.inserts[key].rows, row)
				p.rows++
				st := p.parts[tp]
				st.last, st.dirty = kgo.EpochOffset{Offset: off}, true
				if p.firstDirty.IsZero() {
					p.firstDirty = time.Now()
				}
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			add(5)
			add(6)
			p.startFlushLocked(t.Context(), nil, retryOnce)
			add(7) // the next batch, collected meanwhile
			err := p.joinLocked()
			if tt.failing != (err != nil) {
				t.Fatalf("join: %v", err)
			}
			var offsets []int64
			for _, r := range p.inserts[key].rows {
				offsets = append(offsets, r.Offset)
			}
			st := p.parts[tp]
			if !slices.Equal(offsets, tt.wantOffsets) || p.rows != len(tt.wantOffsets) {
				t.Errorf("batch rows at %v (%d counted), want %v", offsets, p.rows, tt.wantOffsets)
			}
			if !st.dirty || st.last.Offset != 7 || st.progress != tt.wantProgress {
				t.Errorf("partition %+v, want dirty at 7 with progress %d", st, tt.wantProgress)
			}
			if tt.failing && !p.inserts[key].uncertain {
				t.Error("the failed rows are not marked uncertain")
			}
		})
	}
}

// hangConn is a ClickHouse whose inserts hang until their context ends.
type hangConn struct {
	driver.Conn // nil: other calls panic
	started     chan struct{}
	mu          sync.Mutex
	errs        []error // the context errors the inserts ended with
}

func (c *hangConn) PrepareBatch(ctx context.Context, _ string, _ ...driver.PrepareBatchOption) (driver.Batch, error) {
	c.started <- struct{}{}
	<-ctx.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, ctx.Err())
	return nil, ctx.Err()
}

// TestLostCancelsFlight: partitions lost while their batch is being
// stored stop the flight at once (no waiting out a statement timeout, no
// insert or progress of ours after the loss is known); the lost
// partitions' rows are forgotten, the others' go back to the batch,
// uncertain, with their progress unchanged.
func TestLostCancelsFlight(t *testing.T) {
	p := testProjector(t, time.Hour)
	p.cfg.OpTimeout = time.Hour
	conn := &hangConn{started: make(chan struct{}, 1)}
	p.conn = conn
	topic := schema.TopicMessages
	key := insertKey{TableAccepted, (&Row{TimeMs: 1_700_000_000_000}).Day()}
	p.inserts[key] = &insert{}
	for part := range int32(2) {
		p.parts[topicPartition{topic, part}] = &partitionState{loaded: true, progress: 4, firstSeen: -1,
			stored: map[insertKey]int64{}, last: kgo.EpochOffset{Offset: 5}, dirty: true}
		p.inserts[key].rows = append(p.inserts[key].rows, Row{Table: TableAccepted, TimeMs: 1_700_000_000_000, Partition: part, Offset: 5})
		p.rows++
	}
	p.firstDirty = time.Now()
	p.mu.Lock()
	p.startFlushLocked(t.Context(), nil, retryUntilRebalance)
	p.mu.Unlock()
	<-conn.started

	p.onLost(t.Context(), nil, map[string][]int32{topic: {1}})

	conn.mu.Lock()
	errs := slices.Clone(conn.errs)
	conn.mu.Unlock()
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Errorf("inserts ended with %v, want one cancelled", errs)
	}
	if p.flight != nil {
		t.Error("a flight is left")
	}
	if _, ok := p.parts[topicPartition{topic, 1}]; ok {
		t.Error("the lost partition is still known")
	}
	st := p.parts[topicPartition{topic, 0}]
	if st == nil || !st.dirty || st.progress != 4 {
		t.Errorf("the kept partition: %+v, want dirty with progress 4", st)
	}
	g := p.inserts[key]
	if g == nil || len(g.rows) != 1 || g.rows[0].Partition != 0 || !g.uncertain || p.rows != 1 {
		t.Errorf("batch %+v (%d rows), want partition 0's row, uncertain", g, p.rows)
	}
}
