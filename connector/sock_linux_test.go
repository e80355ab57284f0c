//go:build linux

package connector

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// sockPair is a loopback TCP connection whose server end is detached from
// the runtime's poller.
func sockPair(t *testing.T) (*fdSock, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s, ok := detachSock(srv).(*fdSock)
	if !ok {
		t.Fatal("a TCP conn was not detached")
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, cli
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// lent reports whether a runtime-polled conn is still lent out.
func (s *fdSock) lent() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.att != nil
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
			if string(got) != "hello" || s.lent() {
				t.Fatalf("read %q, lent %v", got, s.lent())
			}
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
			if s.lent() {
				t.Fatal("the lent conn was kept after the read")
			}
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
			if s.lent() {
				t.Fatal("the lent conn was kept after the write")
			}
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
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("the waiting read returned no error after Close")
				}
			case <-time.After(testTimeout):
				t.Fatal("Close did not wake the waiting read")
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
	if got := detachSock(a); got != a {
		t.Fatalf("a pipe became %T", got)
	}
}
