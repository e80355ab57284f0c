package analytics

import (
	"context"
	"errors"
	"sync"

	"github.com/pushlog/pushlog/schema/group"
	"github.com/twmb/franz-go/pkg/kgo"
)

// flushLocked stores the batch and waits until it is stored: first any
// flight, then the batch itself. Each statement is retried as mode says.
func (p *Projector) flushLocked(ctx context.Context, cl *kgo.Client, mode retryMode) error {
	if err := p.joinLocked(); err != nil {
		return err
	}
	p.startFlushLocked(ctx, cl, mode)
	return p.joinLocked()
}

// flushAsyncLocked waits for the previous flight, then starts storing the
// batch in the background: the poll loop goes on collecting the next one.
func (p *Projector) flushAsyncLocked(ctx context.Context, cl *kgo.Client) error {
	if err := p.joinLocked(); err != nil {
		return err
	}
	p.startFlushLocked(ctx, cl, retryUntilRebalance)
	return nil
}

// storeGroups inserts a flight's groups side by side: a ClickHouse insert
// costs mostly its fixed part-writing time, so overlapping them shortens a
// batch. Each group is atomic on its own and the progress follows them all,
// so the order does not matter. Stored groups leave f.inserts; the others
// stay with what is still unstored.
func (p *Projector) storeGroups(ctx context.Context, f *flight, keys []insertKey, mode retryMode) error {
	type result struct {
		g   insert // what is still unstored
		err error
	}
	results := make([]result, len(keys))
	sem := make(chan struct{}, parallelInserts)
	var wg sync.WaitGroup
	for i, k := range keys {
		g := *f.inserts[k]
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
		f.rows -= len(f.inserts[k].rows) - len(r.g.rows)
		if r.err != nil {
			*f.inserts[k] = r.g
			errs = append(errs, r.err)
			continue
		}
		delete(f.inserts, k)
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
