package analytics

import (
	"slices"
	"testing"
	"time"

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
