package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLifetime: the links live on Serve's ctx, not on one made by New. A
// dial waits for Serve (up to the dial timeout), fails after Close, and
// Serve returns once its ctx ends.
func TestLifetime(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, n *Node, ln net.Listener) // before the call
		wantErr string                                       // "" : the call succeeds
	}{
		{"serving", func(t *testing.T, n *Node, ln net.Listener) { serve(t, t.Context(), n, ln, newFakeOwner()) }, ""},
		{"served after the dial began", func(t *testing.T, n *Node, ln net.Listener) {
			time.AfterFunc(50*time.Millisecond, func() { serve(t, t.Context(), n, ln, newFakeOwner()) })
		}, ""},
		{"never served", func(*testing.T, *Node, net.Listener) {}, "not serving"},
		{"closed", func(t *testing.T, n *Node, ln net.Listener) { _ = n.Close() }, "node link closed"},
		{"serve ctx ended", func(t *testing.T, n *Node, ln net.Listener) {
			ctx, cancel := context.WithCancel(t.Context())
			done := serve(t, ctx, n, ln, newFakeOwner())
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return when its ctx ended")
			}
		}, "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			own := startNode(t, "owner", "", nil)
			own.owner.valid[testUAID] = true
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			n, err := New(Config{NodeID: "conn", Addr: ln.Addr().String(), Secret: testSecret,
				DialTimeout: 500 * time.Millisecond, Heartbeat: 50 * time.Millisecond, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = n.Close(); _ = ln.Close() })
			tt.setup(t, n, ln)
			info, err := n.CheckUAID(ctx5(t), own.Addr(), testUAID)
			if tt.wantErr == "" {
				if err != nil || !info.Valid {
					t.Fatalf("CheckUAID = %+v, %v", info, err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckUAID err = %v, want ErrUnavailable mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// serve runs n.Serve(ctx, ln, ...); the channel closes when it returns.
func serve(t *testing.T, ctx context.Context, n *Node, ln net.Listener, own *fakeOwner) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Serve(ctx, ln, Handlers{Owner: own}); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	return done
}

// TestPresenceBeforeServe: a presence session may deliver while the
// components start, before Serve gave the node its owner. Its dial waits
// for Serve; when it fails, the session is detached from the owner Serve
// was given, and after a Close without Serve nothing is told (and nothing
// panics).
func TestPresenceBeforeServe(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	for _, served := range []bool{true, false} {
		t.Run(fmt.Sprintf("served=%v", served), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			n, err := New(Config{NodeID: "owner", Addr: ln.Addr().String(), Secret: testSecret,
				DialTimeout: time.Second, Heartbeat: 50 * time.Millisecond, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = n.Close(); _ = ln.Close() })
			own := newFakeOwner()
			s := n.Session(deadAddr, uaidOf(testUAID), "c")
			own.set(testUAID, s)
			if err := s.Deliver(testNote(testUAID, 1)); err == nil {
				t.Fatal("delivered without a link")
			}
			if !served {
				_ = n.Close()
				if ids := own.detachedIDs(); len(ids) != 0 {
					t.Fatalf("detached %v without an owner", ids)
				}
				return
			}
			serve(t, t.Context(), n, ln, own)
			waitFor(t, "the presence session detached", func() bool { return slices.Contains(own.detachedIDs(), "c") })
		})
	}
}
