package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushlog/pushlog/connector/link"
)

// errLinkDown means the link broke before the call was answered.
var errLinkDown = errors.New("node link closed")

// errQueueFull closes a link whose peer does not keep up.
var errQueueFull = errors.New("node link send queue full")

// proxyKey names a client connection: one UAID on one connection node.
type proxyKey struct{ uaid, conn string }

// conn is one authenticated TCP link. Either end may send requests and
// answers on it: the dialer's connection-node calls (check, attach, ...)
// and the owner's deliveries back to the sessions attached through it.
type conn struct {
	n      *Node
	h      Handlers // of the life the link lives in
	nc     net.Conn
	br     *bufio.Reader
	peer   identity
	dialed bool
	out    chan []byte // encoded frames for the writer

	done      chan struct{} // closed when the link is closing
	closeOnce sync.Once
	ctx       context.Context // handlers of the peer's requests; ends with the link
	cancel    context.CancelFunc

	nextID  atomic.Uint64
	mu      sync.Mutex
	calls   map[uint64]chan *frame
	proxies map[proxyKey]link.Session // owner-side sessions that deliver through this link
}

func newConn(l *life, n *Node, nc net.Conn, br *bufio.Reader, peer identity, dialed bool) *conn {
	ctx, cancel := context.WithCancel(l.ctx)
	return &conn{
		n: n, h: l.Handlers, nc: nc, br: br, peer: peer, dialed: dialed,
		out:     make(chan []byte, n.cfg.QueueSize),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		calls:   make(map[uint64]chan *frame),
		proxies: make(map[proxyKey]link.Session),
	}
}

// run serves the link until it breaks, then detaches everything that
// delivered through it.
func (c *conn) run() {
	go c.writeLoop()
	err := c.readLoop()
	c.closeWith(err)
	c.cancel()
	c.n.linkClosed(c)
}

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *conn) closeWith(err error) {
	c.closeOnce.Do(func() {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			c.n.log.Info("node link closed", "peer", c.peer.addr, "node", c.peer.node, "err", err)
		} else {
			c.n.log.Debug("node link closed", "peer", c.peer.addr, "node", c.peer.node)
		}
		close(c.done)
		_ = c.nc.Close()
	})
}

func (c *conn) readLoop() error {
	var buf []byte
	for {
		if err := c.nc.SetReadDeadline(time.Now().Add(3 * c.n.cfg.Heartbeat)); err != nil {
			return err
		}
		f, b, err := readFrame(c.br, buf)
		buf = b
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		c.dispatch(f)
	}
}

func (c *conn) dispatch(f *frame) {
	n := c.n
	switch f.typ {
	case tPing:
	case tCheckResp, tAttachResp:
		c.mu.Lock()
		ch := c.calls[f.id]
		delete(c.calls, f.id)
		c.mu.Unlock()
		if ch != nil {
			ch <- f
		}
	case tCheck:
		n.goHandle(func() { n.handleCheck(c, f) })
	case tAttach:
		n.goHandle(func() { n.handleAttach(c, f) })
	case tDetach:
		n.handleDetach(c, f)
	case tAcked:
		n.handleAcked(c, f)
	case tDeliver:
		n.handleDeliver(c, f)
	case tGone:
		n.handleGone(c, f)
	default:
		n.log.Debug("ignoring unknown node link frame", "peer", c.peer.addr, "type", f.typ)
	}
}

// writeLoop writes queued frames in batches and a ping when idle.
func (c *conn) writeLoop() {
	bw := bufio.NewWriterSize(c.nc, 32<<10)
	ping, _ := appendFrame(nil, &frame{typ: tPing})
	t := time.NewTicker(c.n.cfg.Heartbeat)
	defer t.Stop()
	wrote := false
	for {
		var err error
		select {
		case <-c.done:
			return
		case b := <-c.out:
			err = c.writeBatch(bw, b)
			wrote = true
		case <-t.C:
			if !wrote {
				err = c.writeBatch(bw, ping)
			}
			wrote = false
		}
		if err != nil {
			c.closeWith(fmt.Errorf("write: %w", err))
			return
		}
	}
}

// writeBatch writes b and whatever else is queued, then flushes.
func (c *conn) writeBatch(bw *bufio.Writer, b []byte) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(3 * c.n.cfg.Heartbeat)); err != nil {
		return err
	}
	for {
		if _, err := bw.Write(b); err != nil {
			return err
		}
		select {
		case b = <-c.out:
			continue
		default:
		}
		return bw.Flush()
	}
}

// send queues an encoded frame without blocking. A full queue means the
// peer is not keeping up: the link is closed (everything delivered through
// it is detached and re-attached on a new one).
func (c *conn) send(b []byte) bool {
	if c.closed() {
		return false
	}
	select {
	case c.out <- b:
		return true
	default:
		c.closeWith(errQueueFull)
		return false
	}
}

func (c *conn) sendFrame(f *frame) bool {
	b, err := appendFrame(nil, f)
	if err != nil {
		c.n.log.Warn("node link frame not sent", "type", f.typ, "err", err)
		return false
	}
	return c.send(b)
}

// call sends a request and waits for its answer.
func (c *conn) call(ctx context.Context, f *frame) (*frame, error) {
	f.id = c.nextID.Add(1)
	ch := make(chan *frame, 1)
	c.mu.Lock()
	c.calls[f.id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.calls, f.id)
		c.mu.Unlock()
	}()
	if !c.sendFrame(f) {
		return nil, errLinkDown
	}
	select {
	case r := <-ch:
		return r, nil
	case <-c.done:
		return nil, errLinkDown
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// deliver sends a notification for a session on the peer.
func (c *conn) deliver(uaid, connID string, n link.Notification) error {
	if !c.sendFrame(&frame{typ: tDeliver, uaid: uaid, conn: connID, ref: n.Ref, note: &n}) {
		return link.ErrSessionClosed
	}
	return nil
}

// track remembers that s delivers through this link, so that it is
// detached when the link breaks.
func (c *conn) track(k proxyKey, s link.Session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed() {
		return false
	}
	c.proxies[k] = s
	return true
}

// untrack forgets s (only if it is still the one tracked for k).
func (c *conn) untrack(k proxyKey, s link.Session) {
	c.mu.Lock()
	if c.proxies[k] == s {
		delete(c.proxies, k)
	}
	c.mu.Unlock()
}

// takeProxies empties the tracked sessions of a closed link.
func (c *conn) takeProxies() map[proxyKey]link.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.proxies
	c.proxies = map[proxyKey]link.Session{}
	return p
}
