package connector

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/protocol"
)

// Connection states: the protocol machine's phases.
const (
	stateReady  = protocol.Ready // identified: attached to the owner
	stateClosed = protocol.Closed
)

// WebSocket close codes the server sends (the machine decides most).
const (
	closeNormal      = protocol.CloseNormal      // 1000: replaced by a newer connection
	closeGoingAway   = protocol.CloseGoingAway   // 1001: shutdown, dead peer
	closeProtocol    = protocol.CloseProtocol    // 1002: bad JSON, unknown type, no/second hello
	closeUnsupported = protocol.CloseUnsupported // 1003: binary frame
	closeInvalidData = protocol.CloseInvalidData // 1007: text that is not UTF-8
	closePolicy      = protocol.ClosePolicy      // 1008: a message past a size bound
	closeTryAgain    = protocol.CloseTryAgain    // 1013: owner or Kafka unavailable; retry
	closeBackoff     = protocol.CloseBackoff     // 4774: back off (too many pings or messages)
)

const (
	closeWriteWait       = time.Second // bound on writing the close frame
	closeLinger          = time.Second // read (and drop) until the peer's close, at most this long
	closeLingerAfterData = 50 * time.Millisecond
)

// conn is one client socket. It implements link.Session.
//
// Memory matters here (issue 17: at most 2.5 KB of RSS per idle
// connection), so an idle conn holds no goroutine, no read or write buffer
// (both are borrowed from pools while bytes move, wsframe.go), no
// gorilla Conn, and no maps or queues until a notification is in flight.
type conn struct {
	srv   *Server
	nc    net.Conn
	id    uint64
	since int64 // unix nanoseconds at upgrade

	// Poller bookkeeping, guarded by the poller's mutex.
	fd      int32
	pollGen uint32
	polled  bool

	// Timeout wheel bookkeeping, guarded by the wheel's mutex.
	slotIdx int32
	slot    int64 // 0: not in the wheel
	opened  int64 // the upgrade on the wheel's clock (monotonic): the hello timeout counts from it

	closing  atomic.Bool
	wclosed  bool         // a close frame was written; guarded by wmu
	lastRecv atomic.Int64 // the last byte from the client, on the wheel's clock
	pingSent atomic.Int64 // an unanswered server Ping, on the wheel's clock; 0 if none
	ua       string       // User-Agent, kept until the Connected event is written (reader only)

	wmu sync.Mutex // one frame write at a time (wsframe.go writeRaw)

	mu      sync.Mutex
	out     []outMsg // encoded messages waiting for the writer; nil when idle
	writing bool     // a goroutine is draining out
	closed  bool
	// proto is the client's protocol state (phase, UAID, channels, rates,
	// unacked notifications, broadcast subscriptions). Its phase is atomic;
	// every other call is made under mu (handlers.go). Its UAID is bound
	// under srv.mu by claim before the conn becomes ready, read-only after.
	proto protocol.Client
}

var _ link.Session = (*conn)(nil)

func newConnID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// ConnID is unique per connection: 16 hex characters.
// The owner asks for it on every delivery: no fmt.
func (c *conn) ConnID() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], c.id)
	return hex.EncodeToString(b[:])
}

// outMsg is one queued message. accepted (unix nanoseconds) is set for a
// notification whose push→socket latency is observed once it is written.
// A notification's b is borrowed from notifyBufs (buf) until it is written.
type outMsg struct {
	b        []byte
	buf      *[]byte
	accepted int64
}

// notifyBufs hold encoded notifications from the owner's Deliver until the
// write that copies them into a frame: one allocation per delivered message
// less.
var notifyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Deliver queues a notification without blocking. A socket that cannot keep
// up (queue full) is closed; the message stays pending at the owner.
func (c *conn) Deliver(n link.Notification) error {
	bp := notifyBufs.Get().(*[]byte)
	msg, err := protocol.AppendNotification((*bp)[:0], n)
	if err != nil {
		notifyBufs.Put(bp)
		return err
	}
	*bp = msg
	err = c.enqueue(outMsg{b: msg, buf: bp, accepted: observedAccept(n, c.since)}, false, func() { c.proto.Delivered(n) })
	if err != nil {
		notifyBufs.Put(bp) // not queued
		return err
	}
	c.srv.met.delivered()
	return nil
}

// observedAccept is when n was accepted (unix nanoseconds), or 0 when its
// push→socket latency is not observed: no accept time (an owner that does
// not send one), or accepted before this socket was opened. Such a message
// waited for its user agent to connect, and that wait (minutes, days) is
// not the pipeline's latency; ClickHouse's accept-to-ack figures include
// it. The event time has millisecond resolution: its middle is taken.
func observedAccept(n link.Notification, since int64) int64 {
	ms := n.Ref.GetAcceptedMs()
	if ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond)-1 {
		return 0
	}
	at := ms*int64(time.Millisecond) + int64(time.Millisecond)/2
	if at < since {
		return 0
	}
	return at
}

// send queues a reply. inline writes it from the calling goroutine (the
// reader) when no writer is running; the owner's Deliver never writes inline.
func (c *conn) send(msg []byte, inline bool) error {
	return c.enqueue(outMsg{b: msg}, inline, nil)
}

func (c *conn) enqueue(msg outMsg, inline bool, locked func()) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return link.ErrSessionClosed
	}
	if len(c.out) >= c.srv.cfg.SendQueue {
		c.mu.Unlock()
		c.srv.log.Info("send queue full; closing the connection", "uaid", c.proto.UAID(), "conn", c.ConnID())
		go c.perform(c.proto.QueueFull().Effects, false)
		return link.ErrSessionClosed
	}
	if locked != nil {
		locked()
	}
	c.out = append(c.out, msg)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	switch {
	case !start:
	case inline:
		c.drain(true)
	default:
		// The caller (the owner) must not block on this socket: one pass
		// that writes what the socket takes now; a writer goroutine is
		// started only for what is left (a full socket buffer).
		c.drain(false)
	}
	return nil
}

// drain writes queued messages until the queue is empty; only one drain
// runs per connection. All messages queued at a time go out in one write.
// Without block it does not wait for the socket: what does not fit at once
// is left to a writer goroutine.
func (c *conn) drain(block bool) {
	for {
		c.mu.Lock()
		batch := c.out
		c.out = nil
		if len(batch) == 0 || c.closed {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		bp := writeBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		for _, m := range batch {
			buf = appendFrame(buf, opText, m.b)
		}
		*bp = buf
		var err error
		if block {
			err = c.writeRaw(buf, time.Now().Add(c.srv.cfg.WriteTimeout))
		} else {
			var rest []byte
			var locked bool
			rest, locked, err = c.writeNow(buf)
			if err == nil && len(rest) > 0 {
				// The socket is full or busy: a goroutine waits for it
				// and carries on draining. The buffer goes with it.
				go c.finish(bp, rest, locked, batch)
				return
			}
		}
		c.wrote(bp, batch, err, !block)
		if err != nil {
			return
		}
	}
}

// finish writes the rest of a batch that did not fit at once (writeNow
// left it the write lock when locked), then keeps draining.
func (c *conn) finish(bp *[]byte, rest []byte, locked bool, batch []outMsg) {
	deadline := time.Now().Add(c.srv.cfg.WriteTimeout)
	var err error
	if locked {
		err = c.writeRest(rest, deadline)
	} else {
		err = c.writeRaw(rest, deadline)
	}
	c.wrote(bp, batch, err, false)
	if err == nil {
		c.drain(true)
	}
}

// wrote returns a batch's buffer and observes its notifications, or on a
// write error stops the writer and closes the connection. From the owner's
// Deliver (async) the close runs on its own goroutine: closing detaches the
// session from the owner, which takes the partition lock the owner holds
// while it delivers.
func (c *conn) wrote(bp *[]byte, batch []outMsg, err error, async bool) {
	if cap(*bp) <= 64<<10 { // a huge batch's buffer is not kept
		*bp = (*bp)[:0]
		writeBufs.Put(bp)
	}
	for _, m := range batch { // copied into the frame: their buffers are free
		if m.buf != nil && cap(*m.buf) <= 64<<10 {
			notifyBufs.Put(m.buf)
		}
	}
	if err != nil {
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
		c.srv.log.Debug("write failed; closing", "conn", c.ConnID(), "err", err)
		if async {
			go c.close(0, "")
		} else {
			c.close(0, "")
		}
		return
	}
	var now int64
	for _, m := range batch {
		if m.accepted != 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			c.srv.met.pushToSocket(now - m.accepted)
		}
	}
}

// liveness is what the sweeper's timers are checked against.
func (c *conn) liveness() protocol.Liveness {
	return protocol.Liveness{Since: c.opened, LastRecv: c.lastRecv.Load(), PingSent: c.pingSent.Load()}
}

// ping sends a WebSocket Ping (the sweeper found the socket idle).
func (c *conn) ping() {
	if err := c.writeControl(opPing, nil, time.Now().Add(c.srv.cfg.WriteTimeout)); err != nil {
		c.close(0, "")
	}
}

// serveReady reads and handles every message the client has sent so far.
// After a readiness event (own nil) data is known to be there, and a read
// buffer is borrowed for as long as bytes are buffered; a blocking reader
// goroutine passes its own buffer and first waits, with no deadline, for
// the next byte. It returns with nothing left in the read buffer, reporting
// whether the connection is still open.
func (c *conn) serveReady(own *bufio.Reader) bool {
	if c.proto.Phase() == stateClosed {
		return false
	}
	blocking := own != nil
	br := own
	if !blocking {
		br = getReader(c.nc)
		defer putReader(br) // empty: every byte was consumed or the conn closed
	}
	deadline := time.Now().Add(c.srv.cfg.ReadTimeout)
	if blocking {
		deadline = time.Time{}
	}
	if err := c.nc.SetReadDeadline(deadline); err != nil {
		c.close(0, "")
		return false
	}
	if _, err := br.Peek(1); err != nil {
		c.readFailed(err)
		return false
	}
	now := time.Now()
	if blocking {
		// A started message must complete in time.
		_ = c.nc.SetReadDeadline(now.Add(c.srv.cfg.ReadTimeout))
	}
	c.lastRecv.Store(c.srv.wheel.at(now))
	c.pingSent.Store(0) // any data proves the peer alive
	for {
		if !c.readOne(br) || c.proto.Phase() == stateClosed {
			return false
		}
		if br.Buffered() == 0 {
			if !blocking {
				// No deadline timer stays armed on an idle socket.
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			return true
		}
	}
}

func (c *conn) readFailed(err error) {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		c.srv.log.Debug("client closed", "conn", c.ConnID(), "code", ce.Code)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	default:
		c.srv.log.Debug("read failed; closing", "conn", c.ConnID(), "err", err)
	}
	c.close(0, "")
}

// close ends the connection once: it stops the poller and the writer,
// detaches from the owner, records Disconnected, sends a close frame with
// code (none when 0) and closes the socket. It may block for about a second
// (close handshake); callers that must not block run it in a goroutine.
func (c *conn) close(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	s := c.srv
	c.mu.Lock()
	prev := c.proto.Close()
	c.closed = true
	c.out = nil
	c.mu.Unlock()
	if s.poll != nil {
		s.poll.remove(c) // before the socket closes: its fd number may be reused
	}
	s.forget(c)
	if prev == stateReady {
		s.cfg.Link.Detach(c.proto.UAID(), c)
		s.produceDisconnected(c)
	}
	if code != 0 {
		_ = c.writeControl(opClose, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeWriteWait))
		c.linger()
	}
	_ = c.nc.Close()
	s.wg.Done()
}

// linger half-closes the socket after our close frame and drops what the
// client still sends until it closes too: closing with unread data would
// reset the connection and could destroy the close frame in flight.
func (c *conn) linger() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(closeLinger))
	var buf [128]byte
	for {
		if _, err := c.nc.Read(buf[:]); err != nil {
			return
		}
		// The peer is answering (its close frame is usually all there is):
		// wait only briefly for more.
		_ = c.nc.SetReadDeadline(time.Now().Add(closeLingerAfterData))
	}
}

// errConnClosed means the connection closed before it could be watched.
var errConnClosed = errors.New("connection closed")
