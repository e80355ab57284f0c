package projector

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/metrics"
	"github.com/pushlog/pushlog/schema/pb"
)

// AnalyticsDefaultGroup is the consumer group of the analytics projector.
const AnalyticsDefaultGroup = "pushlog-analytics"

// Defaults of AnalyticsConfig.
const (
	AnalyticsDefaultBatchRows     = 10000
	AnalyticsDefaultBatchInterval = time.Second
	AnalyticsDefaultRetryMax      = 5 * time.Second
	AnalyticsDefaultOpTimeout     = 30 * time.Second
)

// AnalyticsConfig configures an AnalyticsProjector.
type AnalyticsConfig struct {
	// ClientOpts connect to Kafka (seed brokers, TLS, SASL, logger). The
	// projector adds its own consumer options to them.
	ClientOpts []kgo.Opt
	// Conn is the ClickHouse connection; when nil, Run opens Addr (host:port
	// of the native protocol) and closes it when it returns.
	Conn driver.Conn
	Addr string
	// Database holds the analytics tables; empty means analytics.DefaultDatabase.
	Database string
	// Group is the consumer group; empty means AnalyticsDefaultGroup.
	Group string
	// BatchRows and BatchInterval bound a batch: it is written when it has
	// BatchRows rows or its first record is BatchInterval old.
	BatchRows     int
	BatchInterval time.Duration
	// RetryMax caps the back-off between ClickHouse retries (default 5 s).
	RetryMax time.Duration
	// OpTimeout bounds one ClickHouse statement (default 30 s).
	OpTimeout time.Duration
	// StartAfter is where a partition starts when the database has nothing
	// of it yet: its first record produced at or after this time. Zero
	// means the start of the log (a new database gets the whole history
	// Kafka still has).
	StartAfter time.Time
	// SkipMigrate leaves the schema alone; by default Run applies
	// analytics.Migrate first (idempotent).
	SkipMigrate bool
	Logger      *slog.Logger
	// Metrics registers the projector's series (batches, records, rows,
	// failures, ClickHouse breaker state); nil: no metrics.
	Metrics prometheus.Registerer
	// Names are the topic names; zero means schema.DefaultNames().
	Names schema.Names
}

// AnalyticsProjector writes one ClickHouse row per pushlog event.
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
//   - before reading what is stored, it waits until no insert of this
//     database is still running on the server (analytics.WaitForInserts):
//     an insert whose client gave up or died can still complete, and would
//     otherwise be counted twice.
//
// A circuit breaker wraps ClickHouse. While it fails, the projector stops
// polling (Kafka keeps the records), retries with back-off and catches up
// when ClickHouse answers again. If the group wants to rebalance meanwhile,
// the projector gives up its unstored rows, rewinds to its progress and lets
// the rebalance go on (a revocation tries once to store the batch, never
// retries), so a member that lost a partition never writes to it.
type AnalyticsProjector struct {
	cfg AnalyticsConfig
	log *slog.Logger
	cb  *gobreaker.CircuitBreaker[struct{}]

	conn driver.Conn // set by Run

	mu         sync.Mutex
	parts      map[analyticsTP]*analyticsPartition
	groups     map[analyticsGroupKey]*analyticsGroup
	rows       int
	firstDirty time.Time // when the oldest unwritten record was added; zero when none

	rebalanceWanted atomic.Bool
	failing         atomic.Bool // the last ClickHouse operation failed
	stats           analyticsCounters
}

type analyticsTP struct {
	topic     string
	partition int32
}

// analyticsGroupKey is one insert: a table's rows of one UTC day.
type analyticsGroupKey struct {
	table string
	day   int32
}

// analyticsGroup is the unstored rows of one insert.
type analyticsGroup struct {
	rows []analytics.Row
	// uncertain: an insert of these rows failed, possibly after ClickHouse
	// stored them; ask before inserting again. It outlives the flush that
	// failed: a shutdown or revocation may try again.
	uncertain bool
}

// analyticsPartition is what the projector knows of one owned partition.
type analyticsPartition struct {
	loaded   bool
	progress int64 // last offset fully projected (kafka_progress); -1 none
	// stored is the largest offset ClickHouse has per (table, day) above
	// progress: rows of a batch whose progress was never recorded.
	stored map[analyticsGroupKey]int64
	// last is the last record added since progress was saved.
	last  kgo.EpochOffset
	dirty bool
	// firstSeen is the first offset read while progress < 0: where to
	// rewind when the batch is given up. -1 when none.
	firstSeen int64
}

// rewindTo is where consumption restarts when unstored rows are given up.
func (st *analyticsPartition) rewindTo() (int64, bool) {
	if st.progress >= 0 {
		return st.progress + 1, true
	}
	return st.firstSeen, st.firstSeen >= 0
}

type analyticsCounters struct {
	records, rows, skipped, undecodable, batches, failures atomic.Int64
}

// AnalyticsStats counts what a projector did.
type AnalyticsStats struct {
	Records     int64 // records polled
	Rows        int64 // rows stored in ClickHouse
	Skipped     int64 // records already stored (replayed) or without a table
	Undecodable int64 // corrupt records and events of unknown types
	Batches     int64 // batches completely stored
	Failures    int64 // ClickHouse operations that failed (and were retried)
}

// Stats returns the projector's counters.
func (p *AnalyticsProjector) Stats() AnalyticsStats {
	return AnalyticsStats{
		Records:     p.stats.records.Load(),
		Rows:        p.stats.rows.Load(),
		Skipped:     p.stats.skipped.Load(),
		Undecodable: p.stats.undecodable.Load(),
		Batches:     p.stats.batches.Load(),
		Failures:    p.stats.failures.Load(),
	}
}

// analyticsParallelInserts is how many inserts of one batch run at once.
const analyticsParallelInserts = 4

// analyticsShutdownTimeout bounds the last flush when Run is stopped or
// partitions are revoked.
const analyticsShutdownTimeout = 5 * time.Second

// errAnalyticsAbandon means a rebalance is waiting while ClickHouse fails:
// the unstored rows are given up and re-read after the rebalance.
var errAnalyticsAbandon = errors.New("analytics projector: rebalance requested while ClickHouse is failing")

// analyticsRetry says how long a ClickHouse operation is retried.
type analyticsRetry int

const (
	// analyticsRetryForever retries until success or ctx ends: start-up
	// and assignment, which have nothing to give up.
	analyticsRetryForever analyticsRetry = iota
	// analyticsRetryUntilRebalance also stops (errAnalyticsAbandon) after
	// a failure when a rebalance is waiting: the poll loop, whose batch
	// can be re-read.
	analyticsRetryUntilRebalance
	// analyticsRetryOnce makes one attempt: a rebalance is under way and
	// the next owner redoes whatever is not stored.
	analyticsRetryOnce
)

// NewAnalyticsProjector validates cfg and returns a projector; Run starts it.
func NewAnalyticsProjector(cfg AnalyticsConfig) (*AnalyticsProjector, error) {
	if len(cfg.ClientOpts) == 0 {
		return nil, errors.New("analytics projector: no Kafka client options (seed brokers)")
	}
	if cfg.Conn == nil && cfg.Addr == "" {
		return nil, errors.New("analytics projector: no ClickHouse connection or address")
	}
	if cfg.Database == "" {
		cfg.Database = analytics.DefaultDatabase
	}
	if err := analytics.ValidateDatabase(cfg.Database); err != nil {
		return nil, fmt.Errorf("analytics projector: %w", err)
	}
	if cfg.Names.Messages == "" {
		cfg.Names = schema.DefaultNames()
	}
	if cfg.Group == "" {
		cfg.Group = cfg.Names.Group("analytics")
	}
	if cfg.BatchRows < 0 || cfg.BatchInterval < 0 || cfg.RetryMax < 0 || cfg.OpTimeout < 0 {
		return nil, errors.New("analytics projector: negative batch size, interval, back-off or timeout")
	}
	if cfg.BatchRows == 0 {
		cfg.BatchRows = AnalyticsDefaultBatchRows
	}
	if cfg.BatchInterval == 0 {
		cfg.BatchInterval = AnalyticsDefaultBatchInterval
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = AnalyticsDefaultRetryMax
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = AnalyticsDefaultOpTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &AnalyticsProjector{
		cfg:    cfg,
		log:    log.With("role", "analytics-projector", "group", cfg.Group, "db", cfg.Database),
		parts:  make(map[analyticsTP]*analyticsPartition),
		groups: make(map[analyticsGroupKey]*analyticsGroup),
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
	if err := metrics.Register(cfg.Metrics, p.collectors()...); err != nil {
		return nil, fmt.Errorf("analytics projector: %w", err)
	}
	return p, nil
}

// Run joins the consumer group and projects until ctx is canceled; then it
// tries once more (briefly) to store what it has and returns nil. Rows it
// could not store are projected again by the next run.
func (p *AnalyticsProjector) Run(ctx context.Context) error {
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
		err := p.retry(ctx, "migrate", analyticsRetryForever, func(ctx context.Context) error {
			return analytics.Migrate(ctx, conn, p.cfg.Database)
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("analytics projector: %w", err)
		}
	}
	cl, err := kgo.NewClient(append(slices.Clone(p.cfg.ClientOpts),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.realTopics()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// Callbacks run between polls, never during a batch.
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(p.adjustOffsets),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onLost),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { p.rebalanceWanted.Store(true) }),
	)...)
	if err != nil {
		return fmt.Errorf("analytics projector: consumer: %w", err)
	}
	defer cl.CloseAllowingRebalance()
	return p.loop(ctx, cl)
}

// openConn dials ClickHouse, waiting (with back-off) while it is down.
func (p *AnalyticsProjector) openConn(ctx context.Context) (driver.Conn, error) {
	var conn driver.Conn
	err := p.retry(ctx, "connect", analyticsRetryForever, func(ctx context.Context) error {
		c, err := analytics.Open(ctx, p.cfg.Addr, p.cfg.Database)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("analytics projector: %w", err)
	}
	return conn, nil
}

func (p *AnalyticsProjector) loop(ctx context.Context, cl *kgo.Client) error {
	for {
		fetches := p.poll(ctx, cl)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			p.shutdownFlush(ctx, cl)
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		err := p.process(ctx, cl, fetches)
		if errors.Is(err, errAnalyticsAbandon) {
			p.log.Warn("giving up unstored rows for a rebalance; they are read again")
			p.abandon(cl)
			err = nil
		}
		p.rebalanceWanted.Store(false)
		cl.AllowRebalance()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("analytics projector: %w", err)
		}
	}
}

// poll waits for records, at most until the pending batch is due.
func (p *AnalyticsProjector) poll(ctx context.Context, cl *kgo.Client) kgo.Fetches {
	p.mu.Lock()
	wait := p.cfg.BatchInterval
	if !p.firstDirty.IsZero() {
		wait = time.Until(p.firstDirty.Add(p.cfg.BatchInterval))
	}
	p.mu.Unlock()
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return cl.PollRecords(pctx, p.cfg.BatchRows)
}

// process adds a poll's records to the batch and writes the batch when it
// is full or due.
func (p *AnalyticsProjector) process(ctx context.Context, cl *kgo.Client, fetches kgo.Fetches) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Note where each partition's records begin before any is processed:
	// if the batch is given up halfway, the unprocessed ones must be read
	// again too.
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) > 0 {
			p.stateLocked(analyticsTP{ftp.Topic, ftp.Partition}, ftp.Records[0].Offset)
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
		if p.rows >= p.cfg.BatchRows {
			err = p.flushLocked(ctx, cl, analyticsRetryUntilRebalance)
		}
	})
	if err != nil {
		return err
	}
	if !p.firstDirty.IsZero() && time.Since(p.firstDirty) >= p.cfg.BatchInterval {
		return p.flushLocked(ctx, cl, analyticsRetryUntilRebalance)
	}
	return nil
}

// addLocked maps one record to a row and adds it to the batch unless
// ClickHouse already has it.
func (p *AnalyticsProjector) addLocked(ctx context.Context, rec *kgo.Record) error {
	p.stats.records.Add(1)
	tp := analyticsTP{rec.Topic, rec.Partition}
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
	if row, ok := p.rowOf(rec); ok {
		key := analyticsGroupKey{row.Table, row.Day()}
		if stored, ok := st.stored[key]; ok && rec.Offset <= stored {
			p.stats.skipped.Add(1)
		} else {
			g := p.groups[key]
			if g == nil {
				g = &analyticsGroup{}
				p.groups[key] = g
			}
			g.rows = append(g.rows, row)
			p.rows++
		}
	}
	// Even a record without a row moves the progress on.
	st.last = kgo.EpochOffset{Epoch: rec.LeaderEpoch, Offset: rec.Offset}
	st.dirty = true
	if p.firstDirty.IsZero() {
		p.firstDirty = time.Now()
	}
	return nil
}

// stateLocked returns the state of a partition whose records begin at
// first in this poll, noting first as the rewind point while nothing of the
// partition is stored.
func (p *AnalyticsProjector) stateLocked(tp analyticsTP, first int64) *analyticsPartition {
	st := p.parts[tp]
	if st == nil {
		// Not expected (assignment loads every partition), but if it
		// happens, the state is loaded before use and a rewind goes here.
		st = &analyticsPartition{progress: -1, firstSeen: first}
		p.parts[tp] = st
	}
	if st.progress < 0 && (st.firstSeen < 0 || first < st.firstSeen) {
		st.firstSeen = first
	}
	return st
}

// rowOf decodes a record and maps it to its row; false for records that
// have none (counted and logged).
func (p *AnalyticsProjector) rowOf(rec *kgo.Record) (analytics.Row, bool) {
	if rec.Value == nil {
		p.stats.skipped.Add(1) // a compaction tombstone: no event
		return analytics.Row{}, false
	}
	ev, err := schema.Decode(rec)
	if err != nil {
		p.stats.undecodable.Add(1)
		level := slog.LevelWarn
		if errors.Is(err, schema.ErrUnknownType) {
			level = slog.LevelDebug // a newer writer's event: expected during upgrades
		}
		p.log.Log(context.Background(), level, "skipping undecodable record",
			"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return analytics.Row{}, false
	}
	row, ok := AnalyticsRow(rec, ev)
	if !ok {
		p.stats.skipped.Add(1)
		return analytics.Row{}, false
	}
	if t, _ := analytics.LookupTable(row.Table); p.realTopic(t.Topic) != rec.Topic {
		// Resume positions are per topic: a row from another topic's
		// table could be counted twice, so it is refused.
		p.stats.skipped.Add(1)
		p.log.Warn("skipping event on the wrong topic", "type", schema.TypeName(ev),
			"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset)
		return analytics.Row{}, false
	}
	return row, true
}

// flushLocked stores the batch: every (table, day) group, then the
// progress, then the consumer group commit. Each statement is retried as
// mode says.
func (p *AnalyticsProjector) flushLocked(ctx context.Context, cl *kgo.Client, mode analyticsRetry) error {
	began, rows := time.Now(), p.rows
	keys := make([]analyticsGroupKey, 0, len(p.groups))
	for k := range p.groups {
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
			return analytics.SaveProgress(ctx, p.conn, p.cfg.Database, progress)
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
	return nil
}

// storeGroupsLocked inserts the groups side by side: a ClickHouse insert
// costs mostly its fixed part-writing time, so overlapping them shortens a
// batch. Each group is atomic on its own and the progress follows them all,
// so the order does not matter.
func (p *AnalyticsProjector) storeGroupsLocked(ctx context.Context, keys []analyticsGroupKey, mode analyticsRetry) error {
	type result struct {
		g   analyticsGroup // what is still unstored
		err error
	}
	results := make([]result, len(keys))
	sem := make(chan struct{}, analyticsParallelInserts)
	var wg sync.WaitGroup
	for i, k := range keys {
		g := *p.groups[k]
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
		p.rows -= len(p.groups[k].rows) - len(r.g.rows)
		if r.err != nil {
			*p.groups[k] = r.g
			errs = append(errs, r.err)
			continue
		}
		delete(p.groups, k)
	}
	for _, err := range errs {
		if errors.Is(err, errAnalyticsAbandon) {
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
func (p *AnalyticsProjector) storeGroup(ctx context.Context, k analyticsGroupKey, g analyticsGroup, mode analyticsRetry) (analyticsGroup, error) {
	err := p.retry(ctx, "insert into "+k.table, mode, func(ctx context.Context) error {
		if g.uncertain {
			kept, err := p.unstored(ctx, k, g.rows)
			if err != nil {
				return err
			}
			g = analyticsGroup{rows: kept}
		}
		if len(g.rows) == 0 {
			return nil
		}
		if err := analytics.InsertRows(ctx, p.conn, p.cfg.Database, k.table, g.rows); err != nil {
			g.uncertain = true
			return err
		}
		p.stats.rows.Add(int64(len(g.rows)))
		g = analyticsGroup{}
		return nil
	})
	return g, err
}

// unstored returns the rows of a group that ClickHouse does not have.
func (p *AnalyticsProjector) unstored(ctx context.Context, k analyticsGroupKey, rows []analytics.Row) ([]analytics.Row, error) {
	if err := analytics.WaitForInserts(ctx, p.conn, p.cfg.Database); err != nil {
		return nil, err
	}
	after := map[int32]int64{}
	for _, r := range rows {
		if cur, ok := after[r.Partition]; !ok || r.Offset-1 < cur {
			after[r.Partition] = r.Offset - 1
		}
	}
	stored, err := analytics.MaxStoredOffsets(ctx, p.conn, p.cfg.Database, k.table, after)
	if err != nil {
		return nil, err
	}
	kept := rows[:0:0]
	for _, r := range rows {
		if off, ok := stored[analytics.StoredKey{Partition: r.Partition, Day: k.day}]; ok && r.Offset <= off {
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
func (p *AnalyticsProjector) commit(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) {
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err == nil {
			err = analyticsCommitError(resp)
		}
		if err != nil && ctx.Err() == nil {
			p.log.Warn("commit offsets", "err", err)
		}
	})
}

func analyticsCommitError(resp *kmsg.OffsetCommitResponse) error {
	for _, t := range resp.Topics {
		for _, part := range t.Partitions {
			if err := kerr.ErrorForCode(part.ErrorCode); err != nil {
				return fmt.Errorf("%s/%d: %w", t.Topic, part.Partition, err)
			}
		}
	}
	return nil
}

// adjustOffsets runs when partitions are assigned: it loads their progress
// and partial-batch marks from ClickHouse (waiting while it is down) and
// starts each partition after its progress.
func (p *AnalyticsProjector) adjustOffsets(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for topic, parts := range offsets {
		ps := make([]int32, 0, len(parts))
		for part := range parts {
			ps = append(ps, part)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		loaded, err := p.loadStates(ctx, topic, ps, analyticsRetryForever)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		for part, st := range loaded {
			p.parts[analyticsTP{topic, part}] = st
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
func (p *AnalyticsProjector) loadLocked(ctx context.Context, topic string, parts []int32) error {
	loaded, err := p.loadStates(ctx, topic, parts, analyticsRetryUntilRebalance)
	if err != nil {
		return err
	}
	for part, st := range loaded {
		tp := analyticsTP{topic, part}
		if old := p.parts[tp]; old != nil {
			st.firstSeen = old.firstSeen // this poll's records still begin there
		}
		p.parts[tp] = st
	}
	return nil
}

// loadStates reads progress and partial-batch marks of partitions.
func (p *AnalyticsProjector) loadStates(ctx context.Context, topic string, parts []int32, mode analyticsRetry) (map[int32]*analyticsPartition, error) {
	out := map[int32]*analyticsPartition{}
	err := p.retry(ctx, "load progress of "+topic, mode, func(ctx context.Context) error {
		// An insert a previous owner started may still be running.
		if err := analytics.WaitForInserts(ctx, p.conn, p.cfg.Database); err != nil {
			return err
		}
		progress, err := analytics.Progress(ctx, p.conn, p.cfg.Database, topic, parts)
		if err != nil {
			return err
		}
		after := map[int32]int64{}
		for _, part := range parts {
			st := &analyticsPartition{loaded: true, progress: -1, firstSeen: -1, stored: map[analyticsGroupKey]int64{}}
			if off, ok := progress[part]; ok {
				st.progress = off
			}
			out[part] = st
			after[part] = st.progress
		}
		for _, table := range analytics.TablesOf(p.logicalTopic(topic)) {
			stored, err := analytics.MaxStoredOffsets(ctx, p.conn, p.cfg.Database, table, after)
			if err != nil {
				return err
			}
			for k, off := range stored {
				out[k.Partition].stored[analyticsGroupKey{table, k.Day}] = off
			}
		}
		return nil
	})
	return out, err
}

// onRevoked stores what it can of the revoked partitions (one attempt,
// briefly: the next owner redoes whatever is not stored) and forgets them.
func (p *AnalyticsProjector) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// While ClickHouse is failing, do not hold up the rebalance trying:
	// skip when the last operation failed, and never retry (failing is
	// cleared by a progress load even while inserts still fail).
	if (p.rows > 0 || p.anyDirtyLocked()) && !p.failing.Load() {
		fctx, cancel := context.WithTimeout(ctx, analyticsShutdownTimeout)
		err := p.flushLocked(fctx, cl, analyticsRetryOnce)
		cancel()
		if err != nil {
			p.log.Warn("could not store the batch before giving up partitions; the next owner projects them", "err", err)
		}
	}
	p.dropLocked(revoked)
}

// onLost forgets lost partitions without writing: another member may own
// them already.
func (p *AnalyticsProjector) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(lost)
}

func (p *AnalyticsProjector) anyDirtyLocked() bool {
	for _, st := range p.parts {
		if st.dirty {
			return true
		}
	}
	return false
}

// dropLocked forgets partitions and their unstored rows.
func (p *AnalyticsProjector) dropLocked(parts map[string][]int32) {
	gone := map[analyticsTP]bool{}
	for topic, ps := range parts {
		for _, part := range ps {
			tp := analyticsTP{topic, part}
			gone[tp] = true
			delete(p.parts, tp)
		}
	}
	for k, g := range p.groups {
		rows := g.rows
		kept := rows[:0]
		for _, r := range rows {
			if t, ok := analytics.LookupTable(r.Table); !ok || !gone[analyticsTP{p.realTopic(t.Topic), r.Partition}] {
				kept = append(kept, r)
			}
		}
		p.rows -= len(rows) - len(kept)
		if len(kept) == 0 {
			delete(p.groups, k)
		} else {
			g.rows = kept
		}
	}
	if p.rows == 0 && !p.anyDirtyLocked() {
		p.firstDirty = time.Time{}
	}
}

// abandon gives up every unstored row and rewinds each partition to just
// after its progress; the states are reloaded before more records are
// added, since part of the batch may have been stored.
func (p *AnalyticsProjector) abandon(cl *kgo.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	p.groups = make(map[analyticsGroupKey]*analyticsGroup)
	p.rows = 0
	p.firstDirty = time.Time{}
	cl.SetOffsets(rewind)
}

// shutdownFlush tries once more, briefly, to store the batch when Run ends.
func (p *AnalyticsProjector) shutdownFlush(ctx context.Context, cl *kgo.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rows == 0 && !p.anyDirtyLocked() {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), analyticsShutdownTimeout)
	defer cancel()
	if err := p.flushLocked(fctx, cl, analyticsRetryUntilRebalance); err != nil {
		p.log.Warn("stopping with an unstored batch; the next run projects it", "rows", p.rows, "err", err)
	}
}

// retry runs op through the circuit breaker until it succeeds, backing off
// between failures. It stops when ctx ends, or earlier as mode says.
func (p *AnalyticsProjector) retry(ctx context.Context, what string, mode analyticsRetry, op func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	var cause error // the last error ClickHouse gave, not the breaker's
	for attempt := 1; ; attempt++ {
		_, err := p.cb.Execute(func() (struct{}, error) {
			octx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
			defer cancel()
			return struct{}{}, op(octx)
		})
		if err == nil {
			p.failing.Store(false)
			if attempt > 1 {
				p.log.Info("clickhouse answers again", "op", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.stats.failures.Add(1)
		p.failing.Store(true)
		if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
			cause = err
		}
		if mode == analyticsRetryOnce {
			return err // the caller reports it
		}
		switch {
		case attempt == 1:
			p.log.Warn("clickhouse failed; pausing consumption and retrying", "op", what, "err", err)
		case attempt%20 == 0:
			// A lasting error (not only "breaker open") must stay visible.
			p.log.Warn("clickhouse still failing", "op", what, "attempt", attempt, "err", cause)
		default:
			p.log.Debug("clickhouse still failing", "op", what, "attempt", attempt, "err", err)
		}
		if mode == analyticsRetryUntilRebalance && p.rebalanceWanted.Load() {
			return errAnalyticsAbandon
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, p.cfg.RetryMax)
	}
}

// AnalyticsRow maps an event read from rec to its raw-table row; false for
// events without one (channel-state snapshots, unknown bodies).
func AnalyticsRow(rec *kgo.Record, ev *pb.Event) (analytics.Row, bool) {
	row := analytics.Row{
		TimeMs:    ev.GetTimeMs(),
		EventID:   ev.GetId(),
		UAID:      ev.GetUaid(),
		Partition: rec.Partition,
		Offset:    rec.Offset,
	}
	switch b := ev.GetBody().(type) {
	case *pb.Event_MessageAccepted:
		m := b.MessageAccepted
		row.Table = analytics.TableAccepted
		row.Values = []any{
			m.GetChannelId(), m.GetVapidSub(), hex.EncodeToString(m.GetVapidKeyHash()),
			analyticsBool(m.GetKeyBound()), uint32(len(m.GetPayload())), m.GetEncoding(),
			m.GetTtlS(), AnalyticsUrgency(m.GetUrgency()), analyticsBool(m.GetTopic() != ""),
		}
	case *pb.Event_MessageDeleted:
		row.Table = analytics.TableDeleted
		row.Values = analyticsRef(ev, b.MessageDeleted.GetMsg())
	case *pb.Event_Delivered:
		d := b.Delivered
		row.Table = analytics.TableDelivered
		row.Values = append(analyticsRef(ev, d.GetMsg()), d.GetNode(), d.GetConnId(), d.GetAttempt())
	case *pb.Event_Acked:
		row.Table = analytics.TableAcked
		row.Values = append(analyticsRef(ev, b.Acked.GetMsg()), b.Acked.GetCode())
	case *pb.Event_Nacked:
		row.Table = analytics.TableNacked
		row.Values = append(analyticsRef(ev, b.Nacked.GetMsg()), b.Nacked.GetCode())
	case *pb.Event_Expired:
		row.Table = analytics.TableExpired
		row.Values = analyticsRef(ev, b.Expired.GetMsg())
	case *pb.Event_Dropped:
		d := b.Dropped
		row.Table = analytics.TableDropped
		row.Values = append(analyticsRef(ev, d.GetMsg()), AnalyticsDropReason(d.GetReason()), int32(d.GetReason()))
	case *pb.Event_ChannelRegistered:
		r := b.ChannelRegistered
		row.Table = analytics.TableRegistrations
		row.Values = []any{"registered", r.GetChannelId(), hex.EncodeToString(r.GetKeyHash()), int32(0), ""}
	case *pb.Event_ChannelUnregistered:
		u := b.ChannelUnregistered
		row.Table = analytics.TableRegistrations
		row.Values = []any{"unregistered", u.GetChannelId(), "", u.GetCode(), ""}
	case *pb.Event_UserReset:
		row.Table = analytics.TableRegistrations
		row.Values = []any{"reset", "", "", int32(0), b.UserReset.GetReason()}
	case *pb.Event_Connected:
		c := b.Connected
		row.Table = analytics.TableConnections
		row.Values = []any{"connected", c.GetNode(), c.GetConnId(), c.GetLinkAddr(), c.GetSinceMs(), c.GetUserAgent(), int64(0)}
	case *pb.Event_Disconnected:
		d := b.Disconnected
		row.Table = analytics.TableConnections
		row.Values = []any{"disconnected", d.GetNode(), d.GetConnId(), "", int64(0), "", d.GetDurationMs()}
	default:
		return analytics.Row{}, false
	}
	return row, true
}

// analyticsRef renders a MessageRef as the ref columns; latency is the time
// from acceptance to this event, 0 when the accept time is unknown.
func analyticsRef(ev *pb.Event, m *pb.MessageRef) []any {
	var latency int64
	if m.GetAcceptedMs() > 0 {
		latency = ev.GetTimeMs() - m.GetAcceptedMs()
	}
	return []any{m.GetChannelId(), m.GetPartition(), m.GetOffset(), m.GetAcceptedMs(), m.GetVapidSub(), latency}
}

func analyticsBool(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// AnalyticsUrgency names an urgency as the Urgency header spells it.
func AnalyticsUrgency(u pb.Urgency) string {
	name := u.String() // URGENCY_VERY_LOW, or the number when unknown
	if s, ok := strings.CutPrefix(name, "URGENCY_"); ok {
		return strings.ReplaceAll(strings.ToLower(s), "_", "-")
	}
	return name
}

// AnalyticsDropReason names a drop reason ("pending_limit", ...).
func AnalyticsDropReason(r pb.DropReason) string {
	name := r.String()
	if s, ok := strings.CutPrefix(name, "DROP_REASON_"); ok {
		return strings.ToLower(s)
	}
	return name
}

// The analytics tables name the default topics; a namespaced deployment
// consumes its own topics, so names are translated at the edges and the
// projector works with the real (consumed) names throughout.

// realTopics are the consumed topics in the configured namespace.
func (p *AnalyticsProjector) realTopics() []string {
	var out []string
	for _, t := range analytics.Topics() {
		out = append(out, p.realTopic(t))
	}
	return out
}

// realTopic maps a default topic name to the configured namespace.
func (p *AnalyticsProjector) realTopic(logical string) string {
	return p.cfg.Names.FromDefault(logical)
}

// logicalTopic maps a consumed topic back to its default name.
func (p *AnalyticsProjector) logicalTopic(real string) string { return p.cfg.Names.ToDefault(real) }
