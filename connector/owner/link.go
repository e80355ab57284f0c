package owner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// ownedPartition returns the state of p. Until the first assignment after
// Run started (a single node starting up) it waits for it, bounded by ctx;
// afterwards a partition that is not here is someone else's.
func (o *Owner) ownedPartition(ctx context.Context, p int32) (*partState, error) {
	for {
		o.mu.RLock()
		ps, assigned, changed := o.parts[p], o.assigned, o.changed
		o.mu.RUnlock()
		if ps != nil {
			return ps, nil
		}
		if assigned {
			return nil, link.ErrNotOwner
		}
		select {
		case <-o.stopped:
			return nil, link.ErrNotOwner
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waiting for the assignment: %v)", link.ErrNotOwner, ctx.Err())
		case <-changed:
		}
	}
}

// partitionOf returns the partition number of id.
func (o *Owner) partitionOf(id schema.UAID) int32 { return id.Partition(o.cfg.Partitions) }

// CheckUAID reports whether uaid is known and not reset, and its
// registered channels. It first waits
// until the fold has read every registration already in Kafka, so a
// client that registered a moment ago is never reset, and every message
// event, so a message deleted (DELETE answered 204) or replaced before
// this hello is not delivered after it.
func (o *Owner) CheckUAID(ctx context.Context, id schema.UAID) (link.UAIDInfo, error) {
	p := o.partitionOf(id)
	ctx, cancel := context.WithTimeout(ctx, o.cfg.CheckTimeout)
	defer cancel()
	ps, err := o.ownedPartition(ctx, p)
	if err != nil {
		return link.UAIDInfo{}, err
	}
	ends, err := o.checkEnds(ctx, p)
	if err != nil {
		return link.UAIDInfo{}, fmt.Errorf("owner: check uaid: %w", err)
	}
	probe := time.NewTicker(checkProbeInterval)
	defer probe.Stop()
	for {
		ps.mu.Lock()
		if ps.closed {
			ps.mu.Unlock()
			return link.UAIDInfo{}, link.ErrNotOwner
		}
		lag, next := -1, int64(0)
		for _, ti := range checkedTopics {
			if ps.next[ti] < ends[ti] {
				lag, next = ti, ps.next[ti]
				break
			}
		}
		if lag < 0 {
			info := ps.helloInfo(id)
			ps.mu.Unlock()
			return info, nil
		}
		progress := ps.progress
		ps.mu.Unlock()
		select {
		case <-ctx.Done():
			return link.UAIDInfo{}, fmt.Errorf("owner: check uaid: %s of partition %d not caught up: %w", o.groupTopics[lag], p, ctx.Err())
		case <-progress:
		case <-probe.C:
			o.probeCaughtUp(ctx, ps, lag, next, ends[lag])
		}
	}
}

// checkedTopics are the topics CheckUAID waits for. Acks too (cluster): a
// client moving from a node that shut down gracefully acked messages there
// whose Acked events are durable but maybe not folded here yet; the Attach
// that follows the hello must not deliver them again.
var checkedTopics = [...]int{tRegistrations, tMessages, tAcks}

// checkProbeInterval is how long CheckUAID waits for the fold before it
// checks whether the rest of the range holds any record at all.
const checkProbeInterval = 250 * time.Millisecond

// probeCaughtUp advances a topic's position over a range that holds no
// records a consumer returns (transaction markers): a direct fetch at next
// finding nothing proves nothing is left below end.
func (o *Owner) probeCaughtUp(ctx context.Context, ps *partState, ti int, next, end int64) {
	fp, err := fetchAt(ctx, o.adm, o.groupTopics[ti], ps.p, next, 1<<20)
	if err != nil || len(fp.Records) > 0 {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.closed && ps.next[ti] == next {
		ps.next[ti] = end
		ps.signal()
	}
}

// checkEnds returns the end offsets of partition p of the checkedTopics.
func (o *Owner) checkEnds(ctx context.Context, p int32) ([numGroupTopics]int64, error) {
	var ends [numGroupTopics]int64
	topics := make([]string, 0, len(checkedTopics))
	for _, ti := range checkedTopics {
		topics = append(topics, o.groupTopics[ti])
	}
	offs, err := o.kadm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return ends, fmt.Errorf("list end offsets: %w", err)
	}
	for _, ti := range checkedTopics {
		end, err := listed(offs, o.groupTopics[ti], p)
		if err != nil {
			return ends, err
		}
		ends[ti] = end
	}
	return ends, nil
}

// Attach makes s the session of uaid (replacing an older one) and delivers
// the stored messages. While the partition is still replaying, delivery
// waits until it has caught up (an ack not yet read must not cause a
// redelivery). s.Deliver is called with the partition's lock held: it must
// not block and must not call back into the owner (Detach, Acked, ...)
// from inside Deliver.
func (o *Owner) Attach(ctx context.Context, id schema.UAID, s link.Session) error {
	if s == nil {
		return errors.New("owner: attach: nil session")
	}
	p := o.partitionOf(id)
	ctx, cancel := context.WithTimeout(ctx, o.cfg.CheckTimeout)
	defer cancel()
	ps, err := o.ownedPartition(ctx, p)
	if err != nil {
		return err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return link.ErrNotOwner
	}
	ps.attach(id, s)
	return nil
}

// Detach forgets s if it is still the session of uaid.
func (o *Owner) Detach(id schema.UAID, s link.Session) {
	if s == nil {
		return
	}
	p := o.partitionOf(id)
	if ps := o.part(p); ps != nil {
		ps.mu.Lock()
		if !ps.closed {
			ps.detach(id, s)
		}
		ps.mu.Unlock()
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.carried[p][id]; c != nil && c.ConnID() == s.ConnID() {
		delete(o.carried[p], id)
	}
}

// Acked marks the message as acked by the client: it is never delivered
// again; it settles when the Acked event is folded.
func (o *Owner) Acked(id schema.UAID, ref *pb.MessageRef) {
	p := o.partitionOf(id)
	if ref == nil || ref.GetPartition() != p {
		return
	}
	if ps := o.part(p); ps != nil {
		ps.mu.Lock()
		if !ps.closed {
			ps.ackedLocally(id, ref)
		}
		ps.mu.Unlock()
	}
}

// reread fetches payloads that were over the memory budget and delivers.
func (o *Owner) reread(ps *partState, u *uaidState, offsets []int64) {
	go func() {
		base := o.prodCtx // Run's, set before any partition is owned
		if base == nil {
			return
		}
		ctx, cancel := context.WithTimeout(base, 10*time.Second)
		defer cancel()
		bodies, err := o.fetchBodies(ctx, ps.p, offsets)
		if err != nil {
			o.log.Warn("re-read payloads", "partition", ps.p, "err", err)
		}
		ps.mu.Lock()
		defer ps.mu.Unlock()
		ps.rereadDone(u, bodies)
	}()
}
