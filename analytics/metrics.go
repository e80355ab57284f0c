package analytics

import (
	"errors"
	"sync/atomic"
	"time"

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
	label := prometheus.Labels{"projector": "analytics"}
	out = append(out,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "pushlog_projector_delay_seconds",
			Help:        "Event-time delay: now minus the time of the oldest record polled but not yet stored in ClickHouse; 0 when everything polled is stored.",
			ConstLabels: label,
		}, func() float64 { return p.delay.delay(time.Now()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "pushlog_projector_newest_stored_event_timestamp_seconds",
			Help:        "Time (Unix seconds) of the newest record stored in ClickHouse; 0 before the first batch.",
			ConstLabels: label,
		}, p.delay.newestStored),
	)
	return out
}

// eventDelay follows the record times of the batch in progress, for
// pushlog_projector_delay_seconds: unlike a lag in records it reads in
// seconds, does not grow while nothing is produced, and grows while a
// batch cannot be stored (ClickHouse down: the projector holds the batch).
// The sealed batch being stored (the flight) counts as unstored too.
// Written under the projector's lock (the flight's outcome by the
// goroutine storing it), read at scrape time.
type eventDelay struct {
	oldest, newest             atomic.Int64 // record times (Unix ms) of the unstored batch; 0 none
	flightOldest, flightNewest atomic.Int64 // the same of the flight; 0 none
	stored                     atomic.Int64 // newest record time stored (Unix ms); 0 none
}

// added notes a record of the batch in progress.
func (d *eventDelay) added(ms int64) {
	if ms <= 0 {
		return
	}
	if o := d.oldest.Load(); o == 0 || ms < o {
		d.oldest.Store(ms)
	}
	if ms > d.newest.Load() {
		d.newest.Store(ms)
	}
}

// flushed: the batch is stored.
func (d *eventDelay) flushed() {
	d.storedUpTo(d.newest.Load())
	d.oldest.Store(0)
	d.newest.Store(0)
}

// sealed: the batch became the flight (there was none).
func (d *eventDelay) sealed() {
	d.flightOldest.Store(d.oldest.Swap(0))
	d.flightNewest.Store(d.newest.Swap(0))
}

// flightStored: the flight is stored.
func (d *eventDelay) flightStored() {
	d.storedUpTo(d.flightNewest.Load())
	d.flightOldest.Store(0)
	d.flightNewest.Store(0)
}

// flightFailed: the flight's rows went back to the batch.
func (d *eventDelay) flightFailed() {
	d.added(d.flightOldest.Swap(0))
	d.added(d.flightNewest.Swap(0))
}

func (d *eventDelay) storedUpTo(n int64) {
	if n > d.stored.Load() {
		d.stored.Store(n)
	}
}

// dropped: the batch was given up (a rewind reads it again).
func (d *eventDelay) dropped() {
	d.oldest.Store(0)
	d.newest.Store(0)
	d.flightOldest.Store(0)
	d.flightNewest.Store(0)
}

func (d *eventDelay) delay(now time.Time) float64 {
	o := d.oldest.Load()
	if f := d.flightOldest.Load(); f != 0 && (o == 0 || f < o) {
		o = f
	}
	if o == 0 {
		return 0
	}
	return max(now.Sub(time.UnixMilli(o)).Seconds(), 0)
}

func (d *eventDelay) newestStored() float64 { return float64(d.stored.Load()) / 1000 }

// BreakerState is the state of the ClickHouse breaker, for the process's
// pushlog_breaker_state{component="analytics",breaker="clickhouse"}
// (assembled where the registry is built, with every role's breakers).
func (p *Projector) BreakerState() gobreaker.State { return p.cb.State() }

// Failing reports whether the last ClickHouse operation failed (the
// projector is waiting for ClickHouse); for the process's heartbeat.
func (p *Projector) Failing() bool { return p.failing.Load() }

// register registers cs on reg; a nil reg (no metrics configured) registers nothing.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) (err error) {
	for _, c := range cs {
		err = errors.Join(err, prometheus.WrapRegistererWith(nil, reg).Register(c))
	}
	return err
}
