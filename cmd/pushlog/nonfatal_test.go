package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStartNonFatal: a role that cannot be restarted (gone set, owner,
// connector) failing after start-up leaves the process running, counted
// and shown as down; only the context's end stops the group.
func TestStartNonFatal(t *testing.T) {
	tests := []struct {
		name string
		fail func() error
		want string
	}{
		{"error", func() error { return errors.New("gone set not ready") }, "gone set not ready"},
		{"panic", func() error { panic("bad record") }, "panic: bad record"},
		{"early return", func() error { return nil }, "returned while the process was still running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sup, reg, _ := testSupervisor(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			g := newRunGroup(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), sup)
			failed := make(chan struct{})
			g.startNonFatal("gone-set", func(context.Context) error {
				defer close(failed)
				return tt.fail()
			})
			<-failed
			deadline := time.Now().Add(5 * time.Second)
			for sup.status()["gone-set"].Running {
				if time.Now().After(deadline) {
					t.Fatal("role still shown running")
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
			if g.ctx.Err() != nil {
				t.Fatal("a non-fatal role's failure stopped the process")
			}
			if st := sup.status()["gone-set"]; !strings.Contains(st.LastError, tt.want) {
				t.Fatalf("status %+v, want last error %q", st, tt.want)
			}
			if n := testutil.ToFloat64(sup.failures.WithLabelValues("gone-set")); n != 1 {
				t.Fatalf("pushlog_role_failures_total %v, want 1", n)
			}
			if n, err := testutil.GatherAndCount(reg, "pushlog_role_failures_total"); err != nil || n != 1 {
				t.Fatalf("registered series %d (%v)", n, err)
			}
			cancel()
			if err := g.wait(time.Second); err != nil {
				t.Fatalf("group error %v, want none", err)
			}
		})
	}
}

type fakeGone struct{ ready bool }

func (f fakeGone) WaitReady(ctx context.Context) error {
	if f.ready {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestGoneReadiness: the heartbeat's readiness asks without waiting.
func TestGoneReadiness(t *testing.T) {
	if err := goneReadiness(fakeGone{ready: true})(t.Context()); err != nil {
		t.Fatalf("ready: %v", err)
	}
	start := time.Now()
	err := goneReadiness(fakeGone{})(t.Context())
	if err == nil || !strings.Contains(err.Error(), "catching up") || time.Since(start) > time.Second {
		t.Fatalf("not ready: %v after %s", err, time.Since(start))
	}
}
