package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testSupervisor(t *testing.T) (*supervisor, *prometheus.Registry, *[]time.Duration) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := newSupervisor(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var waits []time.Duration
	s.min, s.max = 10*time.Millisecond, 40*time.Millisecond
	s.wait = func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return ctx.Err() == nil
	}
	return s, reg, &waits
}

// TestSupervisorRestarts: every way a role can fail (error, panic, return
// while the process runs) is restarted with doubling, capped back-off,
// counted per role, and run returns nil once the context ends.
func TestSupervisorRestarts(t *testing.T) {
	tests := []struct {
		name string
		fail func() error
		want string
	}{
		{"error", func() error { return errors.New("MESSAGE_TOO_LARGE") }, "MESSAGE_TOO_LARGE"},
		{"panic", func() error { panic("bad record") }, "panic: bad record"},
		{"early return", func() error { return nil }, "returned while the process was still running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, reg, waits := testSupervisor(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			calls := 0
			var seen roleStatus
			err := s.run(ctx, "channel-projector", func(ctx context.Context) error {
				calls++
				if calls <= 5 {
					return tt.fail()
				}
				seen = s.status()["channel-projector"]
				cancel() // SIGTERM: the sixth run ends cleanly
				<-ctx.Done()
				return ctx.Err()
			})
			if err != nil {
				t.Fatalf("run = %v, want nil after the context ended", err)
			}
			if calls != 6 {
				t.Fatalf("%d calls, want 6", calls)
			}
			want := []time.Duration{10, 20, 40, 40, 40}
			for i := range want {
				want[i] *= time.Millisecond
			}
			if got := *waits; len(got) != len(want) || !equalDurations(got, want) {
				t.Errorf("back-offs %v, want %v", got, want)
			}
			if seen.Restarts != 5 || !seen.Running || !strings.Contains(seen.LastError, tt.want) {
				t.Errorf("status while running again: %+v", seen)
			}
			exp := "# HELP pushlog_role_restarts_total Times a role failed after start-up and was restarted (with back-off) instead of stopping the process.\n" +
				"# TYPE pushlog_role_restarts_total counter\npushlog_role_restarts_total{role=\"channel-projector\"} 5\n"
			if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "pushlog_role_restarts_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// TestSupervisorHealthyRunResetsBackoff: a run that lasted healthyAfter
// failed on something new; its restart waits the minimum again.
func TestSupervisorHealthyRunResetsBackoff(t *testing.T) {
	s, _, waits := testSupervisor(t)
	clock := time.Unix(0, 0)
	s.now = func() time.Time { return clock }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := 0
	_ = s.run(ctx, "r", func(ctx context.Context) error {
		calls++
		switch calls {
		case 3:
			clock = clock.Add(s.healthyAfter) // this run was long and healthy
		case 5:
			cancel()
			return nil
		}
		return errors.New("boom")
	})
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}
	if !equalDurations(*waits, want) {
		t.Fatalf("back-offs %v, want %v", *waits, want)
	}
}

// TestSupervisorCheck: the heartbeat check fails while a role waits for
// its restart and passes once it runs again; other roles are ignored.
func TestSupervisorCheck(t *testing.T) {
	s, reg, _ := testSupervisor(t)
	check := s.check("analytics-projector")
	if err := check(t.Context()); err != nil {
		t.Fatalf("before start: %v", err)
	}
	s.setRunning("analytics-projector", true)
	s.failed("channel-projector", errors.New("other role"))
	if err := check(t.Context()); err != nil {
		t.Fatalf("another role's failure: %v", err)
	}
	s.failed("analytics-projector", errors.New("clickhouse down"))
	if err := check(t.Context()); err == nil || !strings.Contains(err.Error(), "clickhouse down") {
		t.Fatalf("in back-off: %v", err)
	}
	if got := testutil.ToFloat64(s.up.WithLabelValues("analytics-projector")); got != 0 {
		t.Errorf("pushlog_role_up = %v while in back-off", got)
	}
	s.setRunning("analytics-projector", true)
	if err := check(t.Context()); err != nil {
		t.Fatalf("running again: %v", err)
	}
	if n, _ := testutil.GatherAndCount(reg, "pushlog_role_restarts_total"); n != 2 {
		t.Errorf("%d restart series, want 2", n)
	}
}

// TestRunGroupSupervised: a supervised role's failures leave the group
// (the process) running; an essential role's failure still stops it, and
// the supervised role then stops cleanly.
func TestRunGroupSupervised(t *testing.T) {
	s, _, _ := testSupervisor(t)
	s.wait = sleepCtx
	g := newRunGroup(t.Context(), slog.New(slog.NewTextHandler(io.Discard, nil)), s)
	var mu sync.Mutex
	runs := 0
	g.supervise("channel-projector", func(ctx context.Context) error {
		mu.Lock()
		runs++
		mu.Unlock()
		return errors.New("snapshot too large")
	})
	time.Sleep(200 * time.Millisecond)
	if g.ctx.Err() != nil {
		t.Fatal("a supervised role's failure stopped the group")
	}
	mu.Lock()
	if runs < 3 {
		t.Errorf("%d runs in 200ms with a 10-40ms back-off, want at least 3", runs)
	}
	mu.Unlock()
	g.start("ingest", func(context.Context) error { return errors.New("listener closed") })
	err := g.wait(5 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "ingest: listener closed") || strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("wait = %v, want only the essential role's error", err)
	}
}
