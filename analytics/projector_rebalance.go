package analytics

import (
	"context"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// adjustOffsets runs when partitions are assigned: it loads their progress
// and partial-batch marks from ClickHouse (waiting while it is down) and
// starts each partition after its progress.
func (p *Projector) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, parts := range offsets {
		ps := make([]int32, 0, len(parts))
		for part := range parts {
			ps = append(ps, part)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		loaded, err := p.loadStates(ctx, topic, ps, retryForever)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		for part, st := range loaded {
			p.parts[topicPartition{topic, part}] = st
			switch {
			case st.progress >= 0:
				parts[part] = kgo.NewOffset().At(st.progress + 1)
			case !p.cfg.StartAfter.IsZero():
				parts[part] = kgo.NewOffset().AfterMilli(p.cfg.StartAfter.UnixMilli())
			default:
				// Nothing of this partition is in this database yet: the
				// database, not the group's commit, says where to begin.
				parts[part] = kgo.NewOffset().AtStart()
			}
		}
		p.mu.Unlock()
		p.log.Info("partitions assigned", "topic", topic, "partitions", ps)
	}
	return offsets, nil
}

// loadLocked (re)loads partition states while holding mu, for records of a
// partition whose state was given up.
func (p *Projector) loadLocked(ctx context.Context, topic string, parts []int32) error {
	loaded, err := p.loadStates(ctx, topic, parts, retryUntilRebalance)
	if err != nil {
		return err
	}
	for part, st := range loaded {
		tp := topicPartition{topic, part}
		if old := p.parts[tp]; old != nil {
			st.firstSeen = old.firstSeen // this poll's records still begin there
		}
		p.parts[tp] = st
	}
	return nil
}

// loadStates reads progress and partial-batch marks of partitions.
func (p *Projector) loadStates(ctx context.Context, topic string, parts []int32, mode retryMode) (map[int32]*partitionState, error) {
	out := map[int32]*partitionState{}
	err := p.retry(ctx, "load progress of "+topic, mode, func(ctx context.Context) error {
		// An insert a previous owner started may still be running.
		if err := WaitForInserts(ctx, p.conn, p.cfg.Database); err != nil {
			return err
		}
		progress, err := Progress(ctx, p.conn, p.cfg.Database, topic, parts)
		if err != nil {
			return err
		}
		after := map[int32]int64{}
		for _, part := range parts {
			st := &partitionState{loaded: true, progress: -1, firstSeen: -1, stored: map[insertKey]int64{}}
			if off, ok := progress[part]; ok {
				st.progress = off
			}
			out[part] = st
			after[part] = st.progress
		}
		for _, table := range TablesOf(p.logicalTopic(topic)) {
			stored, err := MaxStoredOffsets(ctx, p.conn, p.cfg.Database, table, after)
			if err != nil {
				return err
			}
			for k, off := range stored {
				out[k.Partition].stored[insertKey{table, k.Day}] = off
			}
		}
		return nil
	})
	return out, err
}

// onRevoked stores what it can of the revoked partitions (one attempt,
// briefly: the next owner redoes whatever is not stored) and forgets them.
func (p *Projector) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.settleFlightLocked(false)
	// While ClickHouse is failing, do not hold up the rebalance trying:
	// skip when the last operation failed, and never retry (failing is
	// cleared by a progress load even while inserts still fail).
	if (p.rows > 0 || p.anyDirtyLocked()) && !p.failing.Load() {
		fctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
		err := p.flushLocked(fctx, cl, retryOnce)
		cancel()
		if err != nil {
			p.log.Warn("could not store the batch before giving up partitions; the next owner projects them", "err", err)
		}
	}
	p.dropLocked(revoked)
}

// onLost forgets lost partitions without writing: another member may own
// them already.
func (p *Projector) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.settleFlightLocked(true)
	p.dropLocked(lost)
}

// settleFlightLocked waits for the flight before a rebalance moves
// partitions: no insert of ours may still run for a partition another
// member owns. A flight that is failing gives up (its rows go back to the
// batch) rather than hold up the rebalance. When partitions were lost
// (another member may own them already), the flight is cancelled rather
// than finished: none of its inserts or its progress starts after the
// loss is known (what it stored is found by the next owner's load; its
// rows of partitions still ours go back to the batch, uncertain).
func (p *Projector) settleFlightLocked(lost bool) {
	if p.flight == nil {
		return
	}
	if lost {
		p.flight.cancel()
	}
	p.rebalanceWanted.Store(true)
	if err := p.joinLocked(); err != nil {
		p.log.Warn("the batch being stored failed before a rebalance", "err", err)
	}
	p.rebalanceWanted.Store(false)
}

func (p *Projector) anyDirtyLocked() bool {
	for _, st := range p.parts {
		if st.dirty {
			return true
		}
	}
	return false
}

// dropLocked forgets partitions and their unstored rows.
func (p *Projector) dropLocked(parts map[string][]int32) {
	gone := map[topicPartition]bool{}
	for topic, ps := range parts {
		for _, part := range ps {
			tp := topicPartition{topic, part}
			gone[tp] = true
			delete(p.parts, tp)
		}
	}
	for k, g := range p.inserts {
		rows := g.rows
		kept := rows[:0]
		for _, r := range rows {
			if t, ok := LookupTable(r.Table); !ok || !gone[topicPartition{p.realTopic(t.Topic), r.Partition}] {
				kept = append(kept, r)
			} else {
				p.bytes -= r.memSize()
			}
		}
		p.rows -= len(rows) - len(kept)
		if len(kept) == 0 {
			delete(p.inserts, k)
		} else {
			g.rows = kept
		}
	}
	if p.rows == 0 && !p.anyDirtyLocked() {
		p.rows, p.bytes = 0, 0
		p.firstDirty = time.Time{}
		p.delay.dropped()
	}
}

// abandon gives up every unstored row and rewinds each partition to just
// after its progress; the states are reloaded before more records are
// added, since part of the batch may have been stored.
func (p *Projector) abandon(cl *kgo.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A flight still running gives up too (a rebalance is wanted); one
	// that stored its rows moves the progress the rewind goes back to.
	_ = p.joinLocked()
	rewind := map[string]map[int32]kgo.EpochOffset{}
	for tp, st := range p.parts {
		if off, ok := st.rewindTo(); ok {
			if rewind[tp.topic] == nil {
				rewind[tp.topic] = map[int32]kgo.EpochOffset{}
			}
			rewind[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
		}
		st.loaded = false
		st.dirty = false
		st.stored = nil
	}
	p.inserts = make(map[insertKey]*insert)
	p.rows, p.bytes = 0, 0
	p.firstDirty = time.Time{}
	p.delay.dropped()
	cl.SetOffsets(rewind)
}

// shutdownFlush tries once more, briefly, to store the batch when Run ends.
func (p *Projector) shutdownFlush(ctx context.Context, cl *kgo.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A flight cut short by the end of ctx leaves its rows to this flush.
	if err := p.joinLocked(); err != nil && ctx.Err() == nil {
		p.log.Warn("the batch being stored failed at shutdown", "err", err)
	}
	if p.rows == 0 && !p.anyDirtyLocked() {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := p.flushLocked(fctx, cl, retryUntilRebalance); err != nil {
		p.log.Warn("stopping with an unstored batch; the next run projects it", "rows", p.rows, "err", err)
	}
}
