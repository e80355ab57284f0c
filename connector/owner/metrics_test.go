package owner

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
}
