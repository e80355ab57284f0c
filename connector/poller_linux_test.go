//go:build linux

package connector

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The poller's persistent serve workers return when it closes (they are a
// fixed number: an idle connection still has no goroutine, see
// TestIdleConnectionsHaveNoGoroutine).
func TestPollerCloseStopsItsWorkers(t *testing.T) {
	p, err := newPoller(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every worker to park", func() bool {
		p.idleMu.Lock()
		defer p.idleMu.Unlock()
		return len(p.idle) == serveWorkers
	})
	p.close()
	p.close() // twice is fine
	deadline := time.Now().Add(testTimeout)
	for {
		p.idleMu.Lock()
		n := len(p.idle) // a worker unparks as it returns
		p.idleMu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers did not return after close", n)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-p.done:
	default:
		t.Fatal("the wait loop still runs after close")
	}
}

// An event goes to the worker parked last, which parks again on top: at
// low rates one worker with a grown stack serves every event.
func TestPollerHandsEventsToTheWorkerParkedLast(t *testing.T) {
	p, err := newPoller(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	parked := func() []chan *conn {
		p.idleMu.Lock()
		defer p.idleMu.Unlock()
		return append([]chan *conn(nil), p.idle...)
	}
	waitFor(t, "every worker to park", func() bool { return len(parked()) == serveWorkers })
	before := parked()
	for range 5 {
		c := &conn{}
		c.proto.Close() // served at once: nothing to read, not re-armed
		p.dispatch(c)
		waitFor(t, "the worker to park again", func() bool { return len(parked()) == serveWorkers })
		after := parked()
		for i := range after {
			if after[i] != before[i] {
				t.Fatalf("parked workers changed order at %d: the event did not go to the one parked last", i)
			}
		}
	}
}

// A worker still serving when the poller closes re-arms, and its conn's
// close removes, after the epoll fd closed: neither may run epoll_ctl on
// that fd number, which the kernel may have handed to another file.
func TestPollerTouchesNoFDAfterClose(t *testing.T) {
	server, _ := tcpPair(t)

	var logs lockedBuffer
	p, err := newPoller(slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{nc: server}
	if err := p.add(c); err != nil {
		t.Fatal(err)
	}
	epfd := p.epfd
	p.close()
	// The lowest free number is usually the old epfd's: a new epoll
	// instance that got it, watching c's socket, must keep its watch.
	reused, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(reused)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: c.fd}
	if err := syscall.EpollCtl(reused, syscall.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		t.Fatal(err)
	}

	if reused != epfd {
		// Said, not skipped silently: the other checks still run.
		t.Logf("the kernel gave the new epoll instance fd %d, not the poller's old %d: the reused-number checks do not apply this run", reused, epfd)
	}
	p.rearm(c)
	if logs.String() != "" {
		t.Fatalf("rearm after close ran epoll_ctl: %s", logs.String())
	}
	if reused == epfd {
		// The kernel adds EPOLLERR|EPOLLHUP; a rearm would add these.
		if got := watchedEvents(t, reused, c.fd); got&(syscall.EPOLLRDHUP|syscall.EPOLLONESHOT) != 0 {
			t.Fatalf("rearm after close changed the watch of the epoll instance that reused the poller's fd number: events %#x", got)
		}
	}
	p.remove(c)
	if c.polled {
		t.Fatal("remove after close left the conn marked watched")
	}
	if reused == epfd {
		if err := syscall.EpollCtl(reused, syscall.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
			t.Fatalf("the epoll instance that reused the poller's fd number lost its watch: %v", err)
		}
	}
	if err := p.add(&conn{nc: server}); err != errPollerClosed {
		t.Fatalf("add after close = %v, want errPollerClosed", err)
	}
}

// watchedEvents is the event mask epoll instance epfd watches fd for,
// from /proc/self/fdinfo.
func watchedEvents(t *testing.T, epfd int, fd int32) uint32 {
	t.Helper()
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", epfd))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(info)) {
		f := strings.Fields(line) // tfd: N events: HEX data: ...
		if len(f) >= 4 && f[0] == "tfd:" && f[1] == strconv.Itoa(int(fd)) && f[2] == "events:" {
			ev, err := strconv.ParseUint(f[3], 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(ev)
		}
	}
	t.Fatalf("epoll fd %d does not watch fd %d:\n%s", epfd, fd, info)
	return 0
}

// lockedBuffer is a log sink safe for the poller's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
