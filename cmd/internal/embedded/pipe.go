package embedded

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// newPipe returns the two ends of an in-memory, buffered, full-duplex
// connection. Unlike net.Pipe, a Write returns once its bytes are queued
// (as on a socket) instead of waiting until the peer has read them all:
// kgo pipelines requests and kfake answers from its own goroutines, and a
// synchronous hand-off made each of them wait for the other's scheduling
// (closed-loop pushes ran slower than over loopback TCP). A writer waits
// while pipeBuffer bytes are unread, so a direction holds at most that
// plus one write (read bytes are dropped before the array grows).
//
// Errors are the ones kgo retries over TCP: net.ErrClosed on a closed
// end, EPIPE when writing to a closed peer (with io.ErrClosedPipe kgo gave
// up on requests it retries after a dropped TCP connection).
func newPipe() (net.Conn, net.Conn) {
	ab, ba := newPipeQueue(), newPipeQueue()
	a := &pipeConn{in: ba, out: ab, done: make(chan struct{})}
	b := &pipeConn{in: ab, out: ba, done: make(chan struct{})}
	a.peer, b.peer = b, a
	a.rd.init()
	a.wd.init()
	b.rd.init()
	b.wd.init()
	return a, b
}

// pipeBuffer is how many unread bytes one direction queues before its
// writer waits.
const pipeBuffer = 4 << 20

// pipeQueue is one direction's unread bytes.
type pipeQueue struct {
	mu       sync.Mutex
	buf      []byte // buf[off:] is unread; the array is kept while small
	off      int
	closed   bool          // the writer's end closed: reads drain, then EOF
	readable chan struct{} // cap 1: bytes were added or the queue closed
	writable chan struct{} // cap 1: bytes were read
}

func newPipeQueue() *pipeQueue {
	return &pipeQueue{readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

// reset empties the drained queue, keeping its array for the next write
// unless a large message grew it.
func (q *pipeQueue) reset() {
	q.off = 0
	if cap(q.buf) > pipeKeep {
		q.buf = nil
		return
	}
	q.buf = q.buf[:0]
}

// compact moves the unread bytes to the front of the array before a write
// of n bytes would grow it, or once half of it is read: a reader that
// never quite catches up (kgo pipelines requests, kfake reads exact frames)
// must not keep everything ever written in one growing array.
func (q *pipeQueue) compact(n int) {
	if q.off == 0 || (len(q.buf)+n <= cap(q.buf) && q.off < len(q.buf)/2) {
		return
	}
	k := copy(q.buf, q.buf[q.off:])
	q.buf, q.off = q.buf[:k], 0
}

// pipeKeep is the largest array a drained queue keeps: requests and most
// responses fit, a takeover's multi-megabyte fetch responses do not.
const pipeKeep = 256 << 10

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

type pipeConn struct {
	in, out *pipeQueue
	peer    *pipeConn
	rd, wd  pipeDeadline
	once    sync.Once
	done    chan struct{} // this end closed
}

// errPipeClosed is the error of I/O on a closed end, as net's for a closed
// socket.
func errPipeClosed(op string) error {
	return &net.OpError{Op: op, Net: "pipe", Addr: pipeAddr{}, Err: net.ErrClosed}
}

// errPeerClosed is a write's error once the peer closed: EPIPE, as on a
// socket.
var errPeerClosed = &net.OpError{Op: "write", Net: "pipe", Addr: pipeAddr{}, Err: os.NewSyscallError("write", syscall.EPIPE)}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (c *pipeConn) LocalAddr() net.Addr  { return pipeAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr { return pipeAddr{} }

func (c *pipeConn) Read(b []byte) (int, error) {
	q := c.in
	for {
		if err := c.stopped(opRead); err != nil {
			return 0, err
		}
		q.mu.Lock()
		if q.off < len(q.buf) {
			n := copy(b, q.buf[q.off:])
			q.off += n
			rest := len(q.buf) - q.off
			if rest == 0 {
				q.reset()
			}
			q.mu.Unlock()
			signal(q.writable)
			if rest > 0 {
				signal(q.readable) // another reader may take the rest
			}
			return n, nil
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		c.block(opRead, q.readable)
	}
}

func (c *pipeConn) Write(b []byte) (int, error) {
	q := c.out
	for {
		if err := c.stopped(opWrite); err != nil {
			return 0, err
		}
		q.mu.Lock()
		if len(q.buf)-q.off < pipeBuffer {
			q.compact(len(b))
			q.buf = append(q.buf, b...)
			q.mu.Unlock()
			signal(q.readable)
			return len(b), nil
		}
		q.mu.Unlock()
		c.block(opWrite, q.writable)
	}
}

const (
	opRead  = "read"
	opWrite = "write"
)

// stopped is the error that ends a read or write now: this end closed,
// the peer closed (writes only: a read drains what was queued first), or
// the op's deadline passed; nil when none has.
func (c *pipeConn) stopped(op string) error {
	peer, deadline := c.watch(op)
	select {
	case <-c.done:
		return errPipeClosed(op)
	case <-peer:
		return errPeerClosed
	case <-deadline:
		return os.ErrDeadlineExceeded
	default:
		return nil
	}
}

// block waits until ready is signalled or something stopped would report
// happens; the caller's loop then looks again.
func (c *pipeConn) block(op string, ready <-chan struct{}) {
	peer, deadline := c.watch(op)
	select {
	case <-ready:
	case <-c.done:
	case <-peer:
	case <-deadline:
	}
}

// watch is what ends op besides this end's close: the peer's close (nil
// for reads: never ready) and op's deadline.
func (c *pipeConn) watch(op string) (peer, deadline <-chan struct{}) {
	if op == opWrite {
		return c.peer.done, c.wd.wait()
	}
	return nil, c.rd.wait()
}

// Close closes this end: its reads and writes fail, the peer reads what
// was queued and then EOF, and the peer's writes fail.
func (c *pipeConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.out.mu.Lock()
		c.out.closed = true
		c.out.mu.Unlock()
		signal(c.out.readable)
		signal(c.in.writable)
	})
	return nil
}

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

func (c *pipeConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

func (c *pipeConn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}

// pipeDeadline is a settable deadline: wait returns a channel that is
// closed once the deadline has passed.
type pipeDeadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{}
}

func (d *pipeDeadline) init() { d.passed = make(chan struct{}) }

func (d *pipeDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: its close has happened or is under way
	}
	d.timer = nil
	closed := isClosed(d.passed)
	if t.IsZero() {
		if closed {
			d.passed = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.passed = make(chan struct{})
		}
		passed := d.passed
		d.timer = time.AfterFunc(dur, func() { close(passed) })
		return
	}
	if !closed {
		close(d.passed)
	}
}

func (d *pipeDeadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
