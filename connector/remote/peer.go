package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sony/gobreaker/v2"
)

// peer is another node as this node dials it: at most one dialed link at a
// time, behind a circuit breaker.
type peer struct {
	n    *Node
	addr string
	cb   *gobreaker.CircuitBreaker[*frame]

	mu      sync.Mutex
	conn    *conn
	dialing chan struct{} // closed when the dial in progress ends
	lastErr error
	waiting map[*presenceProxy]struct{} // deliveries that failed while dialing
}

func newPeer(n *Node, addr string) *peer {
	p := &peer{n: n, addr: addr}
	p.cb = gobreaker.NewCircuitBreaker[*frame](gobreaker.Settings{
		Name:        "link " + addr,
		MaxRequests: 1,
		Timeout:     n.cfg.BreakerOpen,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n.cfg.BreakerFailures },
		// The caller giving up says nothing about the peer.
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			n.log.Info("node link breaker", "peer", addr, "from", from.String(), "to", to.String())
		},
	})
	return p
}

// live returns the dialed link if it is up.
func (p *peer) live() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.liveLocked()
}

func (p *peer) liveLocked() *conn {
	if p.conn != nil && !p.conn.closed() {
		return p.conn
	}
	return nil
}

// get returns the dialed link, dialing (and waiting) if needed.
func (p *peer) get(ctx context.Context) (*conn, error) {
	for {
		p.mu.Lock()
		if c := p.liveLocked(); c != nil {
			p.mu.Unlock()
			return c, nil
		}
		if p.cb.State() == gobreaker.StateOpen {
			err := p.lastErr
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: %s: breaker open (last: %v)", ErrUnavailable, p.addr, err)
		}
		ch, started := p.startDialLocked()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, p.addr, ctx.Err())
		}
		p.mu.Lock()
		c, err := p.liveLocked(), p.lastErr
		p.mu.Unlock()
		if c != nil {
			return c, nil
		}
		if started || err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, p.addr, err)
		}
	}
}

// ensureDial starts dialing unless a link is up, a dial runs or the
// breaker is open.
func (p *peer) ensureDial() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.liveLocked() == nil && p.cb.State() != gobreaker.StateOpen {
		p.startDialLocked()
	}
}

// connOrWait returns the link for a presence proxy's delivery. Without
// one, the proxy waits for the dial in progress (it is redelivered to when
// the link comes up) or, when the peer is unreachable, is detached.
func (p *peer) connOrWait(px *presenceProxy) *conn {
	p.mu.Lock()
	if c := p.liveLocked(); c != nil {
		p.mu.Unlock()
		return c
	}
	if p.cb.State() != gobreaker.StateOpen {
		p.startDialLocked()
		if p.waiting == nil {
			p.waiting = make(map[*presenceProxy]struct{})
		}
		p.waiting[px] = struct{}{}
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	p.n.detachLater(px.id, px)
	return nil
}

// startDialLocked starts a dial unless one runs; it returns the channel
// closed when the dial ends and whether this call started it.
func (p *peer) startDialLocked() (chan struct{}, bool) {
	if p.dialing != nil {
		return p.dialing, false
	}
	ch := make(chan struct{})
	p.dialing = ch
	p.n.goHandle(p.dial)
	return ch, true
}

func (p *peer) dial() {
	var c *conn
	_, err := p.cb.Execute(func() (*frame, error) {
		var err error
		c, err = p.n.dial(p.addr)
		return nil, err
	})
	p.mu.Lock()
	if err == nil {
		p.conn = c
	}
	p.lastErr = err
	ch := p.dialing
	p.dialing = nil
	waiting := p.waiting
	p.waiting = nil
	p.mu.Unlock()
	close(ch)
	if err != nil {
		p.n.log.Debug("node link dial failed", "peer", p.addr, "err", err)
		if len(waiting) == 0 {
			return
		}
		// A dial may fail before Serve: the owner comes with Serve.
		if h, ok := p.n.servedHandlers(); ok {
			for px := range waiting {
				h.Owner.Detach(px.id, px)
			}
		}
		return
	}
	p.n.goHandle(c.run)
	for px := range waiting {
		c.h.Owner.Redeliver(px.id, px)
	}
}

// dropConn forgets c when it closed.
func (p *peer) dropConn(c *conn) {
	p.mu.Lock()
	if p.conn == c {
		p.conn = nil
	}
	p.mu.Unlock()
}
