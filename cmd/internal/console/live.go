package console

import (
	"context"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The series the live charts show, read from this process's registry.
// A role that does not run here has no series: its chart stays empty.
var (
	liveCounters = []liveCounter{
		{chart: "pushes", metric: "pushlog_ingest_requests_total", by: []string{"status", "errno"}},
		{chart: "deliveries", label: "deliveries", metric: "pushlog_connector_deliveries_total"},
		{chart: "deliveries", label: "acks", metric: "pushlog_connector_acks_total"},
		{chart: "deliveries", label: "nacks", metric: "pushlog_connector_nacks_total"},
	}
	liveGauges = []liveSeries{
		{label: "connections", metric: "pushlog_connector_connections"},
		{label: "pending", metric: "pushlog_owner_pending_messages"},
	}
	// liveHistograms are latency histograms shown as p50/p95/p99 over each
	// sampling interval. The first name present is used.
	liveHistograms = []liveHistogram{
		{label: "produce", metrics: []string{"pushlog_ingest_produce_seconds"}},
		{label: "push→socket", metrics: []string{"pushlog_connector_push_to_socket_seconds", "pushlog_connector_delivery_seconds"}},
	}
	liveQuantiles = []float64{0.5, 0.95, 0.99}
	// processGauges are figures of this process the overview shows (how
	// far behind it is), by the value of one label ("" for none).
	processGauges = []labeledGauge{
		{name: "head_lag", metric: "pushlog_consumer_group_head_lag", label: "group"},
		{name: "projector_delay", metric: "pushlog_projector_delay_seconds", label: "projector"},
		{name: "oldest_pending_age", metric: "pushlog_owner_oldest_pending_age_seconds"},
	}
)

type labeledGauge struct{ name, metric, label string }

type liveCounter struct {
	chart, label, metric string
	by                   []string // labels splitting the series ("status/errno")
}

type liveSeries struct{ label, metric string }

type liveHistogram struct {
	label   string
	metrics []string
}

// sample is one reading of the registry.
type sample struct {
	t        time.Time
	counters map[string]map[string]float64 // chart -> series -> total
	gauges   map[string]float64
	hists    map[string]histSnap
	process  map[string]map[string]float64 // processGauges: name -> label value -> value
}

// histSnap is a histogram's cumulative bucket counts.
type histSnap struct {
	upper []float64
	cum   []uint64
	count uint64
}

// sampler keeps the last history samples of the registry.
type sampler struct {
	g       prometheus.Gatherer
	history int

	mu      sync.Mutex
	samples []sample // oldest first, at most history
}

func newSampler(g prometheus.Gatherer, history int) *sampler {
	return &sampler{g: g, history: history}
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sampleOnce(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) sampleOnce(now time.Time) {
	fams, _ := s.g.Gather() // a failing collector still leaves the others
	sm := readSample(now, fams)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, sm)
	if over := len(s.samples) - s.history; over > 0 {
		s.samples = append(s.samples[:0], s.samples[over:]...)
	}
}

// last is the newest sample (zero before the first).
func (s *sampler) last() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return sample{}
	}
	return s.samples[len(s.samples)-1]
}

func (s *sampler) snapshot() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}

func readSample(now time.Time, fams []*dto.MetricFamily) sample {
	byName := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	sm := sample{t: now, counters: map[string]map[string]float64{}, gauges: map[string]float64{}, hists: map[string]histSnap{}, process: map[string]map[string]float64{}}
	for _, g := range processGauges {
		f := byName[g.metric]
		if f == nil {
			continue
		}
		vals := map[string]float64{}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == g.label {
					key = l.GetValue()
				}
			}
			vals[key] = max(vals[key], metricValue(m))
		}
		sm.process[g.name] = vals
	}
	for _, c := range liveCounters {
		f := byName[c.metric]
		if f == nil {
			continue
		}
		series := sm.counters[c.chart]
		if series == nil {
			series = map[string]float64{}
			sm.counters[c.chart] = series
		}
		for _, m := range f.GetMetric() {
			series[seriesLabel(c, m)] += metricValue(m)
		}
	}
	for _, g := range liveGauges {
		if f := byName[g.metric]; f != nil {
			var v float64
			for _, m := range f.GetMetric() {
				v += metricValue(m)
			}
			sm.gauges[g.label] = v
		}
	}
	for _, h := range liveHistograms {
		for _, name := range h.metrics {
			if f := byName[name]; f != nil {
				sm.hists[h.label] = mergeHistograms(f.GetMetric())
				break
			}
		}
	}
	return sm
}

func seriesLabel(c liveCounter, m *dto.Metric) string {
	if len(c.by) == 0 {
		return c.label
	}
	vals := make([]string, len(c.by))
	for i, name := range c.by {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				vals[i] = l.GetValue()
			}
		}
	}
	return strings.Join(vals, "/")
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// mergeHistograms adds the histograms of every label set (same buckets).
func mergeHistograms(ms []*dto.Metric) histSnap {
	var h histSnap
	for _, m := range ms {
		hg := m.GetHistogram()
		if hg == nil {
			continue
		}
		if h.upper == nil {
			for _, b := range hg.GetBucket() {
				h.upper = append(h.upper, b.GetUpperBound())
			}
			h.cum = make([]uint64, len(h.upper))
		}
		for i, b := range hg.GetBucket() {
			if i < len(h.cum) {
				h.cum[i] += b.GetCumulativeCount()
			}
		}
		h.count += hg.GetSampleCount()
	}
	return h
}

// quantile estimates the q-quantile of the observations between two
// snapshots as Prometheus' histogram_quantile does (linear within the
// bucket); ok is false without observations.
func quantile(q float64, prev, cur histSnap) (float64, bool) {
	if len(cur.upper) == 0 || len(prev.cum) != len(cur.cum) || cur.count <= prev.count {
		return 0, false
	}
	total := float64(cur.count - prev.count)
	rank := q * total
	lower, below := 0.0, 0.0
	for i, up := range cur.upper {
		in := float64(cur.cum[i]-prev.cum[i]) - below
		if below+in >= rank && in > 0 {
			if math.IsInf(up, 1) {
				return lower, true // no upper bound to interpolate to
			}
			return lower + (up-lower)*(rank-below)/in, true
		}
		lower, below = up, below+in
	}
	// In the implicit +Inf bucket: the largest finite bound is the answer.
	return lower, true
}

// liveAnswer is GET /api/live: per chart, series aligned on T (unix
// seconds), rates per second over each sampling interval; null where a
// series has no value. Totals are the current counter values.
type liveAnswer struct {
	Interval float64               `json:"interval_seconds"`
	T        []float64             `json:"t"`
	Charts   map[string]liveChart  `json:"charts"`
	Totals   map[string]liveTotals `json:"totals"`
	Gauges   map[string]float64    `json:"gauges"`
}

type liveChart struct {
	Unit   string       `json:"unit"`
	Series []liveValues `json:"series"`
}

type liveValues struct {
	Label  string     `json:"label"`
	Values []*float64 `json:"values"`
}

type liveTotals map[string]float64

func (c *Console) serveLive(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, buildLive(c.sampler.snapshot(), c.cfg.SampleInterval))
}

func buildLive(ss []sample, interval time.Duration) liveAnswer {
	ans := liveAnswer{Interval: interval.Seconds(), T: []float64{}, Charts: map[string]liveChart{}, Totals: map[string]liveTotals{}, Gauges: map[string]float64{}}
	if len(ss) == 0 {
		return ans
	}
	last := ss[len(ss)-1]
	for chart, series := range last.counters {
		ans.Totals[chart] = liveTotals(series)
	}
	ans.Gauges = last.gauges
	n := len(ss) - 1
	for i := 1; i < len(ss); i++ {
		ans.T = append(ans.T, float64(ss[i].t.UnixMilli())/1000)
	}
	// Counters: rates per second, one series per label seen anywhere.
	for _, chart := range []string{"pushes", "deliveries"} {
		labels := map[string]bool{}
		for _, s := range ss {
			for l := range s.counters[chart] {
				labels[l] = true
			}
		}
		lc := liveChart{Unit: "/s", Series: []liveValues{}}
		for _, l := range sortedKeys(labels) {
			vals := make([]*float64, n)
			for i := 1; i < len(ss); i++ {
				prev, okp := ss[i-1].counters[chart][l]
				cur, okc := ss[i].counters[chart][l]
				dt := ss[i].t.Sub(ss[i-1].t).Seconds()
				if !okc || dt <= 0 {
					continue
				}
				if !okp {
					prev = 0 // the series appeared: it counted from zero
				}
				if cur < prev {
					continue // a reset
				}
				v := (cur - prev) / dt
				vals[i-1] = &v
			}
			lc.Series = append(lc.Series, liveValues{Label: l, Values: vals})
		}
		ans.Charts[chart] = lc
	}
	lat := liveChart{Unit: "ms", Series: []liveValues{}}
	for _, h := range liveHistograms {
		for _, q := range liveQuantiles {
			vals := make([]*float64, n)
			present := false
			for i := 1; i < len(ss); i++ {
				prev, okp := ss[i-1].hists[h.label]
				cur, okc := ss[i].hists[h.label]
				if !okc {
					continue
				}
				present = true
				if !okp {
					prev = histSnap{upper: cur.upper, cum: make([]uint64, len(cur.cum))}
				}
				if v, ok := quantile(q, prev, cur); ok && !math.IsInf(v, 0) {
					ms := v * 1000
					vals[i-1] = &ms
				}
			}
			if present {
				lat.Series = append(lat.Series, liveValues{Label: h.label + " p" + quantileName(q), Values: vals})
			}
		}
	}
	ans.Charts["latency"] = lat
	gauges := liveChart{Unit: "", Series: []liveValues{}}
	for _, g := range liveGauges {
		vals := make([]*float64, n)
		seen := false
		for i := 1; i < len(ss); i++ {
			if v, ok := ss[i].gauges[g.label]; ok {
				vals[i-1], seen = &v, true
			}
		}
		if seen {
			gauges.Series = append(gauges.Series, liveValues{Label: g.label, Values: vals})
		}
	}
	ans.Charts["gauges"] = gauges
	return ans
}

func quantileName(q float64) string {
	return strconv.FormatFloat(q*100, 'f', -1, 64)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
