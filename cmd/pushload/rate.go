package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

type rateCmd struct {
	target      `embed:""`
	Rate        float64       `default:"100" help:"Pushes per second, sent on an open-loop schedule (push i at start + i/rate, each from its own goroutine, whatever the answers), so a server stall shows as latency instead of a slower client. Latency runs from the POST going out to the notification read; send_lag_max_ms says how late the load tool itself was."`
	MaxInflight int           `default:"20000" help:"Pushes in flight at most; past it a scheduled push is skipped and counted (the load tool is overloaded, or the server stalled)."`
	Conns       int           `default:"256" help:"HTTP connections to the server at most (a push waiting for one is timed from before the wait, so a slow server still shows)."`
	Drain       time.Duration `default:"5s" help:"After the window, how long to wait for notifications still on their way; missing ones are counted as lost."`
}

// sendTimes are when a push was due on the schedule and when its POST
// went out (later only if the load tool itself lagged).
type sendTimes struct{ due, sent time.Time }

// inflight maps a push's salt to its send times.
type inflight struct {
	mu      sync.Mutex
	m       map[[16]byte]sendTimes
	from    time.Time       // pushes scheduled before are warm-up: not recorded
	lat     []time.Duration // POST sent → notification read
	latDue  []time.Duration // scheduled send → notification read: includes the load tool's own lag
	unknown int64           // notifications of no push in flight (duplicates, strays)
}

func (f *inflight) put(salt [16]byte, at sendTimes) {
	f.mu.Lock()
	f.m[salt] = at
	f.mu.Unlock()
}

func (f *inflight) drop(salt [16]byte) {
	f.mu.Lock()
	delete(f.m, salt)
	f.mu.Unlock()
}

// seen records the latency of the push with this salt.
func (f *inflight) seen(salt [16]byte) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.m[salt]
	if !ok {
		f.unknown++
		return
	}
	delete(f.m, salt)
	if !at.due.Before(f.from) {
		f.lat = append(f.lat, now.Sub(at.sent))
		f.latDue = append(f.latDue, now.Sub(at.due))
	}
}

func (f *inflight) pending(since time.Time) (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, at := range f.m {
		if !at.due.Before(since) {
			n++
		}
	}
	return n
}

func (cmd *rateCmd) Run(ctx context.Context) error { return printed(cmd.run(ctx)) }

func (cmd *rateCmd) run(ctx context.Context) (*report, error) {
	if cmd.Rate <= 0 || cmd.MaxInflight <= 0 || cmd.Conns <= 0 {
		return nil, errors.New("--rate, --max-inflight and --conns must be positive")
	}
	p, agents, err := cmd.setup(ctx, cmd.Conns, false, true)
	if err != nil {
		return nil, err
	}
	defer closeAgents(agents)
	fmt.Printf("subscribed %d connected user agents\n", len(agents))

	start := time.Now().Add(100 * time.Millisecond)
	from, end := start.Add(cmd.Warmup), start.Add(cmd.Warmup+cmd.Duration)
	fl := &inflight{m: map[[16]byte]sendTimes{}, from: from}
	hangUp := listen(agents, fl.seen)

	var (
		statuses            statusCounter // in the window
		sent, skipped, lagN atomic.Int64
		maxLag              atomic.Int64 // ns a send started after its due time
		senders             sync.WaitGroup
		inFlight            atomic.Int64
	)
	cpu := newCPUWindow(cmd.PID)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
schedule:
	for i := int64(0); ; i++ {
		at := due(start, cmd.Rate, i)
		if !at.Before(end) {
			break
		}
		if !cpu.begun && !at.Before(from) {
			if err := cpu.begin(); err != nil {
				return nil, err
			}
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break schedule
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			break schedule
		}
		if inFlight.Load() >= int64(cmd.MaxInflight) {
			skipped.Add(1)
			continue
		}
		inFlight.Add(1)
		senders.Add(1)
		a := agents[i%int64(len(agents))]
		go func() {
			defer func() { inFlight.Add(-1); senders.Done() }()
			pr, err := p.prepare(ctx, a.endpoint)
			if err != nil {
				statuses.add(0)
				return
			}
			// Recorded before the POST: the notification may be read
			// before the 201.
			postAt := time.Now()
			fl.put(pr.salt, sendTimes{due: at, sent: postAt})
			if lag := postAt.Sub(at); lag > 0 {
				for old := maxLag.Load(); lag > time.Duration(old) && !maxLag.CompareAndSwap(old, int64(lag)); old = maxLag.Load() {
				}
				if lag > time.Millisecond {
					lagN.Add(1)
				}
			}
			status := p.send(pr)
			if status != 201 {
				fl.drop(pr.salt)
			}
			if !at.Before(from) {
				sent.Add(1)
				statuses.add(status)
			}
		}()
	}
	senders.Wait()
	// CPU is read once every push of the window is answered, so the work
	// of the last ones is in it.
	cpuErr := cpu.end()
	window := max(time.Since(from), 0)
	// Notifications still on their way get the drain period.
	drainEnd := time.Now().Add(cmd.Drain)
	for fl.pending(from) > 0 && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	lost := fl.pending(from)
	hangUp()
	if cpuErr != nil {
		return nil, cpuErr
	}

	fl.mu.Lock()
	lat, latDue := fl.lat, fl.latDue
	unknown := fl.unknown
	fl.mu.Unlock()
	st := statuses.snapshot()
	accepted := st[201]
	q := quantiles(lat, 0.50, 0.95, 0.99, 1)
	r := &report{}
	r.add("mode", "rate")
	r.add("rate", cmd.Rate)
	r.add("agents", len(agents))
	r.add("window_s", window.Seconds())
	r.add("sent", sent.Load())
	r.add("accepted", accepted)
	r.add("statuses", statusCounts(st))
	r.add("delivered", len(lat))
	r.add("lost", lost)
	r.add("unknown", unknown)
	r.add("skipped", skipped.Load())
	r.add("p50_ms", q[0])
	r.add("p95_ms", q[1])
	r.add("p99_ms", q[2])
	r.add("max_ms", q[3])
	qd := quantiles(latDue, 0.99)
	r.add("p99_from_schedule_ms", qd[0])
	r.add("send_lag_max_ms", time.Duration(maxLag.Load()))
	r.add("late_sends", lagN.Load())
	cpu.addTo(r, window, accepted)
	fmt.Printf("rate %.0f/s for %s to %d connected user agents: %d sent, %d accepted (%s), %d delivered, %d lost\n",
		cmd.Rate, window.Round(time.Millisecond), len(agents), sent.Load(), accepted, statusCounts(st), len(lat), lost)
	fmt.Printf("push → socket latency (POST sent → notification read): p50 %s ms, p95 %s ms, p99 %s ms, max %s ms\n",
		ms(q[0]), ms(q[1]), ms(q[2]), ms(q[3]))
	cpu.print(window, accepted)
	return r, nil
}
