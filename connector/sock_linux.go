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
// timers) for every socket it watches and never frees that memory: it
// holds as many as were ever watched at once, about 0.3–0.6 KB each, and
// the net.TCPConn around it another 0.2 KB. An idle connection is watched
// by the connector's own epoll (poller_linux.go) and needs neither.
//
// Reads and writes go straight to the non-blocking fd. Only when one must
// wait (a frame split across segments, a full send buffer, the close
// handshake's linger) is the socket lent to the runtime for that wait: a
// net.Conn on a dup of the fd, with the deadlines set here, closed again
// when no operation uses it. Those waits are rare, so the extra system
// calls cost nothing at normal rates.
type fdSock struct {
	mu     sync.Mutex
	fd     int
	refs   int      // operations using fd (or att) right now: fd stays open while > 0
	closed bool     // Close was called: fd closes when refs drops to 0
	att    net.Conn // the runtime-polled dup while an operation waits
	rdl    time.Time
	wdl    time.Time
}

// detachSock takes nc's socket out of the runtime's poller. It returns nc
// unchanged when nc is not a plain TCP socket or the fd cannot be
// duplicated (open-file limit): that connection then works as before.
func detachSock(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = dupCloexec(int(f)) }); err != nil || derr != nil {
		return nc
	}
	// The dup shares the open file description, so it is non-blocking too;
	// closing nc takes the original out of the runtime's poller.
	_ = tc.Close()
	return &fdSock{fd: fd}
}

func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// acquire counts an operation on fd; it fails once the socket is closed.
func (s *fdSock) acquire() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1, net.ErrClosed
	}
	s.refs++
	return s.fd, nil
}

// release ends an operation. The last one returns a lent socket to the
// connector (and closes fd after a Close).
func (s *fdSock) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	if s.att != nil {
		_ = s.att.Close()
		s.att = nil
	}
	if s.closed && s.fd >= 0 {
		_ = syscall.Close(s.fd)
		s.fd = -1
	}
}

// lend returns the runtime-polled conn for a waiting operation (the caller
// holds a reference), made on first need, with the current deadlines.
func (s *fdSock) lend() (net.Conn, error) {
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
	f := os.NewFile(uintptr(dfd), "")
	nc, err := net.FileConn(f) // its own dup; f closes below
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("lend socket: %w", err)
	}
	if err := nc.SetReadDeadline(s.rdl); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("lend socket: %w", err)
	}
	if err := nc.SetWriteDeadline(s.wdl); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("lend socket: %w", err)
	}
	s.att = nc
	return nc, nil
}

func (s *fdSock) Read(p []byte) (int, error) {
	fd, err := s.acquire()
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
			nc, lerr := s.lend()
			if lerr != nil {
				return 0, lerr
			}
			return nc.Read(p)
		case err != nil:
			return 0, fmt.Errorf("read: %w", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (s *fdSock) Write(p []byte) (int, error) {
	fd, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer s.release()
	n, err := writeFD(fd, p)
	if err != nil || n == len(p) {
		return n, err
	}
	nc, err := s.lend()
	if err != nil {
		return n, err
	}
	m, err := nc.Write(p[n:])
	return n + m, err
}

// writeFD writes p until done, EAGAIN (n < len(p), no error) or an error.
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
			return n, fmt.Errorf("write: %w", err)
		}
		n += m
	}
	return n, nil
}

// Close closes the socket; an operation waiting on a lent conn returns
// at once, and fd closes when the last operation ends.
func (s *fdSock) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.closed = true
	if s.att != nil {
		_ = s.att.Close() // wakes the waiter; release drops it
	}
	if s.refs == 0 {
		_ = syscall.Close(s.fd)
		s.fd = -1
	}
	return nil
}

// CloseWrite half-closes the socket (conn.linger).
func (s *fdSock) CloseWrite() error {
	fd, err := s.acquire()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rdl = t
	if s.att != nil {
		return s.att.SetReadDeadline(t)
	}
	return nil
}

func (s *fdSock) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wdl = t
	if s.att != nil {
		return s.att.SetWriteDeadline(t)
	}
	return nil
}

func (s *fdSock) SetDeadline(t time.Time) error {
	return errors.Join(s.SetReadDeadline(t), s.SetWriteDeadline(t))
}

// LocalAddr and RemoteAddr ask the kernel: nothing in the connector
// needs them per message, so no address is kept per connection.
func (s *fdSock) LocalAddr() net.Addr  { return s.addr(syscall.Getsockname) }
func (s *fdSock) RemoteAddr() net.Addr { return s.addr(syscall.Getpeername) }

func (s *fdSock) addr(get func(int) (syscall.Sockaddr, error)) net.Addr {
	fd, err := s.acquire()
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
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}

// SyscallConn gives the poller the fd and tryWrite its non-blocking write.
func (s *fdSock) SyscallConn() (syscall.RawConn, error) { return (*fdRaw)(s), nil }

// fdRaw is fdSock's syscall.RawConn. Its callbacks never wait: Read and
// Write call f once (tryWrite's callback returns true, done).
type fdRaw fdSock

func (r *fdRaw) Control(f func(fd uintptr)) error {
	return r.call(func(fd uintptr) bool { f(fd); return true })
}
func (r *fdRaw) Read(f func(fd uintptr) bool) error  { return r.call(f) }
func (r *fdRaw) Write(f func(fd uintptr) bool) error { return r.call(f) }

func (r *fdRaw) call(f func(fd uintptr) bool) error {
	s := (*fdSock)(r)
	fd, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	f(uintptr(fd))
	return nil
}
