package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Receipt is one push message receipt: the message resource and what
// became of it.
type Receipt struct {
	Message string `json:"message"`          // the push message resource URI (the push's Location)
	Outcome string `json:"outcome"`          // acked, expired or dropped
	Reason  string `json:"reason,omitempty"` // dropped: why (pending_limit, topic_replaced, unregistered, user_reset, deleted, ttl_zero_offline)
	Code    int32  `json:"code,omitempty"`   // acked: the client's ack code (100, 101, 102)
	TimeMs  int64  `json:"time_ms"`          // when the ack (expiry, drop) happened
	uaid    string // with channelID and key: sealed into /m/{id} by the server
	channel string
	key     msgKey
	seq     uint64 // this node's order within the subscription
}

type msgKey struct {
	partition int32
	offset    int64
}

type pendingReceipt struct {
	sub       [16]byte
	uaid      string
	channelID string
	expires   time.Time
}

// settled is an outcome read before its message (the two topics are read
// side by side, so an ack can come first).
type settled struct {
	r Receipt
	t time.Time
}

type subReceipts struct {
	ring   []Receipt // oldest first, at most Buffer
	seq    uint64
	last   time.Time
	notify chan struct{} // closed and replaced on each new receipt
}

// receiptFold folds MessageAccepted (with receipt_sub) and the acks
// topic's Acked/Expired/Dropped into receipts per subscription. Every
// bound forgets the oldest and counts it.
type receiptFold struct {
	cfg ReceiptsConfig
	now func() time.Time
	met *receiptMetrics

	mu       sync.Mutex
	pending  map[msgKey]pendingReceipt
	pendingQ []msgKey
	early    map[msgKey]settled
	earlyQ   []msgKey
	// read is the next offset to read per messages partition: an outcome
	// for a message below it needs no memory (the message was read and
	// asked for no receipt, or its receipt is out), so early holds only
	// outcomes that overtook their message, bounded by the read skew of
	// the two topics, not by every ack.
	read     map[int32]int64
	subs     map[[16]byte]*subReceipts
	ready    chan struct{} // closed once the fold reached the topics' ends at start
	readyOne sync.Once
}

const maxEarly = 100_000

func newReceiptFold(cfg ReceiptsConfig, now func() time.Time) *receiptFold {
	return &receiptFold{cfg: cfg, now: now, pending: map[msgKey]pendingReceipt{}, early: map[msgKey]settled{},
		read: map[int32]int64{}, subs: map[[16]byte]*subReceipts{}, ready: make(chan struct{})}
}

func (f *receiptFold) pendingLen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// seen moves the messages partition's read position past k.
func (f *receiptFold) seen(k msgKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read[k.partition] = max(f.read[k.partition], k.offset+1)
}

// accepted records a message that asked for a receipt.
func (f *receiptFold) accepted(k msgKey, ev *pb.Event, m *pb.MessageAccepted) {
	if len(m.GetReceiptSub()) != 16 {
		f.mu.Lock()
		delete(f.early, k) // an outcome that overtook a message asking for nothing
		f.mu.Unlock()
		return
	}
	p := pendingReceipt{uaid: ev.GetUaid(), channelID: m.GetChannelId(),
		expires: time.UnixMilli(ev.GetTimeMs()).Add(time.Duration(m.GetTtlS())*time.Second + f.cfg.Retention)}
	copy(p.sub[:], m.GetReceiptSub())
	f.mu.Lock()
	defer f.mu.Unlock()
	if e, ok := f.early[k]; ok {
		delete(f.early, k)
		f.emitLocked(k, p, e.r)
		return
	}
	if _, dup := f.pending[k]; dup {
		return
	}
	for len(f.pending) >= f.cfg.MaxPending && len(f.pendingQ) > 0 {
		old := f.pendingQ[0]
		f.pendingQ = f.pendingQ[1:]
		if _, ok := f.pending[old]; ok {
			delete(f.pending, old)
			f.met.lost.WithLabelValues("pending").Inc()
		}
	}
	f.pending[k] = p
	f.pendingQ = append(f.pendingQ, k)
}

// settle records an outcome; it becomes a receipt when its message asked
// for one (now, or when the message is read later).
func (f *receiptFold) settle(ref *pb.MessageRef, r Receipt) {
	k := msgKey{ref.GetPartition(), ref.GetOffset()}
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pending[k]; ok {
		delete(f.pending, k)
		f.emitLocked(k, p, r)
		return
	}
	if _, ok := f.early[k]; ok {
		return // the first outcome counts
	}
	if next, ok := f.read[k.partition]; ok && k.offset < next {
		return // its message was read and asked for no receipt
	}
	for len(f.early) >= maxEarly && len(f.earlyQ) > 0 {
		delete(f.early, f.earlyQ[0])
		f.earlyQ = f.earlyQ[1:]
	}
	f.early[k] = settled{r: r, t: f.now()}
	f.earlyQ = append(f.earlyQ, k)
}

func (f *receiptFold) emitLocked(k msgKey, p pendingReceipt, r Receipt) {
	r.uaid, r.channel, r.key = p.uaid, p.channelID, k
	sr := f.subs[p.sub]
	if sr == nil {
		if len(f.subs) >= f.cfg.Subscriptions {
			f.met.lost.WithLabelValues("subscriptions").Inc()
			return
		}
		sr = &subReceipts{notify: make(chan struct{})}
		f.subs[p.sub] = sr
	}
	r.seq = sr.seq + 1
	sr.seq++
	if len(sr.ring) >= f.cfg.Buffer {
		sr.ring = sr.ring[1:]
		f.met.lost.WithLabelValues("buffer").Inc()
	}
	sr.ring = append(sr.ring, r)
	sr.last = f.now()
	close(sr.notify)
	sr.notify = make(chan struct{})
	f.met.emitted.WithLabelValues(r.Outcome).Inc()
}

// since returns the subscription's receipts after seq (this node's order)
// and at or after fromMs, and a channel closed when more arrive.
func (f *receiptFold) since(sub [16]byte, seq uint64, fromMs int64) ([]Receipt, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sr := f.subs[sub]
	if sr == nil {
		sr = &subReceipts{notify: make(chan struct{})}
		if len(f.subs) < f.cfg.Subscriptions {
			f.subs[sub] = sr // so a waiting GET hears the first receipt
		}
	}
	var out []Receipt
	for _, r := range sr.ring {
		if r.seq > seq && r.TimeMs >= fromMs {
			out = append(out, r)
		}
	}
	return out, sr.notify
}

// sweep forgets subscriptions idle past Retention and expired requests.
func (f *receiptFold) sweep() {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, sr := range f.subs {
		cut := 0
		for cut < len(sr.ring) && now.Sub(time.UnixMilli(sr.ring[cut].TimeMs)) > f.cfg.Retention {
			cut++
		}
		sr.ring = sr.ring[cut:]
		if len(sr.ring) == 0 && now.Sub(sr.last) > f.cfg.Retention {
			delete(f.subs, id)
		}
	}
	for k, p := range f.pending {
		if now.After(p.expires) {
			delete(f.pending, k)
		}
	}
	q := f.pendingQ[:0]
	for _, k := range f.pendingQ {
		if _, ok := f.pending[k]; ok {
			q = append(q, k)
		}
	}
	f.pendingQ = q
	eq := f.earlyQ[:0]
	for _, k := range f.earlyQ {
		if e, ok := f.early[k]; ok && now.Sub(e.t) > time.Hour {
			delete(f.early, k)
		} else if ok {
			eq = append(eq, k)
		}
	}
	f.earlyQ = eq
}

// apply folds one record of the messages or acks topic.
func (f *receiptFold) apply(rec *kgo.Record, messagesTopic string) {
	if rec.Topic == messagesTopic {
		defer f.seen(msgKey{rec.Partition, rec.Offset})
	}
	ev, err := schema.Decode(rec)
	if err != nil {
		return // other writers' or unknown events carry no receipt
	}
	if rec.Topic == messagesTopic {
		if m := ev.GetMessageAccepted(); m != nil {
			f.accepted(msgKey{rec.Partition, rec.Offset}, ev, m)
		}
		return
	}
	switch b := ev.GetBody().(type) {
	case *pb.Event_Acked:
		f.settle(b.Acked.GetMsg(), Receipt{Outcome: "acked", Code: b.Acked.GetCode(), TimeMs: ev.GetTimeMs()})
	case *pb.Event_Expired:
		f.settle(b.Expired.GetMsg(), Receipt{Outcome: "expired", TimeMs: ev.GetTimeMs()})
	case *pb.Event_Dropped:
		reason := strings.ToLower(strings.TrimPrefix(b.Dropped.GetReason().String(), "DROP_REASON_"))
		f.settle(b.Dropped.GetMsg(), Receipt{Outcome: "dropped", Reason: reason, TimeMs: ev.GetTimeMs()})
	}
}

// run reads both topics from Retention ago until ctx ends; it marks the
// fold ready once it caught up with the ends it saw at start.
func (f *receiptFold) run(ctx context.Context, names schema.Names, log *slog.Logger) error {
	start := f.now().Add(-f.cfg.Retention).UnixMilli()
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), f.cfg.ClientOpts...),
		kgo.ConsumeTopics(names.Messages, names.Acks),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(start)),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("receipts fold client: %w", err)
	}
	defer cl.Close()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Warn("receipts fold fetch", "topic", topic, "partition", p, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { f.apply(r, names.Messages) })
		select {
		case <-sweep.C:
			f.sweep()
		default:
		}
		if fetches.NumRecords() == 0 {
			f.readyOne.Do(func() { close(f.ready) })
		}
	}
}
