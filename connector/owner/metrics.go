package owner

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ownerCollector reads Stats at scrape time: the fold pays nothing for
// metrics, a scrape takes each partition's lock once.
type ownerCollector struct {
	o                                                  *Owner
	pending, partPending, parts, ready, uaids, payload *prometheus.Desc
	oldest, budget, held, heldOverflows                *prometheus.Desc
}

func newOwnerCollector(o *Owner) *ownerCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pushlog_owner_"+name, help, labels, nil)
	}
	return &ownerCollector{
		o:             o,
		pending:       d("pending_messages", "Unsettled messages held by this node's owner, over its partitions."),
		partPending:   d("partition_pending_messages", "Unsettled messages per owned partition.", "partition"),
		parts:         d("partitions", "Partition numbers this node owns."),
		ready:         d("partitions_ready", "Owned partitions caught up (delivering and deciding)."),
		uaids:         d("uaids", "UAIDs with state in the owned partitions."),
		payload:       d("payload_bytes", "Payload bytes kept in memory."),
		budget:        d("payload_budget_bytes", "The bound of pushlog_owner_payload_bytes (past it payloads are re-read from Kafka when delivered); negative: none kept in memory."),
		oldest:        d("oldest_pending_age_seconds", "Age of the oldest unsettled message held by this node's owner (now minus its acceptance time); 0 when nothing is pending."),
		held:          d("delivered_held", "Delivered events waiting for their message's ack (at most 100 ms, 4,096 per partition) so that both are written in one produce request."),
		heldOverflows: d("delivered_held_overflows_total", "Times a partition held 4,096 Delivered events nobody acked and wrote them all at once."),
	}
}

func (c *ownerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.partPending, c.parts, c.ready, c.uaids, c.payload, c.budget, c.oldest, c.held, c.heldOverflows} {
		ch <- d
	}
}

func (c *ownerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.o.Stats()
	ready := 0
	for _, p := range st.Partitions {
		if p.Ready {
			ready++
		}
		ch <- prometheus.MustNewConstMetric(c.partPending, prometheus.GaugeValue, float64(p.Pending), strconv.Itoa(int(p.Partition)))
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(c.parts, prometheus.GaugeValue, float64(len(st.Partitions)))
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(ready))
	ch <- prometheus.MustNewConstMetric(c.uaids, prometheus.GaugeValue, float64(st.UAIDs))
	ch <- prometheus.MustNewConstMetric(c.payload, prometheus.GaugeValue, float64(st.PayloadBytes))
	ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, float64(c.o.cfg.PayloadBudget))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, c.oldestAge(st.OldestPendingMs))
	ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(st.HeldDelivered))
	ch <- prometheus.MustNewConstMetric(c.heldOverflows, prometheus.CounterValue, float64(c.o.env.heldOverflows.Load()))
}

// oldestAge is the age in seconds of a message accepted at ms (0: none),
// on the owner's clock; never negative (clocks of accepting nodes differ).
func (c *ownerCollector) oldestAge(ms int64) float64 {
	if ms <= 0 {
		return 0
	}
	return max(c.o.cfg.Now().Sub(time.UnixMilli(ms)).Seconds(), 0)
}

// register registers cs on reg; a nil reg (no metrics configured) registers nothing.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) (err error) {
	for _, c := range cs {
		err = errors.Join(err, prometheus.WrapRegistererWith(nil, reg).Register(c))
	}
	return err
}

// FoldPositions returns, per group topic and owned partition, the next
// offset this owner will fold: with the log's end offsets it gives the
// group's head lag (records not yet read), which, unlike the committed low
// watermark, does not count messages that are only waiting to settle.
func (o *Owner) FoldPositions() map[string]map[int32]int64 {
	out := make(map[string]map[int32]int64, numGroupTopics)
	for _, p := range o.Stats().Partitions {
		for ti, t := range o.groupTopics {
			if out[t] == nil {
				out[t] = make(map[int32]int64)
			}
			out[t][p.Partition] = p.Next[ti]
		}
	}
	return out
}
