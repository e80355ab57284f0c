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
