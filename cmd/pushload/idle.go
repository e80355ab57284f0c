package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type idleCmd struct {
	WS          string        `name:"ws" default:"ws://127.0.0.1:8080/" help:"WebSocket URL of the server."`
	PID         int           `name:"pid" required:"" help:"Server process id: RSS (VmRSS of /proc/PID/status) and CPU time (/proc/PID/stat) are read from it."`
	Debug       string        `help:"Server debug listener base URL (http://host:port): after the no-GC figures, RSS after GET /debug/gc is read with the connections and again once they are closed, for live memory per connection (off when empty)."`
	N           int           `default:"10000" help:"Idle connections (hello + one register each)."`
	PerProcess  int           `default:"9000" help:"Connections per child process (open files are capped per process)."`
	Concurrency int           `default:"20" help:"Connections being set up at a time, per child process."`
	Warmup      int           `default:"200" help:"Connections opened and closed before the first RSS reading, so one-time allocations are not charged per connection."`
	Settle      time.Duration `default:"3s" help:"Wait before each RSS reading; then RSS is read every second until two readings differ by less than 1% (at most --settle-max)."`
	SettleMax   time.Duration `default:"30s" help:"Longest wait for RSS to settle; the last reading is used past it."`
	Hold        time.Duration `default:"30s" help:"Idle period over which the server's CPU is measured."`
	Timeout     time.Duration `default:"10s" help:"Bound on one connection's setup."`
}

// child is one `pushload conns` process holding connections.
type child struct {
	cmd     *exec.Cmd
	errs    *tailBuffer
	readyc  chan string   // its READY line
	exited  chan struct{} // closed once it has exited; waitErr is then set
	waitErr error
}

func (cmd *idleCmd) Run(ctx context.Context) error {
	if cmd.N <= 0 || cmd.PerProcess <= 0 || cmd.PerProcess > 19000 || cmd.Hold <= 0 {
		return errors.New("--n and --hold must be positive, --per-process within 1..19000")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	if cmd.Warmup > 0 {
		w, err := cmd.start(ctx, self, cmd.Warmup, "0s")
		if err != nil {
			return err
		}
		if _, err := w.ready(); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		<-w.exited
		if w.waitErr != nil {
			return fmt.Errorf("warm-up: %w: %s", w.waitErr, w.errs)
		}
	}
	before, err := cmd.settledRSS(ctx)
	if err != nil {
		return err
	}

	var children []*child
	defer func() { stopChildren(children) }()
	for left := cmd.N; left > 0; left -= cmd.PerProcess {
		c, err := cmd.start(ctx, self, min(left, cmd.PerProcess), "24h")
		if err != nil {
			return err
		}
		children = append(children, c)
	}
	t0 := time.Now()
	opened := 0
	for i, c := range children {
		ok, err := c.ready()
		if err != nil {
			return fmt.Errorf("child %d: %w", i, err)
		}
		opened += ok
	}
	processes := len(children)
	fmt.Printf("%d/%d idle connections up in %s (%d processes)\n", opened, cmd.N, time.Since(t0).Round(time.Millisecond), processes)
	if opened == 0 {
		return errors.New("no connection could be set up")
	}
	after, err := cmd.settledRSS(ctx)
	if err != nil {
		return err
	}
	cpu := cpuMeter{pid: cmd.PID}
	if err := cpu.begin(); err != nil {
		return err
	}
	if err := sleepCtx(ctx, cmd.Hold); err != nil {
		return err
	}
	idleCPU, err := cpu.used()
	if err != nil {
		return err
	}
	// Live memory per connection: RSS after a forced GC with the
	// connections, and again once they are closed (maps do not shrink, so
	// this slightly understates it).
	var afterGC, emptyGC int64
	if cmd.Debug != "" {
		if afterGC, err = cmd.rssAfterGC(ctx); err != nil {
			return err
		}
		stopChildren(children)
		children = nil
		if err := sleepCtx(ctx, cmd.Settle); err != nil {
			return err
		}
		if emptyGC, err = cmd.rssAfterGC(ctx); err != nil {
			return err
		}
	}

	perConn := float64(after-before) / float64(opened)
	r := &report{}
	r.add("mode", "idle")
	r.add("connections", opened)
	r.add("failed", cmd.N-opened)
	r.add("processes", processes)
	r.add("rss_before_kb", before/1024)
	r.add("rss_after_kb", after/1024)
	r.add("rss_per_conn_kb", perConn/1024)
	r.add("idle_s", cmd.Hold.Seconds())
	r.add("idle_cpu_s", idleCPU.Seconds())
	r.add("idle_cpu_pct", 100*idleCPU.Seconds()/cmd.Hold.Seconds())
	fmt.Printf("server RSS %d KB → %d KB: %.2f KB per idle connection (no forced GC)\n", before/1024, after/1024, perConn/1024)
	if afterGC > 0 {
		gcPer := float64(afterGC-emptyGC) / float64(opened)
		r.add("rss_after_gc_kb", afterGC/1024)
		r.add("rss_closed_gc_kb", emptyGC/1024)
		r.add("rss_per_conn_gc_kb", gcPer/1024)
		fmt.Printf("after GET /debug/gc: %d KB with the connections, %d KB once closed: %.2f KB per connection\n",
			afterGC/1024, emptyGC/1024, gcPer/1024)
	}
	fmt.Printf("server CPU while %d connections idle for %s: %.3f s (%.2f%% of a core)\n",
		opened, cmd.Hold, idleCPU.Seconds(), 100*idleCPU.Seconds()/cmd.Hold.Seconds())
	fmt.Println(r)
	return nil
}

// settledRSS waits Settle, then reads the server's RSS every second until
// it stops moving (the runtime returns start-up garbage to the OS in the
// background for a while), at most SettleMax.
func (cmd *idleCmd) settledRSS(ctx context.Context) (int64, error) {
	if err := sleepCtx(ctx, cmd.Settle); err != nil {
		return 0, err
	}
	prev, err := procRSS(cmd.PID)
	if err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(cmd.SettleMax); time.Now().Before(deadline); {
		if err := sleepCtx(ctx, time.Second); err != nil {
			return 0, err
		}
		cur, err := procRSS(cmd.PID)
		if err != nil {
			return 0, err
		}
		if settled(prev, cur) {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

// settled reports whether two RSS readings a second apart differ by less
// than 1%.
func settled(prev, cur int64) bool {
	d := cur - prev
	return d*100 < cur && -d*100 < cur
}

// start runs `pushload conns` holding n connections for hold.
func (cmd *idleCmd) start(ctx context.Context, self string, n int, hold string) (*child, error) {
	c := exec.CommandContext(ctx, self, "conns", "--url", cmd.WS, "--n", strconv.Itoa(n),
		"--hold", hold, "--concurrency", strconv.Itoa(cmd.Concurrency), "--timeout", cmd.Timeout.String())
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGINT) }
	c.WaitDelay = 15 * time.Second
	ch := &child{cmd: c, errs: &tailBuffer{max: 4096}, readyc: make(chan string, 1), exited: make(chan struct{})}
	c.Stderr = ch.errs
	c.Stdout = &lineWriter{fn: func(line string) {
		if _, found, _ := parseReady(line); found {
			select {
			case ch.readyc <- line:
			default:
			}
		}
	}}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start conns: %w", err)
	}
	go func() { ch.waitErr = c.Wait(); close(ch.exited) }()
	return ch, nil
}

// ready waits for the child's READY line and returns how many connections
// it holds.
func (c *child) ready() (int, error) {
	select {
	case line := <-c.readyc:
		ok, _, err := parseReady(line)
		return ok, err
	case <-c.exited:
		return 0, fmt.Errorf("conns ended before READY: %s", c.errs)
	}
}

// lineWriter hands each complete line written to it to fn.
type lineWriter struct {
	mu   sync.Mutex
	part []byte
	fn   func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.part[:i]))
		w.part = w.part[i+1:]
	}
	if len(w.part) > 64<<10 { // a runaway line is dropped, not kept
		w.part = w.part[:0]
	}
	return len(p), nil
}

// parseReady reads conns' "READY ok=N failed=M ..." line.
func parseReady(line string) (ok int, found bool, err error) {
	rest, isReady := strings.CutPrefix(line, "READY ")
	if !isReady {
		return 0, false, nil
	}
	for _, f := range strings.Fields(rest) {
		if v, has := strings.CutPrefix(f, "ok="); has {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, false, fmt.Errorf("READY line %q: %w", line, err)
			}
			return n, true, nil
		}
	}
	return 0, false, fmt.Errorf("READY line without ok=: %q", line)
}

// stopChildren asks every child to close its connections and waits.
func stopChildren(children []*child) {
	for _, c := range children {
		_ = c.cmd.Process.Signal(syscall.SIGINT)
	}
	for _, c := range children {
		<-c.exited
	}
}

func (cmd *idleCmd) rssAfterGC(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cmd.Debug, "/")+"/debug/gc", nil)
	if err != nil {
		return 0, fmt.Errorf("debug gc: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("debug gc: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return 0, fmt.Errorf("debug gc: status %d", resp.StatusCode)
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return 0, err
	}
	return procRSS(cmd.PID)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// tailBuffer keeps the last max bytes written (a child's stderr, for error
// reports), so a chatty child cannot grow it.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
