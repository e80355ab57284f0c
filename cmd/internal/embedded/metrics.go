package embedded

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/cmd/internal/metrics"
)

// trimCollector reports the trimmer's figures at scrape time.
type trimCollector struct {
	t                                           *Trimmer
	trimmed, retained, pinned, runs, disk, ends *prometheus.Desc
}

func (t *Trimmer) collectors() []prometheus.Collector {
	return []prometheus.Collector{&trimCollector{
		t:        t,
		trimmed:  prometheus.NewDesc(metrics.Name("embedded", "trimmed_offsets_total"), "Offsets of the embedded log deleted by the trimmer (settled records below every group's commit and the replay window).", []string{"topic"}, nil),
		retained: prometheus.NewDesc(metrics.Name("embedded", "retained_offsets"), "Offsets the embedded log keeps per topic after the last trim round.", []string{"topic"}, nil),
		pinned:   prometheus.NewDesc(metrics.Name("embedded", "trim_pinned_partitions"), "Partitions by what held their trim point at the last round: window, group (an unsettled or unconsumed record), end (nothing to trim), uncommitted (a required group has no commit yet).", []string{"topic", "by"}, nil),
		runs:     prometheus.NewDesc(metrics.Name("embedded", "trim_runs_total"), "Trim rounds by result.", []string{"result"}, nil),
		disk:     prometheus.NewDesc(metrics.Name("embedded", "disk_bytes"), "Bytes of the embedded broker's files on disk.", nil, nil),
		ends:     prometheus.NewDesc(metrics.Name("embedded", "end_offsets_recordings_total"), "Recordings of the embedded log's end offsets (evidence that verification uses after a crash) by result: written, unchanged (nothing moved: no write), error.", []string{"result"}, nil),
	}}
}

func (c *trimCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.trimmed
	ch <- c.retained
	ch <- c.pinned
	ch <- c.runs
	ch <- c.disk
	ch <- c.ends
}

func (c *trimCollector) Collect(ch chan<- prometheus.Metric) {
	c.t.trimmed.Range(func(k, v any) bool {
		ch <- prometheus.MustNewConstMetric(c.trimmed, prometheus.CounterValue, float64(v.(*atomic.Int64).Load()), k.(string))
		return true
	})
	for result, n := range c.t.runs {
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.CounterValue, float64(n.Load()), result)
	}
	for result, n := range c.t.endsWrites {
		ch <- prometheus.MustNewConstMetric(c.ends, prometheus.CounterValue, float64(n.Load()), result)
	}
	ch <- prometheus.MustNewConstMetric(c.disk, prometheus.GaugeValue, float64(c.t.diskSize.Load()))
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	for topic, n := range c.t.retained {
		ch <- prometheus.MustNewConstMetric(c.retained, prometheus.GaugeValue, float64(n), topic)
	}
	for k, n := range c.t.pinned {
		ch <- prometheus.MustNewConstMetric(c.pinned, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
