package owner

// What the owner needs beyond a single node: announcing its node-link
// address to the group, telling routers which node owns which partition,
// and delivering to clients that presence says are connected elsewhere.

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// SessionDialer makes sessions for connections on other nodes. The owner
// calls Session with a partition's lock held: it must not block.
type SessionDialer interface {
	// Session returns a session that delivers to connection connID of
	// uaid on the node whose link address is linkAddr, or nil when that
	// node cannot be reached at all. The session's type has a method
	// FromPresence() bool returning true (see presenceSession).
	Session(linkAddr string, uaid schema.UAID, connID string) link.Session
}

// presenceSession is a session made from pushlog.presence rather than by an
// Attach. It stands in for the connection until the connection node
// attaches (or presence says the connection ended); it never replaces an
// attached session.
type presenceSession interface {
	link.Session
	FromPresence() bool
}

func fromPresence(s link.Session) bool {
	p, ok := s.(presenceSession)
	return ok && p.FromPresence()
}

// followPresence makes the connection that presence names u's session when
// u has none of its own: after a takeover, the new owner delivers what is
// pending to clients connected on other nodes without waiting for them.
// The caller holds ps.mu.
func (ps *partState) followPresence(u *uaidState) {
	d, pr := ps.env.cfg.Remote, u.presence
	if d == nil || pr == nil || pr.linkAddr == "" || pr.connID == "" {
		return
	}
	if s := u.session; s != nil && (!fromPresence(s) || s.ConnID() == pr.connID) {
		return // attached, or already following this connection
	}
	if s := d.Session(pr.linkAddr, u.id, pr.connID); s != nil {
		ps.attach(u.id, s)
	}
}

// unfollowPresence drops a session made from presence when its connection
// ended (connID "" for a tombstone: any). The caller holds ps.mu.
func (ps *partState) unfollowPresence(u *uaidState, connID string) {
	if s := u.session; s != nil && fromPresence(s) && (connID == "" || s.ConnID() == connID) {
		u.session = nil
	}
}

// Owns reports whether this owner holds partition p now.
func (o *Owner) Owns(p int32) bool { return o.part(p) != nil }

// ErrRebalancing means the owners' group is between two assignments.
var ErrRebalancing = errors.New("owners' group is rebalancing")

// GroupOwners describes the owners' consumer group and returns the link
// address of the member assigned each partition number of topic (one of the
// group topics; they are co-assigned). A partition in no assignment (a
// rebalance is moving it) is missing from the map; one owned by a member
// without a link address maps to "".
func GroupOwners(ctx context.Context, adm *kadm.Client, group, topic string) (map[int32]string, error) {
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", group, err)
	}
	g, ok := described[group]
	if !ok {
		return nil, fmt.Errorf("describe group %s: not in the response", group)
	}
	if g.Err != nil {
		return nil, fmt.Errorf("describe group %s: %w", group, g.Err)
	}
	if g.State != "Stable" {
		// Mid-rebalance the members' metadata and assignments are not
		// settled yet: keep what was known before.
		return nil, fmt.Errorf("%w: group %s is %s", ErrRebalancing, group, g.State)
	}
	owners := make(map[int32]string)
	for _, m := range g.Members {
		meta, ok := m.Join.AsConsumer()
		if !ok {
			continue
		}
		addr := LinkAddrOf(meta.UserData)
		assigned, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, t := range assigned.Topics {
			if t.Topic != topic {
				continue
			}
			for _, p := range t.Partitions {
				owners[p] = addr
			}
		}
	}
	return owners, nil
}

// Redeliver sends uaid's pending messages again if s is still its session
// (a remote session whose node link came up after a delivery failed).
func (o *Owner) Redeliver(id schema.UAID, s link.Session) {
	if s == nil {
		return
	}
	ps := o.part(o.partitionOf(id))
	if ps == nil {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if u := ps.uaids[id]; !ps.closed && u != nil && u.session == s && ps.ready {
		ps.deliverPending(u, true)
	}
}
