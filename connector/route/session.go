package route

import (
	"sync"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// maxSeen bounds the messages a session remembers; past it the acked ones
// are forgotten first.
const maxSeen = 1024

// msgKey names a message: its place in pushlog.messages.
type msgKey struct {
	p   int32
	off int64
}

func keyOf(ref *pb.MessageRef) msgKey { return msgKey{ref.GetPartition(), ref.GetOffset()} }

// session wraps a client connection of this node. Every owner (the local
// one, remote ones over the link) delivers through it, so it can keep the
// promise "at most once per connection" across owners: when a partition
// moves, the new owner sends again what the old one sent but was not acked
// yet, and the client must not see it twice. It also counts delivered but
// unacked messages for a graceful drain.
type session struct {
	r     *Router
	inner link.Session
	uaid  schema.UAID
	p     int32

	mu      sync.Mutex
	route   string // link address of the owner it is attached to; "" none yet
	closed  bool
	seen    map[msgKey]bool // delivered on this connection; true once acked
	unacked int
}

var _ link.Session = (*session)(nil)

func (s *session) ConnID() string { return s.inner.ConnID() }

// Deliver passes n to the connection unless it already carried n (then it
// reports success: the client has it and will ack it).
func (s *session) Deliver(n link.Notification) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.r.draining.Load() {
		return link.ErrSessionClosed
	}
	if n.Ref == nil {
		return s.inner.Deliver(n)
	}
	k := keyOf(n.Ref)
	if _, dup := s.seen[k]; dup {
		s.r.suppressed.Add(1)
		return nil
	}
	if err := s.inner.Deliver(n); err != nil {
		return err
	}
	if s.seen == nil {
		s.seen = make(map[msgKey]bool, 4)
	}
	s.seen[k] = false
	s.unacked++
	s.r.unacked.Add(1)
	s.prune()
	return nil
}

// acked records the client's ack: the message is never passed again.
func (s *session) acked(ref *pb.MessageRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	k := keyOf(ref)
	if done, ok := s.seen[k]; ok && !done {
		s.unacked--
		s.r.unacked.Add(-1)
	}
	if s.seen == nil {
		s.seen = make(map[msgKey]bool, 4)
	}
	s.seen[k] = true
	s.prune()
}

// prune keeps seen bounded: acked entries go first (their Acked events
// settle them at any owner), unacked ones only when there are too many.
func (s *session) prune() {
	if len(s.seen) <= maxSeen {
		return
	}
	for k, done := range s.seen {
		if done {
			delete(s.seen, k)
		}
	}
	if len(s.seen) <= 2*maxSeen {
		return
	}
	for k := range s.seen {
		delete(s.seen, k)
	}
	s.r.unacked.Add(-int64(s.unacked))
	s.unacked = 0
}

func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.r.unacked.Add(-int64(s.unacked))
	s.unacked = 0
	s.seen = nil
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *session) routeAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.route
}

// swapRoute records the owner s is attached to and returns the previous.
func (s *session) swapRoute(addr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.route
	s.route = addr
	return prev
}
