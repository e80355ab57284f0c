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
	"github.com/pushlog/pushlog/schema/pb"
)

// DefaultStatusEntries bounds the status table: about 170 bytes a message
// (TestStatusTableMemory: 165), so 1,000,000 messages are about 170 MB.
const DefaultStatusEntries = 1_000_000

// DefaultStatusEarly bounds the outcomes the status table holds past
// MaxEntries for messages whose MessageAccepted it has not folded yet
// (about 17 MB): the two topics are fetched independently, so while
// catching up the acks topic can run far ahead of the messages topic, and
// an outcome forgotten before its message arrives would leave the message
// pending for good (no push receipt, GET /m/{id} wrong). The receipts'
// own fold held as many early outcomes before it followed the table.
const DefaultStatusEarly = 100_000

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
	// the oldest folded message is forgotten first, except an outcome
	// whose message is not folded yet: it is held apart, up to MaxEarly
	// (default DefaultStatusEarly), until its MessageAccepted completes it.
	MaxEntries int
	MaxEarly   int
	// History is how far back a start reads at least, for a follower
	// that needs more than MaxTTL + Keep (push receipts' retention).
	History time.Duration
	Logger  *slog.Logger
	// Metrics registers pushlog_ingest_status_entries,
	// pushlog_ingest_status_early_entries and
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
	acc       schema.Accepted // a StatusChange's Accepted, during the followers' calls

	// folded is the next offset the fold reads per messages partition,
	// from where Run started reading: an outcome of a message below it
	// will not see its MessageAccepted (read already, or before the
	// start), so it is not held past the bound.
	folded map[int32]int64
	// early holds the outcomes the bound pushed out of msgs before their
	// MessageAccepted was folded (at most MaxEarly), oldest first in
	// earlyOrder[earlyHead:]. A key leaves early when its message comes
	// and may be held again later: a slot counts only while its seq is the
	// held one's (earlySeq numbers the holds), and stale slots are
	// compacted away so earlyOrder stays O(len(early)).
	early      map[schema.MessageKey]earlyHeld
	earlyOrder []earlySlot
	earlyHead  int
	earlySeq   uint64
	// earlyDropped counts outcomes the early bound forgot since the last
	// warning, at most one a minute (earlyWarned).
	earlyDropped int
	earlyWarned  time.Time

	entries    prometheus.GaugeFunc
	earlyGauge prometheus.GaugeFunc
	evictions  *prometheus.CounterVec

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
	if cfg.MaxEarly <= 0 {
		cfg.MaxEarly = DefaultStatusEarly
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &StatusTable{cfg: cfg, log: cfg.Logger, msgs: make(map[schema.MessageKey]schema.MessageStatus), next: map[int32]int64{},
		folded: map[int32]int64{}, early: map[schema.MessageKey]earlyHeld{}}
	t.entries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushlog_ingest_status_entries",
		Help: "Messages in the status table of GET /m/{id} (bounded by --status-entries, plus the early outcomes held apart).",
	}, func() float64 { return float64(t.Len()) })
	t.earlyGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushlog_ingest_status_early_entries",
		Help: "Outcomes the status table holds past its bound because their message is not folded yet (the acks topic read ahead of the messages topic; bounded at 100,000).",
	}, func() float64 { return float64(t.earlyLen()) })
	t.evictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_ingest_status_evictions_total",
		Help: "Messages forgotten by the status table, by reason: expired (settled longer ago than --status-keep), bound (the table was full; raise --status-entries) or early_bound (an outcome whose message was not folded yet: its push receipt is lost).",
	}, []string{"reason"})
	for _, r := range []string{"expired", "bound", "early_bound"} {
		t.evictions.WithLabelValues(r)
	}
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{t.entries, t.earlyGauge, t.evictions} {
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

// Len is the number of messages held, early outcomes included.
func (t *StatusTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.msgs) + len(t.early)
}

// earlyLen is the number of outcomes held past the bound.
func (t *StatusTable) earlyLen() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.early)
}

// earlyHeld is an outcome held apart, with the number of its hold.
type earlyHeld struct {
	st  schema.MessageStatus
	seq uint64
}

// earlySlot is a hold in earlyOrder: current while early[key].seq == seq.
type earlySlot struct {
	key schema.MessageKey
	seq uint64
}

// Status returns the fold of the message at key (ingest.StatusSource);
// false when unknown or kept past its time.
func (t *StatusTable) Status(key schema.MessageKey) (schema.MessageStatus, bool) {
	t.mu.RLock()
	st, ok := t.msgs[key]
	if !ok {
		var h earlyHeld
		h, ok = t.early[key]
		st = h.st
	}
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
		targets, ends, starts, err := catchUpTargets(ctx, adm, start.UnixMilli(), t.cfg.Names.Messages, t.cfg.Names.Acks)
		if err != nil {
			return fmt.Errorf("status table: %w", err)
		}
		t.mu.Lock()
		for p, end := range ends[t.cfg.Names.Messages] {
			t.next[p] = max(t.next[p], end) // until ready Status answers catching up anyway
		}
		for p, s := range starts[t.cfg.Names.Messages] {
			t.folded[p] = max(t.folded[p], s)
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
		t.folded[r.Partition] = max(t.folded[r.Partition], r.Offset+1)
	}
	sr, ok := readFoldRecord(r, r.Topic == t.cfg.Names.Acks)
	if !ok {
		return // other events and unknown bodies: nothing about a message
	}
	key := sr.key
	before, seen := t.msgs[key]
	if !seen {
		if held, ok := t.early[key]; ok {
			before = held.st // its message, or more of its outcome
			t.unholdEarlyLocked(key)
		}
		if len(t.msgs) >= t.cfg.MaxEntries {
			t.evictOldestLocked()
		}
		t.order = append(t.order, key)
	}
	st := before
	sr.apply(&st)
	t.msgs[key] = st
	if len(t.followers) == 0 {
		return
	}
	c := schema.StatusChange{Key: key, Before: before, After: st}
	if sr.acceptedInto(&t.acc) { // in the table: nothing escapes per record
		c.Accepted = &t.acc
	}
	for _, fn := range t.followers {
		fn(c)
	}
	if c.Accepted != nil {
		t.acc = schema.Accepted{} // holds no record
	}
}

// foldRecord is what the fold reads of a record of the messages or
// acks topic. Most records are read partially (accepted or settle): a
// full decode (proto.Unmarshal, payload copied) of every record was most
// of the fold's cost; what the partial decoders leave is decoded in full
// (ev) and folded exactly as before.
type foldRecord struct {
	key      schema.MessageKey
	ev       *pb.Event // decoded in full; nil when read partially
	accepted bool      // read partially: acc, else settle
	acc      schema.Accepted
	settle   schema.Settlement
}

// readFoldRecord reads r; false when it is not about a message (as
// schema.Decode and schema.MessageKeyOf decide). acks tries the
// settlement decoder first (the acks topic's records), else the
// MessageAccepted one.
func readFoldRecord(r *kgo.Record, acks bool) (foldRecord, bool) {
	var sr foldRecord
	if acks {
		if s, ok := schema.DecodeSettlementRecord(r); ok {
			sr.settle = s
			sr.key, ok = s.Key()
			return sr, ok
		}
	}
	if a, ok := schema.DecodeAccepted(r); ok {
		sr.accepted, sr.acc = true, a
		sr.key = schema.MessageKey{Partition: r.Partition, Offset: r.Offset}
		return sr, true
	}
	if !acks {
		if s, ok := schema.DecodeSettlementRecord(r); ok {
			sr.settle = s
			sr.key, ok = s.Key()
			return sr, ok
		}
	}
	ev, err := schema.Decode(r)
	if err != nil {
		return sr, false
	}
	sr.ev = ev
	key, ok := schema.MessageKeyOf(r.Partition, r.Offset, ev)
	sr.key = key
	return sr, ok
}

// acceptedInto sets dst to the record's MessageAccepted fields; false
// (dst untouched) for other events.
func (sr *foldRecord) acceptedInto(dst *schema.Accepted) bool {
	switch {
	case sr.accepted:
		*dst = sr.acc
		return true
	case sr.ev != nil:
		a, ok := schema.AcceptedOf(sr.ev)
		if ok {
			*dst = a
		}
		return ok
	}
	return false
}

// apply folds the record into st.
func (sr *foldRecord) apply(st *schema.MessageStatus) {
	switch {
	case sr.ev != nil:
		st.Apply(sr.ev)
	case sr.accepted:
		st.ApplyAccepted(&sr.acc)
	default:
		st.ApplySettlement(sr.settle)
	}
}

// evictOldestLocked forgets the message first seen longest ago, or holds
// it apart when it is an outcome still waiting for its message.
func (t *StatusTable) evictOldestLocked() {
	for t.head < len(t.order) {
		k := t.order[t.head]
		t.head++
		st, ok := t.msgs[k]
		if !ok {
			continue
		}
		delete(t.msgs, k)
		if t.awaitsMessageLocked(k, st) {
			t.holdEarlyLocked(k, st)
		} else {
			t.evictions.WithLabelValues("bound").Inc()
		}
		break
	}
	t.compactLocked()
}

// awaitsMessageLocked reports whether st, at k, is an outcome whose
// MessageAccepted the fold has yet to read.
func (t *StatusTable) awaitsMessageLocked(k schema.MessageKey, st schema.MessageStatus) bool {
	return st.AcceptedMs == 0 && k.Offset >= t.folded[k.Partition]
}

// holdEarlyLocked holds an outcome pushed out of msgs until its message
// comes, forgetting the oldest held one past MaxEarly: counted, and
// warned about (at most once a minute) since its push receipt is lost.
func (t *StatusTable) holdEarlyLocked(k schema.MessageKey, st schema.MessageStatus) {
	for len(t.early) >= t.cfg.MaxEarly && t.earlyHead < len(t.earlyOrder) {
		old := t.earlyOrder[t.earlyHead]
		t.earlyHead++
		if _, ok := t.heldLocked(old); !ok {
			continue // released, or held again later: its newer slot counts
		}
		t.unholdEarlyLocked(old.key)
		t.evictions.WithLabelValues("early_bound").Inc()
		t.earlyDropped++
	}
	if now := t.cfg.Now(); t.earlyDropped > 0 && now.Sub(t.earlyWarned) >= time.Minute {
		t.log.Warn("status table: forgot outcomes of messages not folded yet (the acks topic is far ahead of the messages topic); their push receipts are lost and GET /m/{id} answers them pending or 404",
			"forgotten", t.earlyDropped, "bound", t.cfg.MaxEarly, "entries", t.cfg.MaxEntries)
		t.earlyDropped, t.earlyWarned = 0, now
	}
	t.earlySeq++
	t.early[k] = earlyHeld{st: st, seq: t.earlySeq}
	t.earlyOrder = append(t.earlyOrder, earlySlot{key: k, seq: t.earlySeq})
	t.compactEarlyLocked()
}

// heldLocked is the hold s stands for; false when s is stale (its key
// released, or held again since).
func (t *StatusTable) heldLocked(s earlySlot) (earlyHeld, bool) {
	h, ok := t.early[s.key]
	return h, ok && h.seq == s.seq
}

// unholdEarlyLocked releases k's hold; once nothing is held, earlyOrder
// holds only stale slots and starts over.
func (t *StatusTable) unholdEarlyLocked(k schema.MessageKey) {
	delete(t.early, k)
	if len(t.early) == 0 {
		clear(t.earlyOrder)
		t.earlyOrder, t.earlyHead = t.earlyOrder[:0], 0
	}
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
	for t.earlyHead < len(t.earlyOrder) {
		s := t.earlyOrder[t.earlyHead]
		if h, ok := t.heldLocked(s); ok {
			if !t.expired(h.st, now) {
				break
			}
			t.earlyHead++
			t.unholdEarlyLocked(s.key)
			t.evictions.WithLabelValues("expired").Inc()
			continue
		}
		t.earlyHead++
	}
	t.compactEarlyLocked()
}

// compactLocked drops the consumed front of order once it is half of it.
func (t *StatusTable) compactLocked() {
	if t.head > 1024 && t.head*2 > len(t.order) {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

// compactEarlyLocked is compactLocked for earlyOrder, and also drops the
// stale slots once they outnumber the holds: keys released and held again
// behind a long-kept head would otherwise grow earlyOrder without bound.
func (t *StatusTable) compactEarlyLocked() {
	switch {
	case len(t.earlyOrder) > 2*len(t.early)+1024:
		live := t.earlyOrder[:0]
		for _, s := range t.earlyOrder[t.earlyHead:] {
			if _, ok := t.heldLocked(s); ok {
				live = append(live, s)
			}
		}
		clear(t.earlyOrder[len(live):])
		t.earlyOrder, t.earlyHead = live, 0
	case t.earlyHead > 1024 && t.earlyHead*2 > len(t.earlyOrder):
		t.earlyOrder = append(t.earlyOrder[:0], t.earlyOrder[t.earlyHead:]...)
		t.earlyHead = 0
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
// from startMs on, every partition's end offset, and the offset the fold
// starts reading at (where listed).
func catchUpTargets(ctx context.Context, adm *kadm.Client, startMs int64, topics ...string) (targets, ends, starts map[string]map[int32]int64, err error) {
	listed, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list end offsets: %w", err)
	}
	after, err := adm.ListOffsetsAfterMilli(ctx, startMs, topics...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list offsets after %d: %w", startMs, err)
	}
	targets = make(map[string]map[int32]int64, len(topics))
	ends = make(map[string]map[int32]int64, len(topics))
	starts = make(map[string]map[int32]int64, len(topics))
	for _, topic := range topics {
		targets[topic], ends[topic], starts[topic] = map[int32]int64{}, map[int32]int64{}, map[int32]int64{}
	}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return // an unknown topic or partition: nothing to wait for
		}
		ends[o.Topic][o.Partition] = o.Offset
		s, ok := after.Lookup(o.Topic, o.Partition)
		if ok && s.Err == nil {
			starts[o.Topic][o.Partition] = min(s.Offset, o.Offset)
		}
		if ok && s.Err == nil && s.Offset >= o.Offset {
			return
		}
		if o.Offset > 0 {
			targets[o.Topic][o.Partition] = o.Offset
		}
	})
	return targets, ends, starts, nil
}
