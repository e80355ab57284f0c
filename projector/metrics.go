package projector

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// The projectors' series share names, labelled projector="channels" or
// "analytics" (package analytics registers its own, with the same help
// strings); their lag is pushlog_projector_lag, computed by the lag
// monitor from the groups' committed offsets (package ops).

func projectorCounter(name, help, projector string, v func() int64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "pushlog_projector_" + name,
		Help:        help,
		ConstLabels: prometheus.Labels{"projector": projector},
	}, func() float64 { return float64(v()) })
}

const (
	helpBatches = "Batches a projector completely stored (and committed)."
	helpRecords = "Records a projector polled."
	helpRows    = "Rows (analytics) or snapshots (channels) a projector wrote."
)

// register registers cs on reg; a nil reg (no metrics configured) registers nothing.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) (err error) {
	for _, c := range cs {
		err = errors.Join(err, prometheus.WrapRegistererWith(nil, reg).Register(c))
	}
	return err
}

// channelCounters count what the channel projector did.
type channelCounters struct {
	batches, records, snapshots atomic.Int64
}

// ChannelStats counts what the channel projector did.
type ChannelStats struct {
	Batches   int64 // polls whose snapshots are durable and committed
	Records   int64 // registrations records folded
	Snapshots int64 // channel-state snapshots written
}

// Stats returns the channel projector's counters.
func (p *ChannelProjector) Stats() ChannelStats {
	return ChannelStats{Batches: p.stats.batches.Load(), Records: p.stats.records.Load(), Snapshots: p.stats.snapshots.Load()}
}

func (p *ChannelProjector) collectors() []prometheus.Collector {
	const name = "channels"
	return []prometheus.Collector{
		projectorCounter("batches_total", helpBatches, name, p.stats.batches.Load),
		projectorCounter("records_total", helpRecords, name, p.stats.records.Load),
		projectorCounter("rows_total", helpRows, name, p.stats.snapshots.Load),
	}
}

func (g *GoneSet) collectors() []prometheus.Collector {
	return []prometheus.Collector{prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushlog_ingest_gone_entries",
		Help: "UAIDs with gone facts (reset, or unregistered channels) in ingest's gone set.",
	}, func() float64 { return float64(g.Len()) })}
}
