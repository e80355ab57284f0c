//go:build linux

package connector

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// fdSock is an upgraded socket held as a bare file descriptor, outside the
// Go runtime's poller. The runtime keeps a poll descriptor (with its two
// timers) for every socket it watches and reuses them, but never returns
// their memory: it holds as many as were ever watched at once, about
// 0.3–0.6 KB each, and the net.TCPConn around each socket another 0.2 KB.
// An idle connection is watched by the connector's own epoll
// (poller_linux.go) and needs neither.
//
// Reads and writes are system calls on the non-blocking fd (nothing here
// makes the shared socket blocking). Only when one must wait (a frame split
// across segments, a full send buffer, the close handshake's linger) is the
// socket lent to the runtime: an *os.File on a dup of the fd, which the
// runtime polls and which honours the deadlines set here. It is kept while
// a deadline is set (a trickled message pays for one lend, not one per
// segment) and closed when no operation uses it and no deadline is set, so
// an idle connection holds none. Those waits are rare for real clients.
//
// Deadlines are checked before every call, as net.Conn's are: a read past
// its deadline fails even when bytes are ready.
type fdSock struct {
	mu     sync.Mutex
	fd     int
	refs   int32 // operations using fd (or att) right now: fd stays open while > 0
	lends  int32 // files lent so far (tests)
	closed bool  // Close was called: fd closes when refs drops to 0
	att    *os.File
	rdl    int64 // read deadline, Unix nanoseconds; 0: none
	wdl    int64
}

// detachSock takes nc's socket out of the runtime's poller. It returns nc
// unchanged when nc is not a plain TCP socket (TLS keeps its reader
// goroutine), and with an error when a TCP socket's fd could not be
// duplicated (open-file limit): that connection then works as before.
func detachSock(nc net.Conn) (net.Conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc, fmt.Errorf("detach socket: %w", err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = dupCloexec(int(f)) }); err != nil || derr != nil {
		return nc, fmt.Errorf("detach socket: %w", errors.Join(err, derr))
	}
	// The dup shares the open file description, so it is non-blocking too;
	// closing nc takes the original out of the runtime's poller.
	_ = tc.Close()
	return &fdSock{fd: fd}, nil
}

func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// acquire counts an operation on fd; it fails once the socket is closed,
// and with os.ErrDeadlineExceeded past the deadline *dl (rdl or wdl; nil:
// none applies).
func (s *fdSock) acquire(dl *int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1, net.ErrClosed
	}
	if dl != nil && *dl != 0 && time.Now().UnixNano() >= *dl {
		return -1, os.ErrDeadlineExceeded
	}
	s.refs++
	return s.fd, nil
}

// release ends an operation. The last one returns a lent file unless a
// deadline is still set (an operation in progress will wait again), and
// closes fd after a Close.
func (s *fdSock) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	s.dropLocked()
}

// dropLocked closes the lent file when nothing uses it and no deadline is
// set, and fd when the socket is closed and nothing uses it.
func (s *fdSock) dropLocked() {
	if s.refs > 0 {
		return
	}
	if s.att != nil && (s.closed || s.rdl == 0 && s.wdl == 0) {
		_ = s.att.Close()
		s.att = nil
	}
	if s.closed && s.fd >= 0 {
		_ = syscall.Close(s.fd)
		s.fd = -1
	}
}

// lend returns the runtime-polled file for an operation that must wait
// (the caller holds a reference), made on first need. At the open-file
// limit it retries until the deadline dl passes or the socket closes:
// closing a connection because another one took the last descriptor would
// make a reconnect storm worse.
func (s *fdSock) lend(dl *int64) (*os.File, error) {
	pause := time.Millisecond
	for {
		f, err := s.tryLend()
		if err == nil || !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
			return f, err
		}
		s.mu.Lock()
		d := *dl
		s.mu.Unlock()
		if d != 0 && time.Now().Add(pause).UnixNano() >= d {
			return nil, err
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

func (s *fdSock) tryLend() (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, net.ErrClosed
	}
	if s.att != nil {
		return s.att, nil
	}
	dfd, err := dupCloexec(s.fd)
	if err != nil {
		return nil, fmt.Errorf("lend socket: dup: %w", err)
	}
	// Non-blocking, so the runtime polls it; a file, so no socket options
	// are set again on the shared socket.
	f := os.NewFile(uintptr(dfd), "websocket")
	if err := f.SetReadDeadline(unixTime(s.rdl)); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lend socket: %w", err)
	}
	if err := f.SetWriteDeadline(unixTime(s.wdl)); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lend socket: %w", err)
	}
	s.att = f
	s.lends++
	return f, nil
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// netErr gives a lent file's errors net.Conn's meaning.
func netErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

func (s *fdSock) Read(p []byte) (int, error) {
	fd, err := s.acquire(&s.rdl)
	if err != nil {
		return 0, err
	}
	defer s.release()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			f, lerr := s.lend(&s.rdl)
			if lerr != nil {
				return 0, lerr
			}
			n, err := f.Read(p)
			return n, netErr(err)
		case err != nil:
			return 0, fmt.Errorf("read: %w", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (s *fdSock) Write(p []byte) (int, error) {
	fd, err := s.acquire(&s.wdl)
	if err != nil {
		return 0, err
	}
	defer s.release()
	n, err := writeFD(fd, p)
	if err != nil {
		return n, fmt.Errorf("write: %w", err)
	}
	if n == len(p) {
		return n, nil
	}
	f, err := s.lend(&s.wdl)
	if err != nil {
		return n, err
	}
	m, err := f.Write(p[n:])
	return n + m, netErr(err)
}

// Close closes the socket; an operation waiting on a lent file returns
// at once, and fd closes when the last operation ends.
func (s *fdSock) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.closed = true
	if s.att != nil {
		_ = s.att.Close() // wakes a waiter; its release drops the file
	}
	s.dropLocked()
	return nil
}

// CloseWrite half-closes the socket (conn.linger).
func (s *fdSock) CloseWrite() error {
	fd, err := s.acquire(nil)
	if err != nil {
		return err
	}
	defer s.release()
	if err := syscall.Shutdown(fd, syscall.SHUT_WR); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func (s *fdSock) SetReadDeadline(t time.Time) error {
	return s.setDeadline(&s.rdl, t, (*os.File).SetReadDeadline)
}

func (s *fdSock) SetWriteDeadline(t time.Time) error {
	return s.setDeadline(&s.wdl, t, (*os.File).SetWriteDeadline)
}

func (s *fdSock) SetDeadline(t time.Time) error {
	return errors.Join(s.SetReadDeadline(t), s.SetWriteDeadline(t))
}

// setDeadline sets *dl (rdl or wdl) and a lent file's deadline; clearing
// the last deadline of an unused socket returns its lent file.
func (s *fdSock) setDeadline(dl *int64, t time.Time, set func(*os.File, time.Time) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	*dl = 0
	if !t.IsZero() {
		*dl = max(t.UnixNano(), 1)
	}
	if s.att == nil || s.closed {
		return nil
	}
	if err := set(s.att, t); err != nil {
		return netErr(err)
	}
	s.dropLocked()
	return nil
}

// LocalAddr and RemoteAddr ask the kernel: nothing in the connector
// needs them per message, so no address is kept per connection.
func (s *fdSock) LocalAddr() net.Addr  { return s.addr(syscall.Getsockname) }
func (s *fdSock) RemoteAddr() net.Addr { return s.addr(syscall.Getpeername) }

func (s *fdSock) addr(get func(int) (syscall.Sockaddr, error)) net.Addr {
	fd, err := s.acquire(nil)
	if err != nil {
		return &net.TCPAddr{}
	}
	defer s.release()
	sa, err := get(fd)
	if err != nil {
		return &net.TCPAddr{}
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *syscall.SockaddrInet6:
		zone := ""
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: zone}
	}
	return &net.TCPAddr{}
}

// SyscallConn gives the poller the fd and tryWrite its non-blocking write.
func (s *fdSock) SyscallConn() (syscall.RawConn, error) { return (*fdRaw)(s), nil }

// fdRaw is fdSock's syscall.RawConn for the poller (Control) and
// tryWrite. Unlike the runtime's, its Read and Write never wait: they call
// f once and ignore a false result ("wait and call again"). Only
// callbacks that never ask to wait may use them (tryWrite's returns true).
type fdRaw fdSock

func (r *fdRaw) Control(f func(fd uintptr)) error {
	return r.call(func(fd uintptr) bool { f(fd); return true })
}
func (r *fdRaw) Read(f func(fd uintptr) bool) error  { return r.call(f) }
func (r *fdRaw) Write(f func(fd uintptr) bool) error { return r.call(f) }

func (r *fdRaw) call(f func(fd uintptr) bool) error {
	s := (*fdSock)(r)
	fd, err := s.acquire(nil)
	if err != nil {
		return err
	}
	defer s.release()
	f(uintptr(fd))
	return nil
}
