package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/pushlog/pushlog/schema"
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

type subReceipts struct {
	ring   []Receipt // oldest first, at most Buffer
	seq    uint64
	last   time.Time
	notify chan struct{} // closed and replaced on each new receipt
}

// StatusFeed is the node's one fold of the messages and acks topics
// (projector.StatusTable), which also answers GET /m/{id}: receipts follow
// it instead of reading the topics again, and a message's outcome is the
// one its status settled on.
type StatusFeed interface {
	// Follow reports every folded event to fn, in fold order; called
	// before the feed runs.
	Follow(fn func(schema.StatusChange))
}

// receiptFold turns the status fold's changes into receipts per
// subscription: a MessageAccepted with receipt_sub is pending until its
// status settles (at once when the outcome was folded first: the status
// holds it, so nothing here waits for a message). Every bound forgets the
// oldest and counts it.
type receiptFold struct {
	cfg ReceiptsConfig
	now func() time.Time
	met *receiptMetrics

	mu       sync.Mutex
	pending  map[msgKey]pendingReceipt
	pendingQ []msgKey
	subs     map[[16]byte]*subReceipts
}

func newReceiptFold(cfg ReceiptsConfig, now func() time.Time) *receiptFold {
	return &receiptFold{cfg: cfg, now: now, pending: map[msgKey]pendingReceipt{}, subs: map[[16]byte]*subReceipts{}}
}

func (f *receiptFold) pendingLen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// follow folds one change of the status fold (StatusFeed.Follow).
func (f *receiptFold) follow(c schema.StatusChange) {
	k := msgKey{c.Key.Partition, c.Key.Offset}
	if a := c.Accepted; a != nil {
		if c.Before.AcceptedMs == 0 { // not a refold after a restart
			f.accepted(k, a, c.After)
		}
		return
	}
	if !c.Before.State.Settled() && c.After.State.Settled() {
		f.settled(k, c.After)
	}
}

// receiptOf is the receipt of a settled status.
func receiptOf(st schema.MessageStatus) Receipt {
	r := Receipt{TimeMs: st.SettledMs}
	switch st.State {
	case schema.StateAcked:
		r.Outcome, r.Code = "acked", st.AckCode
	case schema.StateExpired:
		r.Outcome = "expired"
	case schema.StateDeleted:
		r.Outcome, r.Reason = "dropped", "deleted"
	default:
		r.Outcome, r.Reason = "dropped", schema.DropReasonName(st.Reason)
	}
	return r
}

// accepted records a message that asked for a receipt, or emits it when
// its status is settled already (the outcome was folded first).
func (f *receiptFold) accepted(k msgKey, a *schema.Accepted, st schema.MessageStatus) {
	if len(a.ReceiptSub) != 16 {
		return
	}
	if f.now().Sub(time.UnixMilli(a.TimeMs)) > f.cfg.Retention {
		return // the status fold reads further back than receipts are kept
	}
	// a aliases the record: what is kept is copied.
	p := pendingReceipt{uaid: string(a.UAIDText), channelID: string(a.ChannelID),
		expires: time.UnixMilli(a.TimeMs).Add(time.Duration(a.TTLS)*time.Second + f.cfg.Retention)}
	copy(p.sub[:], a.ReceiptSub)
	f.mu.Lock()
	defer f.mu.Unlock()
	if st.State.Settled() {
		f.emitLocked(k, p, receiptOf(st))
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

// settled emits the receipt of a message that asked for one when its
// status settles (the first settlement folded: the receipt is not sent
// again if an earlier one is folded later).
func (f *receiptFold) settled(k msgKey, st schema.MessageStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pending[k]; ok {
		delete(f.pending, k)
		f.emitLocked(k, p, receiptOf(st))
	}
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
}

// sweepEvery sweeps until ctx ends.
func (f *receiptFold) sweepEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.sweep()
		}
	}
}
