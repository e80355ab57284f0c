//go:build linux

package connector

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpPair is a loopback TCP connection: the accepted end and the dialled
// one, both closed when the test ends.
func tcpPair(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	srv, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, cli
}

// sockPair is a loopback TCP connection whose server end is detached from
// the runtime's poller.
func sockPair(t *testing.T) (*fdSock, net.Conn) {
	t.Helper()
	srv, cli := tcpPair(t)
	nc, err := detachSock(srv)
	s, ok := nc.(*fdSock)
	if err != nil || !ok {
		t.Fatalf("a TCP conn was not detached: %T, %v", nc, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, cli
}

// waitErr returns what done delivers, failing the test if nothing comes
// within testTimeout.
func waitErr(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("%s: no result within %v", what, testTimeout)
		return nil
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// lent reports whether a runtime-polled file is lent out, and how many
// were lent so far.
func (s *fdSock) lent() (bool, int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.att != nil, s.lends
}

// wantLends fails unless exactly n files were lent and none is held.
func wantLends(t *testing.T, s *fdSock, n int32) {
	t.Helper()
	if held, lends := s.lent(); held || lends != n {
		t.Fatalf("lent %d files (want %d), one still held: %v", lends, n, held)
	}
}

func TestFdSock(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *fdSock, cli net.Conn)
	}{
		{"read what arrived without waiting", func(t *testing.T, s *fdSock, cli net.Conn) {
			if _, err := cli.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			deadline := time.Now().Add(testTimeout)
			got := []byte{}
			for len(got) < 5 && time.Now().Before(deadline) {
				n, err := s.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:n]...)
			}
			if string(got) != "hello" {
				t.Fatalf("read %q", got)
			}
			wantLends(t, s, 0)
		}},
		{"a read that must wait is lent to the runtime, then returned", func(t *testing.T, s *fdSock, cli net.Conn) {
			go func() {
				time.Sleep(50 * time.Millisecond)
				_, _ = cli.Write([]byte("late"))
			}()
			buf := make([]byte, 16)
			n, err := s.Read(buf)
			if err != nil || string(buf[:n]) != "late" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
			wantLends(t, s, 1)
		}},
		{"a waiting read keeps its deadline", func(t *testing.T, s *fdSock, cli net.Conn) {
			if err := s.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			_, err := s.Read(make([]byte, 4))
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v", err)
			}
			_ = s.SetReadDeadline(time.Time{})
			_, _ = cli.Write([]byte("x"))
			if n, err := s.Read(make([]byte, 4)); n != 1 || err != nil {
				t.Fatalf("read after clearing the deadline: %d, %v", n, err)
			}
		}},
		{"a write the socket cannot take at once waits and completes", func(t *testing.T, s *fdSock, cli net.Conn) {
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: more than the socket buffers
			got := make(chan []byte, 1)
			go func() {
				time.Sleep(50 * time.Millisecond) // let the send buffer fill
				b, _ := io.ReadAll(io.LimitReader(cli, int64(len(want))))
				got <- b
			}()
			if n, err := s.Write(want); n != len(want) || err != nil {
				t.Fatalf("wrote %d of %d: %v", n, len(want), err)
			}
			if b := <-got; !bytes.Equal(b, want) {
				t.Fatalf("the peer read %d bytes, not what was written", len(b))
			}
			wantLends(t, s, 1)
		}},
		{"a write to a peer that does not read ends at its deadline", func(t *testing.T, s *fdSock, cli net.Conn) {
			_ = s.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := s.Write(make([]byte, 32<<20))
			if !errors.Is(err, os.ErrDeadlineExceeded) || n >= 32<<20 {
				t.Fatalf("wrote %d: %v", n, err)
			}
		}},
		{"Close wakes a waiting read and later calls fail", func(t *testing.T, s *fdSock, cli net.Conn) {
			done := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 4))
				done <- err
			}()
			time.Sleep(30 * time.Millisecond)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := waitErr(t, done, "a read waiting at Close"); err == nil {
				t.Fatal("the waiting read returned no error after Close")
			}
			if _, err := s.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after Close: %v", err)
			}
			if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write after Close: %v", err)
			}
			if err := s.Close(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("second Close: %v", err)
			}
			// The peer sees the socket closed.
			_ = cli.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := cli.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("peer read after Close: %v", err)
			}
		}},
		{"a read past its deadline fails even with bytes ready", func(t *testing.T, s *fdSock, cli net.Conn) {
			_, _ = cli.Write([]byte("ready"))
			time.Sleep(20 * time.Millisecond)
			_ = s.SetReadDeadline(time.Now().Add(-time.Second))
			if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v", err)
			}
			_ = s.SetWriteDeadline(time.Now().Add(-time.Second))
			if _, err := s.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write past its deadline: %v", err)
			}
		}},
		{"a trickled message borrows one file while its deadline is set", func(t *testing.T, s *fdSock, cli net.Conn) {
			_ = s.SetReadDeadline(time.Now().Add(testTimeout))
			go func() {
				for _, b := range []byte("trickle") {
					time.Sleep(5 * time.Millisecond)
					_, _ = cli.Write([]byte{b})
				}
			}()
			got := []byte{}
			buf := make([]byte, 8)
			for len(got) < len("trickle") {
				n, err := s.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:n]...)
			}
			if held, lends := s.lent(); !held || lends != 1 {
				t.Fatalf("while the deadline is set: %d lends, held %v; want one held", lends, held)
			}
			_ = s.SetReadDeadline(time.Time{})
			wantLends(t, s, 1)
		}},
		{"a deadline moved while a read waits applies to it", func(t *testing.T, s *fdSock, cli net.Conn) {
			_ = s.SetReadDeadline(time.Now().Add(time.Hour))
			done := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 4))
				done <- err
			}()
			time.Sleep(30 * time.Millisecond)
			_ = s.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if err := waitErr(t, done, "a read whose deadline moved"); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read: %v", err)
			}
		}},
		{"a reader and a writer share one lent file", func(t *testing.T, s *fdSock, cli net.Conn) {
			rd := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 4)) // waits: lent
				rd <- err
			}()
			big := make([]byte, 16<<20)
			wr := make(chan error, 1)
			go func() {
				_, err := s.Write(big) // fills the buffers: waits on the same file
				wr <- err
			}()
			time.Sleep(50 * time.Millisecond)
			if _, err := io.CopyN(io.Discard, cli, int64(len(big))); err != nil {
				t.Fatal(err)
			}
			if err := <-wr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if held, _ := s.lent(); !held {
				t.Fatal("the writer's release closed the file the reader waits on")
			}
			_, _ = cli.Write([]byte("r"))
			if err := <-rd; err != nil {
				t.Fatalf("read: %v", err)
			}
			if held, lends := s.lent(); held || lends < 1 || lends > 2 {
				t.Fatalf("%d lends, held %v", lends, held)
			}
		}},
		{"Close wakes a waiting write", func(t *testing.T, s *fdSock, cli net.Conn) {
			done := make(chan error, 1)
			go func() {
				_, err := s.Write(make([]byte, 32<<20))
				done <- err
			}()
			time.Sleep(50 * time.Millisecond)
			_ = s.Close()
			if err := waitErr(t, done, "a write waiting at Close"); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("write after Close: %v", err)
			}
		}},
		{"the raw conn and the poller's fd after Close", func(t *testing.T, s *fdSock, cli net.Conn) {
			if _, err := connFD(s); err != nil {
				t.Fatalf("connFD: %v", err)
			}
			if n, err := tryWrite(s, []byte("x")); n != 1 || err != nil {
				t.Fatalf("tryWrite: %d, %v", n, err)
			}
			_ = s.Close()
			if _, err := connFD(s); err == nil {
				t.Fatal("connFD after Close gave an fd")
			}
			if _, err := tryWrite(s, []byte("x")); err == nil {
				t.Fatal("tryWrite after Close wrote")
			}
			if err := s.CloseWrite(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("CloseWrite after Close: %v", err)
			}
		}},
		{"CloseWrite half-closes", func(t *testing.T, s *fdSock, cli net.Conn) {
			if err := s.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			_ = cli.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := cli.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("peer read after CloseWrite: %v", err)
			}
			_, _ = cli.Write([]byte("still open"))
			if n, err := s.Read(make([]byte, 32)); n == 0 || err != nil {
				t.Fatalf("read after CloseWrite: %d, %v", n, err)
			}
		}},
		{"the peer closing reads as EOF", func(t *testing.T, s *fdSock, cli net.Conn) {
			_ = cli.Close()
			if _, err := s.Read(make([]byte, 4)); err != io.EOF {
				t.Fatalf("read after the peer closed: %v", err)
			}
		}},
		{"addresses come from the kernel", func(t *testing.T, s *fdSock, cli net.Conn) {
			if got, want := s.RemoteAddr().String(), cli.LocalAddr().String(); got != want {
				t.Fatalf("RemoteAddr %s, want %s", got, want)
			}
			if got, want := s.LocalAddr().String(), cli.RemoteAddr().String(); got != want {
				t.Fatalf("LocalAddr %s, want %s", got, want)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, cli := sockPair(t)
			tc.run(t, s, cli)
		})
	}
}

// TestFdSockNoLeak: every descriptor a detached socket or a lent conn used
// is closed with it.
func TestFdSockNoLeak(t *testing.T) {
	before := openFDs(t)
	for range 20 {
		s, cli := sockPair(t)
		go func() {
			time.Sleep(5 * time.Millisecond)
			_, _ = cli.Write([]byte("x"))
		}()
		if _, err := s.Read(make([]byte, 1)); err != nil { // lent while it waits
			t.Fatal(err)
		}
		_ = s.Close()
		_ = cli.Close()
	}
	if after := openFDs(t); after > before {
		t.Fatalf("open descriptors %d → %d", before, after)
	}
}

// TestDetachSockKeepsOtherConns: a conn that is not a plain TCP socket
// (TLS, a pipe) is kept as it is.
func TestDetachSockKeepsOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got, err := detachSock(a); got != a || err != nil {
		t.Fatalf("a pipe became %T (%v)", got, err)
	}
}

// TestFdSockAtFileLimit: at the open-file limit a socket stays in the
// runtime's poller (an error says so), and a wait retries until a
// descriptor frees instead of failing the connection at once.
func TestFdSockAtFileLimit(t *testing.T) {
	s, cli := sockPair(t)
	other, _ := tcpPair(t)

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
				t.Error(err)
			}
		})
	}
	defer restore()
	// Every number below the highest open one is taken: no dup fits.
	lim := syscall.Rlimit{Cur: uint64(maxOpenFD(t)) + 1, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Fill any free numbers below it too.
	var fill []int
	defer func() {
		for _, fd := range fill {
			_ = syscall.Close(fd)
		}
	}()
	for {
		fd, err := dupCloexec(s.fd)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("filling the descriptor table: %v", err)
			}
			break
		}
		fill = append(fill, fd)
	}

	if nc, err := detachSock(other); err == nil || nc != other {
		t.Fatalf("detach at the limit: %T, %v", nc, err)
	}
	// A read that must wait gives up at its deadline, not at once.
	_ = s.SetReadDeadline(time.Now().Add(60 * time.Millisecond))
	start := time.Now()
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, syscall.EMFILE) || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("read at the limit: %v after %v", err, time.Since(start))
	}
	// One that waits while a descriptor frees completes.
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	go func() {
		time.Sleep(50 * time.Millisecond)
		restore()
		_, _ = cli.Write([]byte("ok"))
	}()

	if n, err := s.Read(make([]byte, 4)); n != 2 || err != nil {
		t.Fatalf("read after a descriptor freed: %d, %v", n, err)
	}
}

// maxOpenFD is the highest descriptor number this process has open.
func maxOpenFD(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	hi := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > hi {
			hi = n
		}
	}
	return hi
}

// TestServerDetachesPlainSockets: a plain WebSocket's socket leaves the
// runtime's poller at the upgrade; a TLS one keeps its conn.
func TestServerDetachesPlainSockets(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, nil)
			c := dialPath(t, h, p.tls)
			send(t, c, map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]string{}})
			reply := recv(t, c)
			uaid, _ := reply["uaid"].(string)
			if reply["status"] != 200.0 || uaid == "" {
				t.Fatalf("hello reply: %v", reply)
			}
			nc := h.link.session(t, uaid).(*conn).nc
			if _, detached := nc.(*fdSock); detached == p.tls {
				t.Fatalf("server socket is %T", nc)
			}
		})
	}
}
