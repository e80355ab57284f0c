//go:build linux

package connector

import (
	"io"
	"log/slog"
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
	p.close()
	p.close() // twice is fine
	done := make(chan struct{})
	go func() {
		p.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("the workers did not return after close")
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
