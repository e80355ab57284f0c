package analytics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema/metrics"
)

// The projector's series are the projectors' shared ones (package
// projector), labelled projector="analytics": the help strings must stay
// equal to projector's, or a registry holding both refuses the second.
const (
	helpBatches = "Batches a projector completely stored (and committed)."
	helpRecords = "Records a projector polled."
	helpRows    = "Rows (analytics) or snapshots (channels) a projector wrote."
)

// collectors read the projector's counters at scrape time.
func (p *Projector) collectors() []prometheus.Collector {
	counters := []struct {
		name, help string
		v          func() int64
	}{
		{"batches_total", helpBatches, p.stats.batches.Load},
		{"records_total", helpRecords, p.stats.records.Load},
		{"rows_total", helpRows, p.stats.rows.Load},
		{"failures_total", "ClickHouse operations that failed (and were retried).", p.stats.failures.Load},
	}
	out := make([]prometheus.Collector, 0, len(counters)+1)
	for _, c := range counters {
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        metrics.Name("projector", c.name),
			Help:        c.help,
			ConstLabels: prometheus.Labels{"projector": "analytics"},
		}, func() float64 { return float64(c.v()) }))
	}
	return append(out, metrics.BreakerGauge("analytics", "clickhouse", p.cb.State))
}
