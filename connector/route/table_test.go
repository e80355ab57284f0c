package route

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTable(t *testing.T) {
	var fetches atomic.Int32
	var mu sync.Mutex
	current := map[int32]string{0: "a", 1: "b"}
	var failing atomic.Bool
	var changes []map[int32]string
	tbl := NewTable(TableConfig{
		MinGap:   50 * time.Millisecond,
		OnChange: func(c map[int32]string) { changes = append(changes, c) },
		Fetch: func(context.Context) (map[int32]string, error) {
			fetches.Add(1)
			if failing.Load() {
				return nil, errors.New("rebalancing")
			}
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(current), nil
		},
	})
	ctx := context.Background()

	if err := tbl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if a, ok := tbl.Owner(1); !ok || a != "b" {
		t.Fatalf("Owner(1) = %q, %v", a, ok)
	}
	if _, ok := tbl.Owner(7); ok {
		t.Fatal("unknown partition has an owner")
	}
	if len(changes) != 1 || !maps.Equal(changes[0], current) {
		t.Fatalf("changes %v", changes)
	}
	// Rate limited.
	_ = tbl.Refresh(ctx)
	if fetches.Load() != 1 {
		t.Fatalf("%d fetches within MinGap", fetches.Load())
	}
	time.Sleep(60 * time.Millisecond)
	mu.Lock()
	current = map[int32]string{0: "a", 1: "c"}
	mu.Unlock()
	_ = tbl.Refresh(ctx)
	if len(changes) != 2 || !maps.Equal(changes[1], map[int32]string{1: "c"}) {
		t.Fatalf("changes %v, want only partition 1", changes)
	}
	// A failed fetch keeps what was known.
	time.Sleep(60 * time.Millisecond)
	failing.Store(true)
	if err := tbl.Refresh(ctx); err == nil {
		t.Fatal("no error")
	}
	if a, _ := tbl.Owner(1); a != "c" {
		t.Fatalf("owner lost after a failed refresh: %q", a)
	}
}

// TestTableConcurrentRefresh: callers arriving during a fetch wait for it
// instead of fetching again.
func TestTableConcurrentRefresh(t *testing.T) {
	var fetches atomic.Int32
	release := make(chan struct{})
	tbl := NewTable(TableConfig{Fetch: func(context.Context) (map[int32]string, error) {
		fetches.Add(1)
		<-release
		return map[int32]string{0: "a"}, nil
	}})
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = tbl.Refresh(context.Background()) }()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if fetches.Load() != 1 {
		t.Fatalf("%d fetches", fetches.Load())
	}
}
