package analytics

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// flight is a sealed batch being stored while the next one is collected,
// so decoding and row building overlap ClickHouse's insert. At most one
// flight exists: a batch is sealed only after the previous flight has
// finished, and a flight saves its progress only after all its rows are
// stored. So kafka_progress still advances batch by batch, in order, and
// resuming works exactly as without the overlap.
type flight struct {
	inserts map[insertKey]*insert
	rows    int
	bytes   int
	// progress is each partition's last record in the flight.
	progress   map[topicPartition]kgo.EpochOffset
	firstDirty time.Time
	cancel     context.CancelFunc // stops the flight (its partitions were lost)
	done       chan struct{}
	err        error // read after done is closed
}

// startFlushLocked seals the batch and starts storing it in the
// background; joinLocked waits for it and applies the outcome. The
// caller has joined the previous flight.
func (p *Projector) startFlushLocked(ctx context.Context, cl *kgo.Client, mode retryMode) {
	if p.rows == 0 && !p.anyDirtyLocked() {
		p.firstDirty = time.Time{}
		p.delay.flushed()
		return
	}
	f := &flight{
		inserts:    p.inserts,
		rows:       p.rows,
		bytes:      p.bytes,
		progress:   map[topicPartition]kgo.EpochOffset{},
		firstDirty: p.firstDirty,
		done:       make(chan struct{}),
	}
	for tp, st := range p.parts {
		if st.dirty {
			f.progress[tp] = st.last
			st.dirty = false
		}
	}
	p.inserts = make(map[insertKey]*insert)
	p.rows, p.bytes = 0, 0
	p.firstDirty = time.Time{}
	p.delay.sealed()
	p.flight = f
	fctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	go func() {
		defer close(f.done)
		defer cancel()
		f.err = p.storeFlight(fctx, cl, f, mode)
	}()
}

// joinLocked waits for the flight, if any. Stored: the partitions'
// progress moves on. Failed: its unstored rows go back in front of the
// batch and its partitions are dirty again, as if it had never been
// sealed, and its error is returned.
func (p *Projector) joinLocked() error {
	f := p.flight
	if f == nil {
		return nil
	}
	<-f.done
	p.flight = nil
	if f.err == nil {
		for tp, last := range f.progress {
			st := p.parts[tp]
			if st == nil {
				continue
			}
			st.progress = last.Offset
			// Everything up to progress is stored: the partial-batch
			// marks below it are no longer needed.
			for k, off := range st.stored {
				if off <= st.progress {
					delete(st.stored, k)
				}
			}
		}
		return nil
	}
	for k, g := range f.inserts {
		if cur := p.inserts[k]; cur != nil {
			cur.rows = slices.Concat(g.rows, cur.rows)
			cur.uncertain = cur.uncertain || g.uncertain
		} else {
			p.inserts[k] = g
		}
		p.rows += len(g.rows)
	}
	p.bytes += f.bytes
	for tp := range f.progress {
		if st := p.parts[tp]; st != nil {
			st.dirty = true
		}
	}
	if p.firstDirty.IsZero() || (!f.firstDirty.IsZero() && f.firstDirty.Before(p.firstDirty)) {
		p.firstDirty = f.firstDirty
	}
	p.delay.flightFailed()
	return f.err
}

// reapLocked joins the flight if it has finished, without waiting.
func (p *Projector) reapLocked() error {
	if p.flight == nil {
		return nil
	}
	select {
	case <-p.flight.done:
		return p.joinLocked()
	default:
		return nil
	}
}

// storeFlight stores a flight: every (table, day) group, then the
// progress, then the consumer group commit. It runs without the lock and
// touches only the flight and the projector's atomic parts.
func (p *Projector) storeFlight(ctx context.Context, cl *kgo.Client, f *flight, mode retryMode) error {
	began, rows := time.Now(), f.rows
	keys := make([]insertKey, 0, len(f.inserts))
	for k := range f.inserts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b insertKey) int {
		return cmp.Or(cmp.Compare(a.table, b.table), cmp.Compare(a.day, b.day))
	})
	if err := p.storeGroups(ctx, f, keys, mode); err != nil {
		return err
	}
	if len(f.progress) == 0 {
		p.delay.flightStored()
		return nil
	}
	progress := map[string]map[int32]int64{}
	commit := map[string]map[int32]kgo.EpochOffset{}
	for tp, last := range f.progress {
		if progress[tp.topic] == nil {
			progress[tp.topic] = map[int32]int64{}
			commit[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		progress[tp.topic][tp.partition] = last.Offset
		commit[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: last.Epoch, Offset: last.Offset + 1}
	}
	err := p.retry(ctx, "save progress", mode, func(ctx context.Context) error {
		return SaveProgress(ctx, p.conn, p.cfg.Database, progress)
	})
	if err != nil {
		return err
	}
	p.stats.batches.Add(1)
	p.delay.flightStored()
	p.commit(ctx, cl, commit)
	p.log.Debug("batch stored", "rows", rows, "inserts", len(keys), "took", time.Since(began))
	return nil
}
