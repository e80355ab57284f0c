package analytics

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"
)

// shutdownTimeout bounds the last flush when Run is stopped or
// partitions are revoked.
const shutdownTimeout = 5 * time.Second

// errAbandon means a rebalance is waiting while ClickHouse fails:
// the unstored rows are given up and re-read after the rebalance.
var errAbandon = errors.New("analytics projector: rebalance requested while ClickHouse is failing")

// retryMode says how long a ClickHouse operation is retried.
type retryMode int

const (
	// retryForever retries until success or ctx ends: start-up
	// and assignment, which have nothing to give up.
	retryForever retryMode = iota
	// retryUntilRebalance also stops (errAbandon) after
	// a failure when a rebalance is waiting: the poll loop, whose batch
	// can be re-read.
	retryUntilRebalance
	// retryOnce makes one attempt: a rebalance is under way and
	// the next owner redoes whatever is not stored.
	retryOnce
)

// retry runs op through the circuit breaker until it succeeds, backing off
// between failures. It stops when ctx ends, or earlier as mode says.
func (p *Projector) retry(ctx context.Context, what string, mode retryMode, op func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	var cause error // the last error ClickHouse gave, not the breaker's
	for attempt := 1; ; attempt++ {
		_, err := p.cb.Execute(func() (struct{}, error) {
			octx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
			defer cancel()
			return struct{}{}, op(octx)
		})
		if err == nil {
			p.failing.Store(false)
			if attempt > 1 {
				p.log.Info("clickhouse answers again", "op", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.stats.failures.Add(1)
		p.failing.Store(true)
		if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
			cause = err
		}
		if mode == retryOnce {
			return err // the caller reports it
		}
		switch {
		case attempt == 1:
			p.log.Warn("clickhouse failed; pausing consumption and retrying", "op", what, "err", err)
		case attempt%20 == 0:
			// A lasting error (not only "breaker open") must stay visible.
			p.log.Warn("clickhouse still failing", "op", what, "attempt", attempt, "err", cause)
		default:
			p.log.Debug("clickhouse still failing", "op", what, "attempt", attempt, "err", err)
		}
		if mode == retryUntilRebalance && p.rebalanceWanted.Load() {
			return errAbandon
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, p.cfg.RetryMax)
	}
}
