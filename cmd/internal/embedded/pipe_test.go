package embedded

import (
	"io"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"golang.org/x/net/nettest"
)

// TestPipeConn holds the in-memory pipe to x/net's conformance suite for
// net.Conn (reads and writes in both directions, deadlines, closing,
// concurrent use).
func TestPipeConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2 = newPipe()
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestPipeQueueStaysBounded: a reader that stays one message behind the
// writer (kgo pipelining requests to kfake, which reads exact frames)
// leaves unread bytes in the queue at every write; the array must not
// keep everything ever written.
func TestPipeQueueStaysBounded(t *testing.T) {
	w, r := newPipe()
	defer w.Close()
	defer r.Close()
	msg := make([]byte, 1000)
	got := make([]byte, len(msg))
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20000; i++ {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
	}
	q := w.(*pipeConn).out
	q.mu.Lock()
	defer q.mu.Unlock()
	if unread := len(q.buf) - q.off; unread != len(msg) {
		t.Fatalf("unread %d bytes, want %d", unread, len(msg))
	}
	if c := cap(q.buf); c > 64*len(msg) {
		t.Fatalf("queue array holds %d bytes for %d unread: read bytes were kept", c, len(msg))
	}
}

// TestPipeErrorsRetryable: kgo retries a request whose connection died
// (net.ErrClosed, EPIPE over TCP); the pipe's errors must be ones it
// classifies the same way.
func TestPipeErrorsRetryable(t *testing.T) {
	a, b := newPipe()
	b.Close()
	_, werr := a.Write([]byte("x"))
	a.Close()
	_, rerr := a.Read(make([]byte, 1))
	for _, tc := range []struct {
		name string
		err  error
	}{{"write to a closed peer", werr}, {"read on a closed end", rerr}} {
		if tc.err == nil || !kgo.IsRetryableBrokerErr(tc.err) {
			t.Errorf("%s: %v is not retryable for kgo", tc.name, tc.err)
		}
	}
}
