package broadcasts

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

func testCluster(t *testing.T) ([]kgo.Opt, *kgo.Client, schema.Names) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(50 * time.Millisecond)}
	prod, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	names, _ := schema.NamesFor("bc")
	if err := schema.EnsureTopics(t.Context(), kadm.NewClient(prod), names.Specs(time.Hour), 3, 1); err != nil {
		t.Fatal(err)
	}
	return opts, prod, names
}

// TestTableFold: the table reads what was written before it started, is
// ready once it did, then sees changes; removals, bad records and ids past
// Max are handled as documented.
func TestTableFold(t *testing.T) {
	opts, prod, names := testCluster(t)
	ctx := t.Context()
	if err := Write(ctx, prod, names, map[string]string{"a/x": "1", "b": "1"}, "cli"); err != nil {
		t.Fatal(err)
	}
	if err := Write(ctx, prod, names, map[string]string{"a/x": "2"}, "cli"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []map[string]string
	ignored := map[string]int{}
	tb, err := New(Config{ClientOpts: opts, Names: names, Max: 3,
		OnChange: func(table map[string]string, _ map[string]schema.Broadcast) {
			mu.Lock()
			seen = append(seen, table)
			mu.Unlock()
		},
		OnIgnored: func(r string) { mu.Lock(); ignored[r]++; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tb.Run(rctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-tb.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	if got := tb.Snapshot(); !maps.Equal(got, map[string]string{"a/x": "2", "b": "1"}) {
		t.Fatalf("at ready: %v", got)
	}
	bad := &kgo.Record{Topic: names.Broadcasts, Key: []byte("not valid"), Value: []byte("1")}
	tomb := &kgo.Record{Topic: names.Broadcasts, Key: []byte("b")}
	if err := prod.ProduceSync(ctx, bad, tomb).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Each step waits for the last: the topic has three partitions, and
	// which new id a full table refuses depends on the order it reads them.
	waitTable(t, tb, map[string]string{"a/x": "2"})
	if err := Write(ctx, prod, names, map[string]string{"c": "1", "d": "1"}, "admin"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a/x": "2", "c": "1", "d": "1"}
	waitTable(t, tb, want)
	if err := Write(ctx, prod, names, map[string]string{"e": "1"}, "admin"); err != nil {
		t.Fatal(err)
	}
	// "e" is past Max (3).
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ignored[IgnoredTableFull] > 0
	}, func() string { return fmt.Sprintf("e was never refused; table %v", tb.Snapshot()) })
	if got := tb.Snapshot(); !maps.Equal(got, want) {
		t.Fatalf("table %v, want %v", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if ignored[IgnoredInvalid] != 1 || ignored[IgnoredTableFull] != 1 {
		t.Fatalf("ignored %v", ignored)
	}
	if len(seen) == 0 || !maps.Equal(seen[len(seen)-1], want) {
		t.Fatalf("OnChange saw %v", seen)
	}
	loaded, err := Load(ctx, opts, names)
	want["e"] = "1" // Load holds up to schema.MaxBroadcasts
	if err != nil || !maps.Equal(loaded, want) {
		t.Fatalf("Load %v %v", loaded, err)
	}
}

// waitTable waits until the table holds want.
func waitTable(t *testing.T, tb *Table, want map[string]string) {
	t.Helper()
	waitFor(t, func() bool { return maps.Equal(tb.Snapshot(), want) },
		func() string { return fmt.Sprintf("table %v, want %v", tb.Snapshot(), want) })
}

// waitFor polls cond for up to 10 s and fails with why() if it never holds.
func waitFor(t *testing.T, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(why())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWriteRefusesInvalid(t *testing.T) {
	_, prod, names := testCluster(t)
	if err := Write(t.Context(), prod, names, map[string]string{"ok": "1", "bad id": "1"}, "cli"); err == nil {
		t.Fatal("invalid id written")
	}
	got, err := Load(t.Context(), []kgo.Opt{kgo.SeedBrokers(prod.OptValue(kgo.SeedBrokers).([]string)...)}, names)
	if err != nil || len(got) != 0 {
		t.Fatalf("something was written: %v %v", got, err)
	}
}

func TestDiff(t *testing.T) {
	got := Diff(map[string]string{"a": "1", "b": "1"}, map[string]string{"a": "1", "b": "2", "c": "1"})
	if !maps.Equal(got, map[string]string{"b": "2", "c": "1"}) {
		t.Fatal(got)
	}
}
