package analytics

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/pushlog/pushlog/schema/group"
	"github.com/twmb/franz-go/pkg/kgo"
)

// flushLocked stores the batch: every (table, day) group, then the
// progress, then the consumer group commit. Each statement is retried as
// mode says.
func (p *Projector) flushLocked(ctx context.Context, cl *kgo.Client, mode retryMode) error {
	began, rows := time.Now(), p.rows
	keys := make([]insertKey, 0, len(p.inserts))
	for k := range p.inserts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].table != keys[j].table {
			return keys[i].table < keys[j].table
		}
		return keys[i].day < keys[j].day
	})
	if err := p.storeGroupsLocked(ctx, keys, mode); err != nil {
		return err
	}
	progress := map[string]map[int32]int64{}
	commit := map[string]map[int32]kgo.EpochOffset{}
	for tp, st := range p.parts {
		if !st.dirty {
			continue
		}
		if progress[tp.topic] == nil {
			progress[tp.topic] = map[int32]int64{}
			commit[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		progress[tp.topic][tp.partition] = st.last.Offset
		commit[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: st.last.Epoch, Offset: st.last.Offset + 1}
	}
	if len(progress) > 0 {
		err := p.retry(ctx, "save progress", mode, func(ctx context.Context) error {
			return SaveProgress(ctx, p.conn, p.cfg.Database, progress)
		})
		if err != nil {
			return err
		}
		for _, st := range p.parts {
			if st.dirty {
				st.progress = st.last.Offset
				st.dirty = false
				// Everything up to progress is stored: the partial-batch
				// marks below it are no longer needed.
				for k, off := range st.stored {
					if off <= st.progress {
						delete(st.stored, k)
					}
				}
			}
		}
		p.stats.batches.Add(1)
		p.commit(ctx, cl, commit)
		p.log.Debug("batch stored", "rows", rows, "inserts", len(keys), "took", time.Since(began))
	}
	p.firstDirty = time.Time{}
	p.delay.flushed()
	return nil
}

// storeGroupsLocked inserts the groups side by side: a ClickHouse insert
// costs mostly its fixed part-writing time, so overlapping them shortens a
// batch. Each group is atomic on its own and the progress follows them all,
// so the order does not matter.
func (p *Projector) storeGroupsLocked(ctx context.Context, keys []insertKey, mode retryMode) error {
	type result struct {
		g   insert // what is still unstored
		err error
	}
	results := make([]result, len(keys))
	sem := make(chan struct{}, parallelInserts)
	var wg sync.WaitGroup
	for i, k := range keys {
		g := *p.inserts[k]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i].g, results[i].err = p.storeGroup(ctx, k, g, mode)
		}()
	}
	wg.Wait()
	var errs []error
	for i, k := range keys {
		r := results[i]
		p.rows -= len(p.inserts[k].rows) - len(r.g.rows)
		if r.err != nil {
			*p.inserts[k] = r.g
			errs = append(errs, r.err)
			continue
		}
		delete(p.inserts, k)
	}
	for _, err := range errs {
		if errors.Is(err, errAbandon) {
			return err
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// storeGroup inserts one (table, day) group and returns what it could not
// store. After a failed attempt it asks ClickHouse which of the rows it
// has (the insert may have been stored before the connection broke) and
// inserts the rest only.
func (p *Projector) storeGroup(ctx context.Context, k insertKey, g insert, mode retryMode) (insert, error) {
	err := p.retry(ctx, "insert into "+k.table, mode, func(ctx context.Context) error {
		if g.uncertain {
			kept, err := p.unstored(ctx, k, g.rows)
			if err != nil {
				return err
			}
			g = insert{rows: kept}
		}
		if len(g.rows) == 0 {
			return nil
		}
		if err := InsertRows(ctx, p.conn, p.cfg.Database, k.table, g.rows); err != nil {
			g.uncertain = true
			return err
		}
		p.stats.rows.Add(int64(len(g.rows)))
		g = insert{}
		return nil
	})
	return g, err
}

// unstored returns the rows of a group that ClickHouse does not have.
func (p *Projector) unstored(ctx context.Context, k insertKey, rows []Row) ([]Row, error) {
	if err := WaitForInserts(ctx, p.conn, p.cfg.Database); err != nil {
		return nil, err
	}
	after := map[int32]int64{}
	for _, r := range rows {
		if cur, ok := after[r.Partition]; !ok || r.Offset-1 < cur {
			after[r.Partition] = r.Offset - 1
		}
	}
	stored, err := MaxStoredOffsets(ctx, p.conn, p.cfg.Database, k.table, after)
	if err != nil {
		return nil, err
	}
	kept := rows[:0:0]
	for _, r := range rows {
		if off, ok := stored[StoredKey{Partition: r.Partition, Day: k.day}]; ok && r.Offset <= off {
			continue
		}
		kept = append(kept, r)
	}
	if n := len(rows) - len(kept); n > 0 {
		p.log.Info("an insert that reported failure was stored; not repeating it", "table", k.table, "rows", n)
	}
	return kept, nil
}

// commit records the stored offsets in the consumer group, for lag tools;
// resuming relies on kafka_progress, so a failed commit is only logged.
func (p *Projector) commit(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) {
	if err := group.Commit(ctx, cl, offsets); err != nil && ctx.Err() == nil {
		p.log.Warn("commit offsets", "err", err)
	}
}
