package console

import (
	"context"
	"sync"
	"time"
)

// cache holds one value fetched at most once per ttl, however many
// clients ask: a caller arriving during a fetch waits for it (or for its
// own context) instead of starting another. Fetches run without the
// caller's cancellation (others may be waiting) but within timeout.
type cache[T any] struct {
	ttl, timeout time.Duration
	fetch        func(context.Context) (T, error)

	mu       sync.Mutex
	at       time.Time
	val      T
	err      error
	inflight chan struct{}
}

func newCache[T any](ttl, timeout time.Duration, fetch func(context.Context) (T, error)) *cache[T] {
	return &cache[T]{ttl: ttl, timeout: timeout, fetch: fetch}
}

func (c *cache[T]) get(ctx context.Context) (T, error) {
	for {
		c.mu.Lock()
		if !c.at.IsZero() && time.Since(c.at) < c.ttl {
			v, err := c.val, c.err
			c.mu.Unlock()
			return v, err
		}
		if wait := c.inflight; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				var zero T
				return zero, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.inflight = done
		c.mu.Unlock()

		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		v, err := c.fetch(fctx)
		cancel()

		c.mu.Lock()
		c.val, c.err, c.at, c.inflight = v, err, time.Now(), nil
		c.mu.Unlock()
		close(done)
		return v, err
	}
}
