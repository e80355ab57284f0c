package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Back-off of a supervised role between a failure and its restart: doubling
// from supervisorMinDelay up to supervisorMaxDelay, back to the minimum once
// a run lasted supervisorHealthy (the failure was not the same one again).
const (
	supervisorMinDelay = 500 * time.Millisecond
	supervisorMaxDelay = 30 * time.Second
	supervisorHealthy  = time.Minute
)

// supervisor restarts roles that fail after start-up. One bad record or one
// UAID's state must not take the whole process (ingest, the sockets, every
// other user) down, and exiting would not help: the same input fails the
// restarted process too, a crash loop. Each failure is logged at error
// level, counted in pushlog_role_restarts_total{role} and shown in the
// heartbeat until the role has run cleanly again.
type supervisor struct {
	logger       *slog.Logger
	min, max     time.Duration
	healthyAfter time.Duration
	now          func() time.Time
	// wait sleeps d unless ctx ends first (then false); tests record it.
	wait     func(ctx context.Context, d time.Duration) bool
	restarts *prometheus.CounterVec
	failures *prometheus.CounterVec // roles that cannot be restarted
	up       *prometheus.GaugeVec

	mu    sync.Mutex
	roles map[string]*roleStatus
}

// roleStatus is what the heartbeat shows of one supervised role.
type roleStatus struct {
	Running     bool      `json:"running"`
	Restarts    int       `json:"restarts"`
	LastError   string    `json:"last_error,omitempty"`
	LastFailure time.Time `json:"last_failure,omitzero"`
}

func newSupervisor(reg prometheus.Registerer, logger *slog.Logger) (*supervisor, error) {
	s := &supervisor{
		logger:       logger,
		min:          supervisorMinDelay,
		max:          supervisorMaxDelay,
		healthyAfter: supervisorHealthy,
		now:          time.Now,
		wait:         sleepCtx,
		roles:        map[string]*roleStatus{},
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_role_restarts_total",
			Help: "Times a role failed after start-up and was restarted (with back-off) instead of stopping the process.",
		}, []string{"role"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_role_failures_total",
			Help: "Times a role that cannot be restarted failed after start-up; the process keeps serving without it (see the heartbeat's roles).",
		}, []string{"role"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushlog_role_up",
			Help: "1 while a supervised role runs, 0 while it waits to be restarted after a failure.",
		}, []string{"role"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.restarts, s.failures, s.up} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("supervisor metrics: %w", err)
			}
		}
	}
	return s, nil
}

// run runs fn until ctx ends, restarting it after every failure (an error,
// a panic, or a return while ctx is live) once the back-off has passed.
// fn must be safe to call again after it returned. run returns nil when ctx
// ends: a supervised role never stops the process.
func (s *supervisor) run(ctx context.Context, role string, fn func(context.Context) error) error {
	delay := s.min
	for {
		s.setRunning(role, true)
		started := s.now()
		err := s.once(ctx, role, fn)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("returned while the process was still running")
		}
		if s.now().Sub(started) >= s.healthyAfter {
			delay = s.min
		}
		n := s.failed(role, err)
		s.logger.Error("role failed; restarting it after a back-off (the process keeps serving)",
			"role", role, "err", err, "restarts", n, "backoff", delay)
		if !s.wait(ctx, delay) {
			return nil
		}
		delay = min(2*delay, s.max)
	}
}

// runOnce runs fn, a role whose Run may be called only once, so that its
// failure after start-up does not stop the process either: it is logged at
// error level, counted in pushlog_role_failures_total{role}, shown in the
// heartbeat and pushlog_role_up, and runOnce then waits for ctx to end.
func (s *supervisor) runOnce(ctx context.Context, role string, fn func(context.Context) error) error {
	s.setRunning(role, true)
	err := s.once(ctx, role, fn)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("returned while the process was still running")
	}
	s.setRunning(role, false)
	s.failures.WithLabelValues(role).Inc()
	s.mu.Lock()
	st := s.roles[role]
	st.LastError, st.LastFailure = err.Error(), s.now()
	s.mu.Unlock()
	s.logger.Error("ROLE FAILED and cannot be restarted in this process; it keeps serving without it (restart the process to recover)",
		"role", role, "err", err)
	<-ctx.Done()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// once runs fn, turning a panic in its goroutine into an error (with the
// stack logged): the panicking input would panic again after a restart of
// the whole process.
func (s *supervisor) once(ctx context.Context, role string, fn func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("role panicked", "role", role, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn(ctx)
}

func (s *supervisor) setRunning(role string, running bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.roles[role]
	if st == nil {
		st = &roleStatus{}
		s.roles[role] = st
	}
	st.Running = running
	s.up.WithLabelValues(role).Set(map[bool]float64{false: 0, true: 1}[running])
}

// failed records a failure and returns the role's restart count.
func (s *supervisor) failed(role string, err error) int {
	s.setRunning(role, false)
	s.restarts.WithLabelValues(role).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.roles[role]
	st.Restarts++
	st.LastError = err.Error()
	st.LastFailure = s.now()
	return st.Restarts
}

// status returns a copy of every supervised role's state.
func (s *supervisor) status() map[string]roleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]roleStatus, len(s.roles))
	for name, st := range s.roles {
		out[name] = *st
	}
	return out
}

// check is a heartbeat check over the given roles: an error naming those
// waiting to be restarted, nil while all run (restarts in the past are in
// the metric and the error text, not a failure now).
func (s *supervisor) check(roles ...string) func(context.Context) error {
	return func(context.Context) error {
		st := s.status()
		var down []string
		for _, r := range roles {
			if x, ok := st[r]; ok && !x.Running {
				down = append(down, fmt.Sprintf("%s restarting after %d failure(s), last: %s", r, x.Restarts, x.LastError))
			}
		}
		sort.Strings(down)
		if len(down) > 0 {
			return errors.New(fmt.Sprint(down))
		}
		return nil
	}
}
