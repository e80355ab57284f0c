package route

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushlog/pushlog/connector/link"
)

// TestMetrics: the router's counters are exported at scrape time.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	g := &rig{
		local:  &fakeLocal{owns: map[int32]bool{0: true}, sessions: map[string]link.Session{}},
		remote: &fakeRemote{errs: map[string]error{}},
		owners: &fakeOwners{owners: map[int32]string{0: self}},
	}
	r, err := New(Config{Partitions: testParts, Self: self, Local: g.local, Remote: g.remote, Owners: g.owners,
		RetryBackoff: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	r.unacked.Store(3)
	r.suppressed.Store(2)
	want := `
# HELP pushlog_router_sessions Connections of this node attached to an owner (local or remote).
# TYPE pushlog_router_sessions gauge
pushlog_router_sessions 0
# HELP pushlog_router_suppressed_total Deliveries dropped because the connection already had the message.
# TYPE pushlog_router_suppressed_total counter
pushlog_router_suppressed_total 2
# HELP pushlog_router_unacked Notifications delivered to this node's connections and not acked yet.
# TYPE pushlog_router_unacked gauge
pushlog_router_unacked 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
