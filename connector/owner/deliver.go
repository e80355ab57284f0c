package owner

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// deliverPending sends u's live, unexpired messages that were not yet sent
// on its current session, in offset order. Deliver never blocks; when it
// fails the rest stay pending for the next Attach. When a payload is not
// in memory and allowFetch is set, the remaining ones are re-read from
// Kafka asynchronously and delivery resumes from there, so the order is
// kept; without allowFetch such messages are skipped this round.
func (ps *partState) deliverPending(u *uaidState, allowFetch bool) {
	if ps.bridgePending(u, allowFetch) { // bridge.go: a mobile UAID has no socket
		return
	}
	s := u.session
	if s == nil || !ps.ready {
		return
	}
	now := ps.env.now().UnixMilli()
	for i, m := range u.pending {
		if m.state != stLive || m.sentGen == u.sessGen || now > m.expiryMs {
			continue
		}
		if m.body == nil && m.flags&fBodyGone != 0 {
			if !allowFetch {
				continue
			}
			if !u.fetching {
				ps.startReread(u, u.pending[i:], now)
			}
			return
		}
		if err := ps.deliverOne(u, s, m); err != nil {
			ps.env.log.Debug("delivery stopped", "partition", ps.p, "offset", m.offset, "err", err)
			return
		}
	}
}

func (ps *partState) startReread(u *uaidState, rest []*pending, now int64) {
	var offs []int64
	for _, m := range rest {
		if m.state == stLive && m.sentGen != u.sessGen && now <= m.expiryMs && m.body == nil && m.flags&fBodyGone != 0 {
			offs = append(offs, m.offset)
		}
	}
	if len(offs) == 0 || ps.env.reread == nil {
		return
	}
	u.fetching = true
	ps.env.reread(ps, u, offs)
}

// rereadDone takes payloads re-read for u (offset -> body), delivers, and
// forgets them again: they were over the memory budget.
func (ps *partState) rereadDone(u *uaidState, bodies map[int64]*body) {
	u.fetching = false
	if ps.closed {
		return
	}
	var loaded []*pending
	for off, b := range bodies {
		m := ps.msgs.find(off)
		if m != nil && m.u == u && m.state == stLive && m.body == nil {
			m.body = b
			m.flags |= fReread
			loaded = append(loaded, m)
		}
	}
	ps.deliverPending(u, false)
	for _, m := range loaded {
		if m.flags&fReread != 0 {
			ps.dropBody(m)
		}
	}
	ps.forgetIfIdle(u)
}

// deliverOne writes m to s and records the attempt.
func (ps *partState) deliverOne(u *uaidState, s link.Session, m *pending) error {
	n, err := ps.notification(u, m)
	if err != nil {
		return err
	}
	if err := s.Deliver(n); err != nil {
		return err
	}
	m.sentGen = u.sessGen
	m.attempts++
	if m.flags&fReread != 0 {
		ps.dropBody(m)
	}
	ev := schema.NewEvent(n.UAID, ps.env.now())
	ev.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{
		Msg:     n.Ref,
		Node:    ps.env.cfg.NodeID,
		ConnId:  s.ConnID(),
		Attempt: m.attempts,
	}}
	ps.holdDelivered(m.offset, ev)
	return nil
}

// DeliveredHold is how long a Delivered event waits for its message's ack
// before it is written. A client acks within milliseconds, and the
// connection node reports the ack (Link.Acked) right after it queued the
// Acked event with the same producer, which has usually not sent it yet,
// so the two records travel in one produce request and are read in one
// fetch: a connected push costs two appends and two owner wake-ups
// instead of three (measured: produce requests per 100/s run 8,814 →
// 6,180, CPU per push lower in six of six pairs). Nothing waits on a Delivered event by the
// millisecond: its time is the delivery's, the fold is order-independent
// (Delivered only raises attempts, never unsettles), and status and
// analytics read it whenever it comes.
const DeliveredHold = 100 * time.Millisecond

// maxHeld bounds the Delivered events one partition holds (a flood of
// deliveries nobody acks): past it all are written at once.
const maxHeld = 4096

// holdDelivered keeps ev, the Delivered event of the message at off, until
// its ack, DeliveredHold, or the partition's release (flushHeld).
func (ps *partState) holdDelivered(off int64, ev *pb.Event) {
	if ps.env.noHold.Load() {
		ps.writeDelivered(off, ev)
		return
	}
	if old := ps.held[off]; old != nil {
		ps.writeDelivered(off, old) // an earlier attempt's: keep both, in order
	}
	if ps.held == nil {
		ps.held = make(map[int64]*pb.Event)
	}
	ps.held[off] = ev
	switch {
	case len(ps.held) > maxHeld:
		ps.env.heldOverflows.Add(1)
		ps.flushHeld()
	case len(ps.held) == 1:
		if ps.heldTimer == nil {
			ps.heldTimer = time.AfterFunc(DeliveredHold, ps.heldExpired)
		} else {
			ps.heldTimer.Reset(DeliveredHold)
		}
	}
}

// releaseHeld writes the held Delivered event of the message at off, if
// any: its ack is about to be written.
func (ps *partState) releaseHeld(off int64) {
	ev := ps.held[off]
	if ev == nil {
		return
	}
	delete(ps.held, off)
	ps.writeDelivered(off, ev)
	if len(ps.held) == 0 {
		ps.heldTimer.Stop()
	}
}

// heldExpired writes what waited DeliveredHold (or less: one timer serves
// the partition, armed when the first event is held).
func (ps *partState) heldExpired() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.flushHeld()
}

// flushHeld writes every held Delivered event.
func (ps *partState) flushHeld() {
	for _, h := range ps.takeHeld() {
		ps.writeDelivered(h.off, h.ev)
	}
}

// writeHeldLater is flushHeld for a partition being released: the caller
// holds the owner's lock too, and a producer whose buffer is full (Kafka
// down) would block every owner call until its delivery timeout, so the
// events are written from a goroutine of their own.
func (ps *partState) writeHeldLater() {
	held := ps.takeHeld()
	if len(held) == 0 {
		return
	}
	go func() {
		for _, h := range held {
			ps.writeDelivered(h.off, h.ev)
		}
	}()
}

type heldEvent struct {
	off int64
	ev  *pb.Event
}

// takeHeld empties the held events and returns them in offset order (a
// UAID's deliveries in their order).
func (ps *partState) takeHeld() []heldEvent {
	if len(ps.held) == 0 {
		return nil
	}
	out := make([]heldEvent, 0, len(ps.held))
	for off, ev := range ps.held {
		out = append(out, heldEvent{off, ev})
	}
	slices.SortFunc(out, func(a, b heldEvent) int { return cmp.Compare(a.off, b.off) })
	clear(ps.held)
	if ps.heldTimer != nil {
		ps.heldTimer.Stop()
	}
	return out
}

func (ps *partState) writeDelivered(off int64, ev *pb.Event) {
	ps.env.produce(ev, func(err error) {
		ps.env.log.Debug("delivered event not written", "partition", ps.p, "offset", off, "err", err)
	})
}

// notification builds what the socket gets for m.
func (ps *partState) notification(u *uaidState, m *pending) (link.Notification, error) {
	uaid := u.uaid()
	ch := schema.FormatChannelID(m.channel[:])
	ver, err := ps.env.cfg.Sealer.SealMessageID(schema.MessageID{UAID: uaid, ChannelID: ch, Partition: ps.p, Offset: m.offset})
	if err != nil {
		return link.Notification{}, fmt.Errorf("seal message id: %w", err)
	}
	n := link.Notification{UAID: uaid, ChannelID: ch, Version: ver, Ref: ps.ref(m, ch)}
	if b := m.body; b != nil && len(b.payload) > 0 {
		n.Data = b.payload
		n.Encoding = handleValue(b.encoding)
		n.Encryption = b.encryption
		n.CryptoKey = b.cryptoKey
	}
	return n, nil
}

// attach makes s the session of u and delivers what is pending.
func (ps *partState) attach(id schema.UAID, s link.Session) {
	u := ps.user(id)
	// The same connection attaching again keeps its generation: a message
	// is sent at most once per connection.
	if u.session == nil || u.session.ConnID() != s.ConnID() {
		u.sessGen = ps.env.gen.Add(1)
	}
	u.session = s
	ps.seenNow(id)
	if ps.ready {
		ps.deliverPending(u, true)
	}
}

// detach forgets s if it is still u's session.
func (ps *partState) detach(id schema.UAID, s link.Session) {
	u := ps.uaids[id]
	if u == nil || u.session == nil || u.session.ConnID() != s.ConnID() {
		return
	}
	if fromPresence(s) && u.session != s {
		return // cluster.go: a session made from presence detaches only itself
	}
	u.session = nil
	ps.seenNow(id) // the connection ended now: idle from here
	ps.forgetIfIdle(u)
}

// ackedLocally marks the client's ack at once: the message is never sent
// again, and it settles when the connection node's Acked event is read.
func (ps *partState) ackedLocally(id schema.UAID, ref *pb.MessageRef) {
	ps.releaseHeld(ref.GetOffset())
	m := ps.msgs.find(ref.GetOffset())
	if m == nil || m.u == nil || m.u.id != id {
		return
	}
	ps.markSettling(m, reasonAcked)
}

// WriteHeld writes every Delivered event still waiting for its ack
// (DeliveredHold), and from then on every delivery's at once. A node
// shutting down calls it before it flushes its producer, so that no
// delivery's event is left for a flush that will not come.
func (o *Owner) WriteHeld() {
	o.env.noHold.Store(true)
	for _, ps := range o.partList() {
		ps.mu.Lock()
		ps.flushHeld()
		ps.mu.Unlock()
	}
}
