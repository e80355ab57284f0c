package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// throughput is a closed-loop push run: Concurrency senders push as fast
// as the server answers, round robin over the user agents.
type throughput struct {
	target      `embed:""`
	Concurrency int `default:"32" help:"Concurrent senders (each waits for its answer before the next push)."`
}

type offlineCmd struct {
	throughput `embed:""`
}

type connectedCmd struct {
	throughput `embed:""`
}

type freshJWTCmd struct {
	throughput `embed:""`
	Connected  bool `help:"Push to connected user agents (default: disconnected ones, as offline does)."`
}

func (cmd *offlineCmd) Run(ctx context.Context) error {
	return printed(cmd.run(ctx, "offline", false, false))
}

func (cmd *connectedCmd) Run(ctx context.Context) error {
	return printed(cmd.run(ctx, "connected", true, false))
}

func (cmd *freshJWTCmd) Run(ctx context.Context) error {
	return printed(cmd.run(ctx, "fresh-jwt", cmd.Connected, true))
}

// printed prints a mode's RESULT line.
func printed(r *report, err error) error {
	if err != nil {
		return err
	}
	fmt.Println(r)
	return nil
}

// window counts what happens between begin and end of the measured window.
type window struct {
	on        atomic.Bool
	statuses  statusCounter
	delivered atomic.Int64
	self      cpuMeter      // the load tool's own CPU: was it the bottleneck?
	selfUsed  time.Duration // in the window
}

func (cmd *throughput) run(ctx context.Context, mode string, connected, fresh bool) (*report, error) {
	if err := cmd.check(); err != nil {
		return nil, err
	}
	if cmd.Concurrency <= 0 {
		return nil, errors.New("--concurrency must be positive")
	}
	p, err := newPusher(&cmd.target, cmd.Concurrency, fresh)
	if err != nil {
		return nil, err
	}
	agents, err := cmd.subscribe(ctx, cmd.Agents, connected)
	if err != nil {
		return nil, err
	}
	defer closeAgents(agents)
	state := "disconnected"
	if connected {
		state = "connected"
	}
	fmt.Printf("subscribed %d %s user agents\n", len(agents), state)
	if !connected {
		// Let the server see the disconnects, so the pushes are stored.
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
	}
	w := &window{self: cpuMeter{pid: os.Getpid()}}
	var readers sync.WaitGroup
	if connected {
		for _, a := range agents {
			readers.Add(1)
			go func() {
				defer readers.Done()
				a.readNotifications(func([16]byte) {
					if w.on.Load() {
						w.delivered.Add(1)
					}
				})
			}()
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var next atomic.Int64
	var senders sync.WaitGroup
	for range cmd.Concurrency {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for runCtx.Err() == nil {
				a := agents[next.Add(1)%int64(len(agents))]
				pr, err := p.prepare(runCtx, a.endpoint)
				status := 0
				if err == nil {
					status = p.send(pr)
				}
				if runCtx.Err() != nil {
					return // cut off by the end of the run: not an answer
				}
				if w.on.Load() {
					w.statuses.add(status)
				}
			}
		}()
	}
	measured, cpuUsed, err := cmd.measure(ctx, w)
	stop()
	senders.Wait()
	closeAgents(agents)
	waitTimeout(&readers, 5*time.Second)
	if err != nil {
		return nil, err
	}

	st := w.statuses.snapshot()
	accepted := st[201]
	secs := measured.Seconds()
	r := &report{}
	r.add("mode", mode)
	r.add("agents", len(agents))
	r.add("concurrency", cmd.Concurrency)
	r.add("window_s", secs)
	r.add("accepted", accepted)
	r.add("accepted_per_s", float64(accepted)/secs)
	r.add("statuses", statusCounts(st))
	if connected {
		r.add("delivered", w.delivered.Load())
		r.add("delivered_per_s", float64(w.delivered.Load())/secs)
	}
	r.add("client_cpu_pct", 100*w.selfUsed.Seconds()/secs)
	if cmd.PID != 0 {
		r.add("server_cpu_s", cpuUsed.Seconds())
		r.add("server_cpu_pct", 100*cpuUsed.Seconds()/secs)
		if accepted > 0 {
			r.add("cpu_per_push_ms", cpuUsed/time.Duration(accepted))
		}
	}
	fmt.Printf("%s: %d senders for %.1f s to %d %s user agents: %.0f accepted/s (%s)",
		mode, cmd.Concurrency, secs, len(agents), state, float64(accepted)/secs, statusCounts(st))
	if connected {
		fmt.Printf(", %.0f delivered/s", float64(w.delivered.Load())/secs)
	}
	fmt.Println()
	if cmd.PID != 0 && accepted > 0 {
		fmt.Printf("server CPU %.2f s (%.0f%% of a core), %s ms per accepted push\n",
			cpuUsed.Seconds(), 100*cpuUsed.Seconds()/secs, ms(cpuUsed/time.Duration(accepted)))
	}
	return r, nil
}

// measure waits out the warm-up, then counts for Duration (less if ctx
// ends first) and returns the window's length and the server CPU in it.
func (cmd *throughput) measure(ctx context.Context, w *window) (time.Duration, time.Duration, error) {
	if err := sleepCtx(ctx, cmd.Warmup); err != nil {
		return 0, 0, err
	}
	cpu := cpuMeter{pid: cmd.PID}
	if err := cpu.begin(); err != nil {
		return 0, 0, err
	}
	if err := w.self.begin(); err != nil {
		return 0, 0, err
	}
	w.on.Store(true)
	t0 := time.Now()
	_ = sleepCtx(ctx, cmd.Duration) // SIGINT ends the window early; what was measured is reported
	w.on.Store(false)
	measured := time.Since(t0)
	used, err := cpu.used()
	w.selfUsed, _ = w.self.used()
	return measured, used, err
}
