package route

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Table maps partition numbers to the link address of their owner, as the
// owners' consumer group assigned them. It is refreshed periodically and on
// demand (a router that met ErrNotOwner), never more often than MinGap.
type Table struct {
	fetch  func(context.Context) (map[int32]string, error)
	every  time.Duration
	minGap time.Duration
	log    *slog.Logger

	mu       sync.Mutex
	owners   map[int32]string
	last     time.Time
	inflight chan struct{}
	onChange func(changed map[int32]string) // nil: nobody listens
}

// TableConfig configures a Table.
type TableConfig struct {
	// Fetch reads the current assignment: partition -> owner link address
	// (owner.GroupOwners). A partition being moved is missing.
	Fetch  func(context.Context) (map[int32]string, error)
	Every  time.Duration // periodic refresh, default 1s
	MinGap time.Duration // least time between two fetches, default 100ms
	// OnChange, if set, is called after a refresh with the partitions
	// whose owner changed (to a known owner); the Router passes its
	// TableChanged.
	OnChange func(changed map[int32]string)
	Logger   *slog.Logger
}

// NewTable returns a Table; Run keeps it fresh.
func NewTable(cfg TableConfig) *Table {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Table{fetch: cfg.Fetch, every: cfg.Every, minGap: cfg.MinGap, log: cfg.Logger,
		onChange: cfg.OnChange, owners: map[int32]string{}}
}

// Owner returns the link address of p's owner, if one is known.
func (t *Table) Owner(p int32) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.owners[p]
	return a, ok
}

// Refresh fetches the assignment unless a fetch runs (then it waits for
// that one) or the last one is younger than MinGap.
func (t *Table) Refresh(ctx context.Context) error {
	t.mu.Lock()
	if ch := t.inflight; ch != nil {
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return nil
	}
	if time.Since(t.last) < t.minGap {
		t.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	t.inflight = ch
	t.mu.Unlock()

	owners, err := t.fetch(ctx)
	changed := map[int32]string{}
	t.mu.Lock()
	if err == nil {
		for p, a := range owners {
			if old, ok := t.owners[p]; !ok || old != a {
				changed[p] = a
			}
		}
		t.owners = owners
	}
	t.last = time.Now()
	t.inflight = nil
	t.mu.Unlock()
	close(ch)
	if err != nil {
		t.log.Debug("owner table refresh failed", "err", err)
		return err
	}
	if len(changed) > 0 {
		t.log.Debug("partition owners changed", "changed", changed)
		if t.onChange != nil {
			t.onChange(changed)
		}
	}
	return nil
}

// Run refreshes every Every until ctx ends.
func (t *Table) Run(ctx context.Context) {
	tick := time.NewTicker(t.every)
	defer tick.Stop()
	for {
		_ = t.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
