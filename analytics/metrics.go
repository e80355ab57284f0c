package analytics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
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
	out := make([]prometheus.Collector, 0, len(counters))
	for _, c := range counters {
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "pushlog_projector_" + c.name,
			Help:        c.help,
			ConstLabels: prometheus.Labels{"projector": "analytics"},
		}, func() float64 { return float64(c.v()) }))
	}
	return out
}

// BreakerState is the state of the ClickHouse breaker, for the process's
// pushlog_breaker_state{component="analytics",breaker="clickhouse"}
// (assembled where the registry is built, with every role's breakers).
func (p *Projector) BreakerState() gobreaker.State { return p.cb.State() }

// register registers cs on reg; a nil reg (no metrics configured) registers nothing.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) (err error) {
	for _, c := range cs {
		err = errors.Join(err, prometheus.WrapRegistererWith(nil, reg).Register(c))
	}
	return err
}
