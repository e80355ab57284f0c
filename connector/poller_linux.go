//go:build linux

package connector

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
)

// poller watches idle sockets with one epoll instance so that an idle
// connection has no goroutine (and no goroutine stack) at all. A socket is
// armed one-shot: when it becomes readable one goroutine reads what arrived,
// and the socket is re-armed when that goroutine has drained every buffered
// byte. Level-triggered re-arming means data that arrived in between fires
// at once.
//
// That goroutine is one of a few persistent serve workers when one is idle,
// else a new one. A fresh goroutine per event grew its small stack on every
// message (JSON decoding is deep): copying stacks cost about as much as the
// decoding itself. The workers' stacks stay grown; the one parked last is
// handed the next event, so at low rates one worker with a hot stack does
// the work (the garbage collector halves the stack of a parked goroutine:
// taking turns, every worker regrew its stack). Their number is fixed, so
// an idle connection still holds no goroutine.
//
// A plain TCP socket is not in the Go runtime's poller at all (fdSock,
// sock_linux.go): this epoll is its only watcher until a read or write
// must wait. A TLS socket keeps a reader goroutine instead.
type poller struct {
	epfd int
	wake [2]int // a pipe: writing to it stops the wait loop
	log  *slog.Logger

	mu     sync.Mutex
	conns  map[int32]*conn
	gen    uint32 // tells a reused fd number from the one an event was for
	closed bool   // set with mu held as epfd closes: no epoll_ctl after it
	done   chan struct{}
	stop   sync.Once

	// idle are the parked workers' hand-off channels, the one parked last
	// at the end. An event is handed only to a parked worker, never queued
	// behind a busy one (a register waits for its durable write).
	//
	// close does not wait for the workers: one serving a conn may block
	// on that conn's read (up to ReadTimeout) or a register's durable
	// write, and close runs after Shutdown's deadline may have passed;
	// events that found every worker busy run on goroutines of their own
	// that no count covers anyway. A worker still serving after close
	// finds the poller closed and does not re-arm.
	idleMu sync.Mutex
	idle   []chan *conn
	quit   chan struct{} // closed by close: the idle workers return
}

// serveWorkers is how many persistent goroutines serve readiness events;
// events that find them all busy get a goroutine of their own. One epoll
// wait returns many events under load, and a worker handed one cannot take
// the next before it runs: a few are not enough. Parked, they cost their
// stacks only (tens of KB in all).
const serveWorkers = 16

const epollFlags = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

func newPoller(log *slog.Logger) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll create: %w", err)
	}
	p := &poller{
		epfd: epfd, log: log, conns: map[int32]*conn{}, done: make(chan struct{}),
		idle: make([]chan *conn, 0, serveWorkers), quit: make(chan struct{}),
	}
	if err := syscall.Pipe2(p.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll wake pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll add wake pipe: %w", err)
	}
	go p.loop()
	for range serveWorkers {
		go p.worker()
	}
	return p, nil
}

// errNoFD means the connection has no pollable file descriptor (TLS, or a
// wrapped conn): it is served by a blocking goroutine instead.
var errNoFD = errors.New("connection has no pollable fd")

// errPollerClosed means the poller closed (server shutdown) before the
// connection could be watched.
var errPollerClosed = errors.New("poller closed")

// add starts watching c; c.serveReady runs whenever it is readable.
func (p *poller) add(c *conn) error {
	fd, err := connFD(c.nc)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPollerClosed
	}
	if c.proto.Phase() == stateClosed { // closed before it was watched
		return errConnClosed
	}
	p.gen++
	c.fd, c.pollGen, c.polled = fd, p.gen, true
	p.conns[fd] = c
	ev := syscall.EpollEvent{Events: epollFlags, Fd: fd, Pad: int32(p.gen)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		delete(p.conns, fd)
		c.polled = false
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// rearm watches c again after a read burst; not once the poller closed
// (its epfd number may belong to another file by then).
func (p *poller) rearm(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !c.polled { // c removed meanwhile: its fd may already belong to another socket
		return
	}
	ev := syscall.EpollEvent{Events: epollFlags, Fd: c.fd, Pad: int32(c.pollGen)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
		p.log.Warn("epoll rearm failed; closing connection", "err", err)
		go c.close(0, "")
	}
}

// remove stops watching c. It must run before c's socket is closed, so the
// fd number is never touched after the kernel may have reused it.
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.polled {
		return
	}
	c.polled = false
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	if p.closed { // closing epfd dropped every watch; its number may be reused
		return
	}
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			p.log.Error("epoll wait failed; stopping the poller", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			ev := events[i]
			if ev.Fd == int32(p.wake[0]) {
				return
			}
			p.mu.Lock()
			c := p.conns[ev.Fd]
			if c != nil && c.pollGen != uint32(ev.Pad) {
				c = nil
			}
			p.mu.Unlock()
			if c != nil {
				p.dispatch(c)
			}
		}
	}
}

// dispatch hands c to the worker parked last, or to a goroutine of its
// own when every worker is busy.
func (p *poller) dispatch(c *conn) {
	p.idleMu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.idleMu.Unlock()
		go p.serve(c)
		return
	}
	w := p.idle[n-1]
	p.idle = p.idle[:n-1]
	p.idleMu.Unlock()
	w <- c // its buffer is free: a worker is handed one conn per parking
}

// worker serves connections handed to it until the poller closes. Only the
// wait loop hands them, and it has returned when quit closes: a conn handed
// just before is still served.
func (p *poller) worker() {
	in := make(chan *conn, 1)
	for {
		p.idleMu.Lock()
		p.idle = append(p.idle, in)
		p.idleMu.Unlock()
		select {
		case c := <-in:
			p.serve(c)
		case <-p.quit:
			select {
			case c := <-in:
				p.serve(c)
			default:
			}
			p.unpark(in)
			return
		}
	}
}

// unpark takes a returning worker's channel off the idle list: nothing
// hands to it any more, and an empty list after close tells that every
// parked worker returned.
func (p *poller) unpark(in chan *conn) {
	p.idleMu.Lock()
	defer p.idleMu.Unlock()
	for i, w := range p.idle {
		if w == in {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			return
		}
	}
}

func (p *poller) serve(c *conn) {
	if c.serveReady(nil) {
		p.rearm(c)
	}
}

// close stops the wait loop and the idle workers (a busy one returns when
// its connection is served; close does not wait for it, see idle).
// Watched connections are left to their owners. The fds close under mu
// with closed set, so no rearm, add or remove runs epoll_ctl on a closed
// (and maybe reused) epfd number.
func (p *poller) close() {
	p.stop.Do(func() {
		_, _ = syscall.Write(p.wake[1], []byte{1})
		<-p.done
		close(p.quit)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.closed = true
		p.closeFDs()
	})
}

// closeFDs closes the epoll instance and the wake pipe. The caller holds
// mu, or has not shared p yet.
func (p *poller) closeFDs() {
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
	syscall.Close(p.epfd)
}

// connFD returns the socket's fd. It stays valid while the conn is open;
// the poller removes the conn before it is closed.
func connFD(nc net.Conn) (int32, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, errNoFD
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errNoFD, err)
	}
	var fd int32 = -1
	if err := rc.Control(func(f uintptr) { fd = int32(f) }); err != nil || fd < 0 {
		return 0, errNoFD
	}
	return fd, nil
}

// tryWrite writes what the socket takes now, without blocking.
func tryWrite(sc syscall.Conn, b []byte) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, nil // not a plain socket: the blocking write does it all
	}
	w := rawWrites.Get().(*rawWrite)
	w.b, w.n, w.err = b, 0, nil
	err = rc.Write(w.fn)
	n, werr := w.n, w.err
	w.b, w.err = nil, nil
	rawWrites.Put(w)
	if err != nil {
		return n, fmt.Errorf("write: %w", err)
	}
	if werr != nil {
		return n, fmt.Errorf("write: %w", werr)
	}
	return n, nil
}

// rawWrite is one tryWrite's state. Pooled, with its callback bound once:
// a closure per write escaped to the heap with its two results (three
// allocations per delivered message).
type rawWrite struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // w.write
}

var rawWrites = sync.Pool{New: func() any {
	w := &rawWrite{}
	w.fn = w.write
	return w
}}

// write writes w.b[w.n:] until done, EAGAIN or an error; it never asks the
// runtime to wait (returns true).
func (w *rawWrite) write(fd uintptr) bool {
	n, err := writeFD(int(fd), w.b[w.n:])
	w.n += n
	w.err = err
	return true
}

// writeFD writes p to a non-blocking fd until done, EAGAIN (n < len(p),
// no error) or an error (the errno, unwrapped).
func writeFD(fd int, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Write(fd, p[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return n, nil
		case err != nil:
			return n, err
		}
		n += m
	}
	return n, nil
}
