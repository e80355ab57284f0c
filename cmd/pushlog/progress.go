package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports a long operation's advance: a bar with rate and ETA on
// a terminal, plain periodic lines otherwise (logs, CI, pipes), so the
// output stays readable where no cursor movement is possible.
type progress interface {
	Add(n int64)
	Finish()
}

// progressLineInterval is how often plain lines are written.
const progressLineInterval = 5 * time.Second

// newProgress reports to w about total units of what (e.g. "events").
func newProgress(w io.Writer, what string, total int64) progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &barProgress{bar: progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(what),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)}
	}
	return newLineProgress(w, what, total, progressLineInterval, time.Now)
}

type barProgress struct{ bar *progressbar.ProgressBar }

func (b *barProgress) Add(n int64) { _ = b.bar.Add64(n) }
func (b *barProgress) Finish()     { _ = b.bar.Finish() }

// lineProgress writes "what: done/total (pct), rate/s, eta" at most every
// interval, and once more when finished.
type lineProgress struct {
	mu       sync.Mutex
	w        io.Writer
	what     string
	total    int64
	done     int64
	began    time.Time
	last     time.Time
	interval time.Duration
	now      func() time.Time
}

func newLineProgress(w io.Writer, what string, total int64, interval time.Duration, now func() time.Time) *lineProgress {
	t := now()
	return &lineProgress{w: w, what: what, total: total, began: t, last: t, interval: interval, now: now}
}

func (l *lineProgress) Add(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done += n
	if t := l.now(); t.Sub(l.last) >= l.interval {
		l.last = t
		fmt.Fprintln(l.w, l.lineLocked(t))
	}
}

func (l *lineProgress) Finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, l.lineLocked(l.now())+" done")
}

func (l *lineProgress) lineLocked(t time.Time) string {
	elapsed := t.Sub(l.began)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(l.done) / elapsed.Seconds()
	}
	pct := 100.0
	if l.total > 0 {
		pct = 100 * float64(l.done) / float64(l.total)
	}
	eta := "unknown"
	switch {
	case l.done >= l.total:
		eta = "0s"
	case rate > 0:
		eta = time.Duration(float64(l.total-l.done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s: %d/%d (%.1f%%), %.0f/s, eta %s", l.what, l.done, l.total, pct, rate, eta)
}
