package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// DefaultStatusEntries bounds the status table: about 170 bytes a message
// (TestStatusTableMemory: 165), so 1,000,000 messages are about 170 MB.
const DefaultStatusEntries = 1_000_000

// The status fold's fetch settings. Nothing waits on the fold by the
// millisecond (GET /m/{id} answers 503 for a message it has not read yet,
// receipts are asynchronous), so it reads in batches: a broker answers
// once StatusFetchMinBytes are there or StatusFetchWait passed. At low
// rates that is a few fetches a second instead of one per event (three
// per push: the message, its Delivered, its Acked); under load or while
// catching up the bytes are there at once and nothing waits.
const (
	StatusFetchWait     = 250 * time.Millisecond
	StatusFetchMinBytes = 1 << 20
)

// StatusTableConfig configures a StatusTable.
type StatusTableConfig struct {
	// Names are the topic names; zero means schema.DefaultNames().
	Names schema.Names
	// ClientOpts connect to Kafka. The table consumes directly, without
	// a consumer group: every ingest node folds every partition.
	ClientOpts []kgo.Opt
	// MaxTTL is ingest's TTL clamp: an unsettled message is kept at most
	// that long after acceptance (plus Keep) when no settlement comes.
	MaxTTL time.Duration
	// Keep is how long a settled message's status is kept (default
	// MaxTTL); after it GET /m/{id} answers 404.
	Keep time.Duration
	// MaxEntries bounds the table (default DefaultStatusEntries); past it
	// the oldest folded message is forgotten first.
	MaxEntries int
	// History is how far back a start reads at least, for a follower
	// that needs more than MaxTTL + Keep (push receipts' retention).
	History time.Duration
	Logger  *slog.Logger
	// Metrics registers pushlog_ingest_status_entries and
	// pushlog_ingest_status_evictions_total; nil: none.
	Metrics prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// StatusTable is ingest's one fold of the messages and acks topics: it
// folds them with schema.MessageStatus into a bounded in-memory table
// keyed by the message's place in the messages topic, which answers GET
// /m/{id}, and reports every folded event to its followers (push
// receipts), so a node reads and decides a message's outcome once. It
// starts reading at now - max(MaxTTL + Keep, History), the oldest event
// whose message can still be answered, so a restarted node answers for
// every message it should (as far as retention keeps the topics); requests
// never read the log.
type StatusTable struct {
	cfg StatusTableConfig
	log *slog.Logger

	mu    sync.RWMutex
	msgs  map[schema.MessageKey]schema.MessageStatus
	order []schema.MessageKey // fold order of first sight; order[head:] live
	head  int
	// next is the next offset to fold per messages partition, at least
	// the partition's end when Run started: a message at or above it is
	// not read yet (Behind).
	next      map[int32]int64
	followers []func(schema.StatusChange)

	entries   prometheus.GaugeFunc
	evictions *prometheus.CounterVec

	// targets are the end offsets at start not yet folded, by topic and
	// partition; ready once empty (Run found them; nil before).
	targets map[string]map[int32]int64
	ready   atomic.Bool

	// Behind lists the messages topic's end offsets through Run's client
	// (adm and admCtx, nil while Run is not running), one listing at a
	// time: callers that arrive while one runs wait for the next
	// (endsQueued), so every answer comes from a listing started after
	// its question.
	endsMu      sync.Mutex
	adm         *kadm.Client
	admCtx      context.Context
	endsRunning *endsCall
	endsQueued  *endsCall
}

// endsCall is one listing of the messages topic's end offsets; ends and
// err are set before done is closed.
type endsCall struct {
	done chan struct{}
	ends map[int32]int64
	err  error
}

// statusEndsWait bounds Behind's wait for a listing of end offsets (a
// broker that does not answer: the lookup answers 503, retry).
const statusEndsWait = 2 * time.Second

var errStatusNotRunning = errors.New("status table: not running")

// NewStatusTable validates cfg and builds the table; Run fills it.
func NewStatusTable(cfg StatusTableConfig) (*StatusTable, error) {
	if cfg.Names.Messages == "" {
		cfg.Names = schema.DefaultNames()
	}
	if cfg.MaxTTL <= 0 {
		return nil, errors.New("status table: MaxTTL must be positive")
	}
	if cfg.Keep <= 0 {
		cfg.Keep = cfg.MaxTTL
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultStatusEntries
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &StatusTable{cfg: cfg, log: cfg.Logger, msgs: make(map[schema.MessageKey]schema.MessageStatus), next: map[int32]int64{}}
	t.entries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushlog_ingest_status_entries",
		Help: "Messages in the status table of GET /m/{id} (bounded by --status-entries).",
	}, func() float64 { return float64(t.Len()) })
	t.evictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_ingest_status_evictions_total",
		Help: "Messages forgotten by the status table, by reason: expired (settled longer ago than --status-keep) or bound (the table was full; raise --status-entries).",
	}, []string{"reason"})
	for _, r := range []string{"expired", "bound"} {
		t.evictions.WithLabelValues(r)
	}
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{t.entries, t.evictions} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("status table metrics: %w", err)
			}
		}
	}
	return t, nil
}

// Follow adds fn to what sees every folded event, in fold order, under the
// table's lock (fn must not call the table). Call it before Run: events
// folded before are not reported.
func (t *StatusTable) Follow(fn func(schema.StatusChange)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.followers = append(t.followers, fn)
}

// Behind reports whether a message the table does not hold may still be
// folded: the fold has not read its partition up to key, and the messages
// topic's end, listed after the question was asked, is past key (a
// message is in the topic before its 201, so before anyone holds its id).
// An id at or past the end (a message of an earlier incarnation of the
// topic, or never written) is not behind, so it is answered 404 rather
// than 503 forever. When the end cannot be listed (the fold is not
// running, ctx ended, no answer within statusEndsWait) it is behind: 503,
// retry.
func (t *StatusTable) Behind(ctx context.Context, key schema.MessageKey) bool {
	t.mu.RLock()
	read := key.Offset < t.next[key.Partition]
	t.mu.RUnlock()
	if read {
		return false
	}
	ends, err := t.listEnds(ctx)
	if err != nil {
		return true
	}
	end, ok := ends[key.Partition]
	return !ok || key.Offset < end
}

// listEnds returns the messages topic's end offsets from a listing
// started after the call.
func (t *StatusTable) listEnds(ctx context.Context) (map[int32]int64, error) {
	t.endsMu.Lock()
	if t.adm == nil {
		t.endsMu.Unlock()
		return nil, errStatusNotRunning
	}
	c := t.endsQueued
	if c == nil {
		c = &endsCall{done: make(chan struct{})}
		if t.endsRunning == nil {
			t.startEndsLocked(c)
		} else {
			t.endsQueued = c
		}
	}
	t.endsMu.Unlock()
	wait := time.NewTimer(statusEndsWait)
	defer wait.Stop()
	select {
	case <-c.done:
		return c.ends, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wait.C:
		return nil, errors.New("status table: end offsets not listed in time")
	}
}

// startEndsLocked runs listing c, then the queued one if any; t.endsMu is
// held.
func (t *StatusTable) startEndsLocked(c *endsCall) {
	t.endsRunning = c
	adm, ctx := t.adm, t.admCtx
	go func() {
		c.ends, c.err = listEnds(ctx, adm, t.cfg.Names.Messages)
		t.endsMu.Lock()
		defer t.endsMu.Unlock()
		close(c.done)
		t.endsRunning = nil
		q := t.endsQueued
		if q == nil {
			return
		}
		t.endsQueued = nil
		if t.adm == nil {
			q.err = errStatusNotRunning
			close(q.done)
			return
		}
		t.startEndsLocked(q)
	}()
}

// listEnds lists topic's end offsets, the partitions that answered.
func listEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, statusEndsWait)
	defer cancel()
	listed, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("status table: list end offsets: %w", err)
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			ends[o.Partition] = o.Offset
		}
	})
	return ends, nil
}

// setAdmin makes Behind list end offsets through adm until ctx ends.
func (t *StatusTable) setAdmin(ctx context.Context, adm *kadm.Client) {
	t.endsMu.Lock()
	defer t.endsMu.Unlock()
	t.adm, t.admCtx = adm, ctx
}

// clearAdmin stops Behind listing end offsets (Run ends).
func (t *StatusTable) clearAdmin() {
	t.endsMu.Lock()
	defer t.endsMu.Unlock()
	t.adm, t.admCtx = nil, nil
}

// Len is the number of messages held.
func (t *StatusTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.msgs)
}

// Status returns the fold of the message at key (ingest.StatusSource);
// false when unknown or kept past its time.
func (t *StatusTable) Status(key schema.MessageKey) (schema.MessageStatus, bool) {
	t.mu.RLock()
	st, ok := t.msgs[key]
	t.mu.RUnlock()
	if !ok || t.expired(st, t.cfg.Now().UnixMilli()) {
		return schema.MessageStatus{}, false
	}
	return st, true
}

// expired reports whether st is past its keep time at nowMs: settled ones
// Keep after settling, unsettled ones Keep after their TTL (or MaxTTL when
// the acceptance was not folded) ran out.
func (t *StatusTable) expired(st schema.MessageStatus, nowMs int64) bool {
	keep := t.cfg.Keep.Milliseconds()
	if st.State.Settled() {
		return st.SettledMs+keep < nowMs
	}
	last := max(st.AcceptedMs, st.DeliveredMs)
	ttl := t.cfg.MaxTTL.Milliseconds()
	if st.AcceptedMs > 0 {
		ttl = min(ttl, st.TTLSeconds*1000)
	}
	return last+ttl+keep < nowMs
}

// Run folds both topics until ctx ends.
func (t *StatusTable) Run(ctx context.Context) error {
	start := t.cfg.Now().Add(-max(t.cfg.MaxTTL+t.cfg.Keep, t.cfg.History))
	cl, err := kgo.NewClient(append(slices.Clone(t.cfg.ClientOpts),
		kgo.ConsumeTopics(t.cfg.Names.Messages, t.cfg.Names.Acks),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(start.UnixMilli())),
		kgo.FetchMaxWait(StatusFetchWait),
		kgo.FetchMinBytes(StatusFetchMinBytes),
	)...)
	if err != nil {
		return fmt.Errorf("status table: reader: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t.setAdmin(ctx, adm)
	defer t.clearAdmin() // before cl.Close
	if !t.ready.Load() {
		targets, ends, err := catchUpTargets(ctx, adm, start.UnixMilli(), t.cfg.Names.Messages, t.cfg.Names.Acks)
		if err != nil {
			return fmt.Errorf("status table: %w", err)
		}
		t.mu.Lock()
		for p, end := range ends[t.cfg.Names.Messages] {
			t.next[p] = max(t.next[p], end) // until ready Status answers catching up anyway
		}
		t.targets = targets
		t.checkReadyLocked()
		t.mu.Unlock()
	}
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.log.Warn("status table: fetch", "topic", topic, "partition", p, "err", err)
		})
		t.mu.Lock()
		fetches.EachRecord(t.applyLocked)
		t.mu.Unlock()
		select {
		case <-sweep.C:
			t.Sweep()
		default:
		}
	}
}

// Apply folds one record of the messages or acks topic.
func (t *StatusTable) Apply(r *kgo.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applyLocked(r)
}

func (t *StatusTable) applyLocked(r *kgo.Record) {
	if ps := t.targets[r.Topic]; ps != nil {
		if end, ok := ps[r.Partition]; ok && r.Offset+1 >= end {
			delete(ps, r.Partition)
			t.checkReadyLocked()
		}
	}
	if r.Topic == t.cfg.Names.Messages {
		t.next[r.Partition] = max(t.next[r.Partition], r.Offset+1)
	}
	ev, err := schema.Decode(r)
	if err != nil {
		return // other events and unknown bodies: nothing about a message
	}
	key, ok := schema.MessageKeyOf(r.Partition, r.Offset, ev)
	if !ok {
		return
	}
	before, seen := t.msgs[key]
	if !seen {
		if len(t.msgs) >= t.cfg.MaxEntries {
			t.evictOldestLocked()
		}
		t.order = append(t.order, key)
	}
	st := before
	st.Apply(ev)
	t.msgs[key] = st
	for _, fn := range t.followers {
		fn(schema.StatusChange{Key: key, Event: ev, Before: before, After: st})
	}
}

// evictOldestLocked forgets the message first seen longest ago.
func (t *StatusTable) evictOldestLocked() {
	for t.head < len(t.order) {
		k := t.order[t.head]
		t.head++
		if _, ok := t.msgs[k]; ok {
			delete(t.msgs, k)
			t.evictions.WithLabelValues("bound").Inc()
			break
		}
	}
	t.compactLocked()
}

// Sweep forgets expired messages from the oldest on, stopping at the first
// one still kept: fold order is about acceptance order, and Status checks
// expiry itself, so what a sweep leaves costs memory only until the bound.
func (t *StatusTable) Sweep() {
	now := t.cfg.Now().UnixMilli()
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.head < len(t.order) {
		k := t.order[t.head]
		if st, ok := t.msgs[k]; ok {
			if !t.expired(st, now) {
				break
			}
			delete(t.msgs, k)
			t.evictions.WithLabelValues("expired").Inc()
		}
		t.head++
	}
	t.compactLocked()
}

// compactLocked drops the consumed front of order once it is half of it.
func (t *StatusTable) compactLocked() {
	if t.head > 1024 && t.head*2 > len(t.order) {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

// Ready reports whether the table folded everything the topics held when
// Run started: before, an unknown message may only not be folded yet.
func (t *StatusTable) Ready() bool { return t.ready.Load() }

func (t *StatusTable) checkReadyLocked() {
	for _, ps := range t.targets {
		if len(ps) > 0 {
			return
		}
	}
	if !t.ready.Swap(true) {
		t.log.Info("status table caught up", "messages", len(t.msgs))
	}
}

// catchUpTargets returns, per topic and partition, the end offset to fold
// before the table is ready, leaving out partitions with nothing to fold
// from startMs on, and every partition's end offset.
func catchUpTargets(ctx context.Context, adm *kadm.Client, startMs int64, topics ...string) (targets, ends map[string]map[int32]int64, err error) {
	listed, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := adm.ListOffsetsAfterMilli(ctx, startMs, topics...)
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets after %d: %w", startMs, err)
	}
	targets = make(map[string]map[int32]int64, len(topics))
	ends = make(map[string]map[int32]int64, len(topics))
	for _, topic := range topics {
		targets[topic], ends[topic] = map[int32]int64{}, map[int32]int64{}
	}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return // an unknown topic or partition: nothing to wait for
		}
		ends[o.Topic][o.Partition] = o.Offset
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok && s.Err == nil && s.Offset >= o.Offset {
			return
		}
		if o.Offset > 0 {
			targets[o.Topic][o.Partition] = o.Offset
		}
	})
	return targets, ends, nil
}
