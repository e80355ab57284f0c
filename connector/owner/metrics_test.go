package owner

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushlog/pushlog/schema"
)

// TestMetrics: pending messages and owned partitions come from Stats at
// scrape time.
func TestMetrics(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	e.accept(uaid, ch, withPayload([]byte("a")))
	e.accept(uaid, ch, withPayload([]byte("b")))
	reg := prometheus.NewPedanticRegistry()
	r := e.start(func(c *Config) { c.Metrics = reg })
	e.waitReady(r, testPartitions)
	want := `
# HELP pushlog_owner_partition_pending_messages Unsettled messages per owned partition.
# TYPE pushlog_owner_partition_pending_messages gauge
pushlog_owner_partition_pending_messages{partition="0"} 0
pushlog_owner_partition_pending_messages{partition="1"} 2
pushlog_owner_partition_pending_messages{partition="2"} 0
pushlog_owner_partition_pending_messages{partition="3"} 0
# HELP pushlog_owner_partitions Partition numbers this node owns.
# TYPE pushlog_owner_partitions gauge
pushlog_owner_partitions 4
# HELP pushlog_owner_partitions_ready Owned partitions caught up (delivering and deciding).
# TYPE pushlog_owner_partitions_ready gauge
pushlog_owner_partitions_ready 4
# HELP pushlog_owner_pending_messages Unsettled messages held by this node's owner, over its partitions.
# TYPE pushlog_owner_pending_messages gauge
pushlog_owner_pending_messages 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pushlog_owner_partition_pending_messages", "pushlog_owner_partitions", "pushlog_owner_partitions_ready", "pushlog_owner_pending_messages"); err != nil {
		t.Fatal(err)
	}
	budget := `
# HELP pushlog_owner_payload_budget_bytes The bound of pushlog_owner_payload_bytes (past it payloads are re-read from Kafka when delivered); negative: none kept in memory.
# TYPE pushlog_owner_payload_budget_bytes gauge
pushlog_owner_payload_budget_bytes 2.68435456e+08
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(budget), "pushlog_owner_payload_budget_bytes"); err != nil {
		t.Fatal(err)
	}
}

// TestOldestPendingAge: the age of the oldest unsettled message follows
// the owner's clock and moves to the next message as the oldest settles;
// nothing pending is 0.
func TestOldestPendingAge(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	first := e.accept(uaid, ch)
	e.clock.Advance(30 * time.Second)
	second := e.accept(uaid, ch)
	e.clock.Advance(10 * time.Second)
	reg := prometheus.NewPedanticRegistry()
	r := e.start(func(c *Config) { c.Metrics = reg })
	e.waitReady(r, testPartitions)
	age := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "pushlog_owner_oldest_pending_age_seconds" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("pushlog_owner_oldest_pending_age_seconds not exposed")
		return 0
	}
	steps := []struct {
		name string
		do   func()
		want float64
	}{
		{"two pending: the first's age", func() {}, 40},
		{"the clock moves", func() { e.clock.Advance(5 * time.Second) }, 45},
		{"the oldest settles: the second's age", func() {
			e.deleteMsg(uaid, first)
			waitFor(t, "first settled", func() bool { return pendingOf(r.Owner, 1) == 1 })
		}, 15},
		{"nothing pending", func() {
			e.deleteMsg(uaid, second)
			waitFor(t, "second settled", func() bool { return pendingOf(r.Owner, 1) == 0 })
		}, 0},
	}
	for _, s := range steps {
		s.do()
		if got := age(); got != s.want {
			t.Fatalf("%s: age %v, want %v", s.name, got, s.want)
		}
	}
}

// TestFoldPositions: the owner reports the next offset it will fold per
// group topic and owned partition (for the connectors' head lag), past a
// settled message as well as a pending one.
func TestFoldPositions(t *testing.T) {
	e := newTestEnv(t)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	first := e.accept(uaid, ch)
	e.accept(uaid, ch)
	e.deleteMsg(uaid, first)
	r := e.start(nil)
	e.waitReady(r, testPartitions)
	waitFor(t, "folded", func() bool { return r.FoldPositions()[schema.TopicMessages][1] == 3 })
	pos := r.FoldPositions()
	for _, topic := range []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations} {
		if len(pos[topic]) != testPartitions {
			t.Fatalf("%s: positions of %d partitions, want %d", topic, len(pos[topic]), testPartitions)
		}
	}
	if got := pos[schema.TopicRegistrations][1]; got != 1 {
		t.Fatalf("registrations position %d, want 1", got)
	}
	if got := pos[schema.TopicMessages][0]; got != 0 {
		t.Fatalf("an empty partition's position %d, want 0", got)
	}
}
