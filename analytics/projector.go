package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/group"
)

// Projector writes one ClickHouse row per pushlog event.
//
// Exactly once into ClickHouse, whatever happens to the process, Kafka or
// ClickHouse:
//   - every row carries its record's partition and offset;
//   - rows of a batch are inserted per (table, UTC day), one block each, and
//     ClickHouse stores a one-partition block atomically;
//   - only after every row of a batch is stored, the batch's last offset per
//     partition is recorded in the kafka_progress table (then, for lag
//     tools, committed to the consumer group);
//   - on assignment the projector reads that progress and resumes after it
//     (ClickHouse, not the group, decides where to resume), and reads the
//     largest offset stored per (table, partition, day) beyond it, skipping
//     records at or below it: those are rows of a batch that was cut short;
//   - an insert whose outcome is unknown (the connection broke) is retried
//     only for the rows ClickHouse does not have;
//   - a batch is stored while the next one is collected (projector_flight.go),
//     but only one at a time: a batch's progress is recorded after its own
//     rows and after the previous batch's progress;
//   - before reading what is stored, it waits until no insert of this
//     database is still running on the server (WaitForInserts):
//     an insert whose client gave up or died can still complete, and would
//     otherwise be counted twice.
//
// A circuit breaker wraps ClickHouse. While it fails, the projector stops
// polling (Kafka keeps the records), retries with back-off and catches up
// when ClickHouse answers again. If the group wants to rebalance meanwhile,
// the projector gives up its unstored rows, rewinds to its progress and lets
// the rebalance go on (a revocation tries once to store the batch, never
// retries), so a member that lost a partition never writes to it.
type Projector struct {
	cfg ProjectorConfig
	log *slog.Logger
	cb  *gobreaker.CircuitBreaker[struct{}]

	conn   driver.Conn // set by Run
	member *group.Member

	mu         sync.Mutex
	parts      map[topicPartition]*partitionState
	inserts    map[insertKey]*insert
	rows       int
	bytes      int       // estimated memory of the batch's rows (Row.memSize)
	firstDirty time.Time // when the oldest unwritten record was added; zero when none
	flight     *flight   // the sealed batch being stored, if any

	rebalanceWanted atomic.Bool
	failing         atomic.Bool // the last ClickHouse operation failed
	stats           projectorCounters
	delay           eventDelay // pushlog_projector_delay_seconds (metrics.go)
}

type topicPartition struct {
	topic     string
	partition int32
}

// insertKey is one insert: a table's rows of one UTC day.
type insertKey struct {
	table string
	day   int32
}

// insert is the unstored rows of one insert.
type insert struct {
	rows []Row
	// uncertain: an insert of these rows failed, possibly after ClickHouse
	// stored them; ask before inserting again. It outlives the flush that
	// failed: a shutdown or revocation may try again.
	uncertain bool
}

// partitionState is what the projector knows of one owned partition.
type partitionState struct {
	loaded   bool
	progress int64 // last offset fully projected (kafka_progress); -1 none
	// stored is the largest offset ClickHouse has per (table, day) above
	// progress: rows of a batch whose progress was never recorded.
	stored map[insertKey]int64
	// last is the last record added since progress was saved.
	last  kgo.EpochOffset
	dirty bool
	// firstSeen is the first offset read while progress < 0: where to
	// rewind when the batch is given up. -1 when none.
	firstSeen int64
}

// rewindTo is where consumption restarts when unstored rows are given up.
func (st *partitionState) rewindTo() (int64, bool) {
	if st.progress >= 0 {
		return st.progress + 1, true
	}
	return st.firstSeen, st.firstSeen >= 0
}

type projectorCounters struct {
	records, rows, skipped, undecodable, batches, failures atomic.Int64
}

// ProjectorStats counts what a projector did.
type ProjectorStats struct {
	Records     int64 // records polled
	Rows        int64 // rows stored in ClickHouse
	Skipped     int64 // records already stored (replayed) or without a table
	Undecodable int64 // corrupt records and events of unknown types
	Batches     int64 // batches completely stored
	Failures    int64 // ClickHouse operations that failed (and were retried)
}

// Stats returns the projector's counters.
func (p *Projector) Stats() ProjectorStats {
	return ProjectorStats{
		Records:     p.stats.records.Load(),
		Rows:        p.stats.rows.Load(),
		Skipped:     p.stats.skipped.Load(),
		Undecodable: p.stats.undecodable.Load(),
		Batches:     p.stats.batches.Load(),
		Failures:    p.stats.failures.Load(),
	}
}

// parallelInserts is how many inserts of one batch run at once.
const parallelInserts = 4

// NewProjector validates cfg and returns a projector; Run starts it.
func NewProjector(cfg ProjectorConfig) (*Projector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Projector{
		cfg:     cfg,
		log:     cfg.Logger.With("role", "analytics-projector", "group", cfg.Group, "db", cfg.Database),
		parts:   make(map[topicPartition]*partitionState),
		inserts: make(map[insertKey]*insert),
	}
	p.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "clickhouse",
		MaxRequests: 1,
		Timeout:     cfg.RetryMax,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
		// Our own shutdown is not ClickHouse failing.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			// Open and half-open alternate while ClickHouse is down; only
			// the way in and the way out are worth a line.
			switch {
			case from == gobreaker.StateClosed:
				p.log.Warn("clickhouse circuit breaker opened: consumption paused")
			case to == gobreaker.StateClosed:
				p.log.Info("clickhouse circuit breaker closed: consumption resumed")
			}
		},
	})
	if err := register(cfg.Metrics, p.collectors()...); err != nil {
		return nil, fmt.Errorf("analytics projector: %w", err)
	}
	m, err := p.newMember()
	if err != nil {
		return nil, fmt.Errorf("analytics projector: %w", err)
	}
	p.member = m
	return p, nil
}

// Run joins the consumer group and projects until ctx is canceled; then it
// tries once more (briefly) to store what it has and returns nil. Rows it
// could not store are projected again by the next run.
func (p *Projector) Run(ctx context.Context) error {
	conn := p.cfg.Conn
	if conn == nil {
		var err error
		conn, err = p.openConn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer conn.Close()
	}
	p.conn = conn
	if !p.cfg.SkipMigrate {
		err := p.retry(ctx, "migrate", retryForever, func(ctx context.Context) error {
			return Migrate(ctx, conn, p.cfg.Database)
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("analytics projector: %w", err)
		}
	}
	err := p.member.Run(ctx)
	// No insert of ours outlives Run.
	p.mu.Lock()
	_ = p.joinLocked()
	p.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("analytics projector: %w", err)
	}
	return nil
}

// newMember is the projector's consumer-group member: ClickHouse, not the
// group's commit, says where each partition resumes (adjustOffsets), and
// a rebalance waiting for a failing batch lets it give up (Blocked).
func (p *Projector) newMember() (*group.Member, error) {
	return group.New(group.Config{
		ClientOpts: p.cfg.ClientOpts,
		Group:      p.cfg.Group,
		Topics:     p.realTopics(),
		MaxRecords: p.cfg.BatchRows,
		Wait:       p.pollWait,
		Fold:       p.fold,
		Stop:       func(ctx context.Context, cl *kgo.Client, _ kgo.Fetches) { p.shutdownFlush(ctx, cl) },
		Adjust:     p.adjustOffsets,
		Revoked:    p.onRevoked,
		Lost:       p.onLost,
		Blocked:    func() { p.rebalanceWanted.Store(true) },
		Logger:     p.log,
	})
}

// openConn dials ClickHouse, waiting (with back-off) while it is down.
func (p *Projector) openConn(ctx context.Context) (driver.Conn, error) {
	var conn driver.Conn
	err := p.retry(ctx, "connect", retryForever, func(ctx context.Context) error {
		c, err := Open(ctx, p.cfg.Addr, p.cfg.Database)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("analytics projector: %w", err)
	}
	return conn, nil
}

// fold adds a poll's records to the batch; when ClickHouse fails while a
// rebalance waits, it gives up the unstored rows so the rebalance goes on.
func (p *Projector) fold(ctx context.Context, cl *kgo.Client, fetches kgo.Fetches) error {
	err := p.process(ctx, cl, fetches)
	if errors.Is(err, errAbandon) {
		p.log.Warn("giving up unstored rows for a rebalance; they are read again")
		p.abandon(cl)
		err = nil
	}
	p.rebalanceWanted.Store(false)
	return err
}

// pollWait is how long a poll may wait: until the pending batch is due.
func (p *Projector) pollWait() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstDirty.IsZero() {
		return p.cfg.BatchInterval
	}
	return time.Until(p.firstDirty.Add(p.cfg.BatchInterval))
}

// process adds a poll's records to the batch and starts storing the batch
// when it is full or due. The previous batch may still be being stored
// meanwhile (a flight); a full batch waits for it.
func (p *Projector) process(ctx context.Context, cl *kgo.Client, fetches kgo.Fetches) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// While ClickHouse fails, wait for the flight instead of collecting
	// more: Kafka keeps the records.
	if p.flight != nil && p.failing.Load() {
		if err := p.joinLocked(); err != nil {
			return err
		}
	}
	if err := p.reapLocked(); err != nil {
		return err
	}
	// Note where each partition's records begin before any is processed:
	// if the batch is given up halfway, the unprocessed ones must be read
	// again too.
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) > 0 {
			p.stateLocked(topicPartition{ftp.Topic, ftp.Partition}, ftp.Records[0].Offset)
		}
	})
	var err error
	fetches.EachRecord(func(rec *kgo.Record) {
		if err != nil {
			return
		}
		if err = p.addLocked(ctx, rec); err != nil {
			return
		}
		if p.rows >= p.cfg.BatchRows || p.bytes >= p.cfg.BatchBytes {
			err = p.flushAsyncLocked(ctx, cl)
		}
	})
	if err != nil {
		return err
	}
	if !p.firstDirty.IsZero() && time.Since(p.firstDirty) >= p.cfg.BatchInterval {
		return p.flushAsyncLocked(ctx, cl)
	}
	return nil
}

// addLocked maps one record to a row and adds it to the batch unless
// ClickHouse already has it.
func (p *Projector) addLocked(ctx context.Context, rec *kgo.Record) error {
	p.stats.records.Add(1)
	tp := topicPartition{rec.Topic, rec.Partition}
	st := p.stateLocked(tp, rec.Offset)
	if !st.loaded {
		if err := p.loadLocked(ctx, tp.topic, []int32{tp.partition}); err != nil {
			return err
		}
		st = p.parts[tp]
	}
	if rec.Offset <= st.progress {
		p.stats.skipped.Add(1)
		return nil
	}
	if row, ok := p.rowOf(ctx, rec); ok {
		key := insertKey{row.Table, row.Day()}
		if stored, ok := st.stored[key]; ok && rec.Offset <= stored {
			p.stats.skipped.Add(1)
		} else {
			g := p.inserts[key]
			if g == nil {
				g = &insert{}
				p.inserts[key] = g
			}
			g.rows = append(g.rows, row)
			p.rows++
			p.bytes += row.memSize()
		}
	}
	// Even a record without a row moves the progress on.
	st.last = kgo.EpochOffset{Epoch: rec.LeaderEpoch, Offset: rec.Offset}
	st.dirty = true
	p.delay.added(rec.Timestamp.UnixMilli())
	if p.firstDirty.IsZero() {
		p.firstDirty = time.Now()
	}
	return nil
}

// stateLocked returns the state of a partition whose records begin at
// first in this poll, noting first as the rewind point while nothing of the
// partition is stored.
func (p *Projector) stateLocked(tp topicPartition, first int64) *partitionState {
	st := p.parts[tp]
	if st == nil {
		// Not expected (assignment loads every partition), but if it
		// happens, the state is loaded before use and a rewind goes here.
		st = &partitionState{progress: -1, firstSeen: first}
		p.parts[tp] = st
	}
	if st.progress < 0 && (st.firstSeen < 0 || first < st.firstSeen) {
		st.firstSeen = first
	}
	return st
}

// rowOf decodes a record and maps it to its row; false for records that
// have none (counted and logged).
func (p *Projector) rowOf(ctx context.Context, rec *kgo.Record) (Row, bool) {
	if rec.Value == nil {
		p.stats.skipped.Add(1) // a compaction tombstone: no event
		return Row{}, false
	}
	if row, ok := acceptedRow(rec); ok {
		return p.onItsTopic(rec, row, "message_accepted")
	}
	ev, err := schema.Decode(rec)
	if err != nil {
		p.stats.undecodable.Add(1)
		level := slog.LevelWarn
		if errors.Is(err, schema.ErrUnknownType) {
			level = slog.LevelDebug // a newer writer's event: expected during upgrades
		}
		p.log.Log(ctx, level, "skipping undecodable record",
			"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return Row{}, false
	}
	row, ok := EventRow(rec, ev)
	if !ok {
		p.stats.skipped.Add(1)
		return Row{}, false
	}
	return p.onItsTopic(rec, row, schema.TypeName(ev))
}

// onItsTopic passes a row whose table is fed by the record's topic.
func (p *Projector) onItsTopic(rec *kgo.Record, row Row, typeName string) (Row, bool) {
	if t, _ := LookupTable(row.Table); p.realTopic(t.Topic) != rec.Topic {
		// Resume positions are per topic: a row from another topic's
		// table could be counted twice, so it is refused.
		p.stats.skipped.Add(1)
		p.log.Warn("skipping event on the wrong topic", "type", typeName,
			"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset)
		return Row{}, false
	}
	return row, true
}

// The analytics tables name the default topics; a namespaced deployment
// consumes its own topics, so names are translated at the edges and the
// projector works with the real (consumed) names throughout.

// realTopics are the consumed topics in the configured namespace.
func (p *Projector) realTopics() []string {
	var out []string
	for _, t := range Topics() {
		out = append(out, p.realTopic(t))
	}
	return out
}

// realTopic maps a default topic name to the configured namespace.
func (p *Projector) realTopic(logical string) string {
	return p.cfg.Names.FromDefault(logical)
}

// logicalTopic maps a consumed topic back to its default name.
func (p *Projector) logicalTopic(real string) string { return p.cfg.Names.ToDefault(real) }
