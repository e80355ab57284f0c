package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// throughput is a closed-loop push run: Concurrency senders push as fast
// as the server answers, round robin over the user agents.
type throughput struct {
	target      `embed:""`
	Concurrency int `default:"32" help:"Concurrent senders (each waits for its answer before the next push)."`

	presign int // fresh-jwt: tokens signed before the load
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
	Presign    int  `default:"150000" help:"Tokens signed before the load starts, each used for one push (past them, each push is signed as it is sent): the load tool's own signing then does not cap the rate it measures. 0: sign every push as it is sent."`
}

func (cmd *offlineCmd) Run(ctx context.Context) error {
	return printed(cmd.run(ctx, "offline", false, false))
}

func (cmd *connectedCmd) Run(ctx context.Context) error {
	return printed(cmd.run(ctx, "connected", true, false))
}

// maxPresign bounds the tokens signed ahead: about 370 bytes each
// (1.8 GB at the bound).
const maxPresign = 5_000_000

func (cmd *freshJWTCmd) Run(ctx context.Context) error {
	if cmd.Presign < 0 || cmd.Presign > maxPresign {
		return fmt.Errorf("--presign must be within 0..%d", maxPresign)
	}
	cmd.presign = cmd.Presign
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
	cpu       *cpuWindow
}

func (cmd *throughput) run(ctx context.Context, mode string, connected, fresh bool) (*report, error) {
	if cmd.Concurrency <= 0 {
		return nil, errors.New("--concurrency must be positive")
	}
	p, agents, err := cmd.setup(ctx, cmd.Concurrency, fresh, connected)
	if err != nil {
		return nil, err
	}
	defer closeAgents(agents)
	state := "disconnected"
	if connected {
		state = "connected"
	}
	fmt.Printf("subscribed %d %s user agents\n", len(agents), state)
	if fresh && cmd.presign > 0 {
		start := time.Now()
		if err := p.presign(ctx, agents[0].endpoint, cmd.presign); err != nil {
			return nil, fmt.Errorf("presign: %w", err)
		}
		fmt.Printf("signed %d tokens ahead in %.1f s\n", cmd.presign, time.Since(start).Seconds())
	}
	if !connected {
		// Let the server see the disconnects, so the pushes are stored.
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
	}
	w := &window{cpu: newCPUWindow(cmd.PID)}
	hangUp := listen(agents, func([16]byte) { // disconnected agents: none
		if w.on.Load() {
			w.delivered.Add(1)
		}
	})

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
	measured, err := cmd.measure(ctx, w)
	stop()
	senders.Wait()
	hangUp()
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
	if fresh {
		r.add("signed_live", p.signedLive.Load())
	}
	w.cpu.addTo(r, measured, accepted)
	fmt.Printf("%s: %d senders for %.1f s to %d %s user agents: %.0f accepted/s (%s)",
		mode, cmd.Concurrency, secs, len(agents), state, float64(accepted)/secs, statusCounts(st))
	if connected {
		fmt.Printf(", %.0f delivered/s", float64(w.delivered.Load())/secs)
	}
	fmt.Println()
	w.cpu.print(measured, accepted)
	return r, nil
}

// measure waits out the warm-up, then counts for Duration (less if ctx
// ends first) and returns the window's length; w.cpu holds the CPU in it.
func (cmd *throughput) measure(ctx context.Context, w *window) (time.Duration, error) {
	if err := sleepCtx(ctx, cmd.Warmup); err != nil {
		return 0, err
	}
	if err := w.cpu.begin(); err != nil {
		return 0, err
	}
	w.on.Store(true)
	t0 := time.Now()
	_ = sleepCtx(ctx, cmd.Duration) // SIGINT ends the window early; what was measured is reported
	w.on.Store(false)
	measured := time.Since(t0)
	return measured, w.cpu.end()
}
