package ingest

import (
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/pushlog/pushlog/schema/metrics"
)

// ingestMetrics are the push API's series. A nil *ingestMetrics (no
// Registerer configured) records nothing.
type ingestMetrics struct {
	requests *prometheus.CounterVec
	produce  prometheus.Histogram
	// byCode caches the counter of each (status, errno): the hot path
	// does a map read instead of hashing label values.
	mu     sync.RWMutex
	byCode map[[2]int]prometheus.Counter
}

func newIngestMetrics(reg prometheus.Registerer, breaker func() gobreaker.State) (*ingestMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &ingestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metrics.Name("ingest", "requests_total"),
			Help: "Push API requests (push and delete) by HTTP status and autopush errno (0 on success).",
		}, []string{"status", "errno"}),
		produce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metrics.Name("ingest", "produce_seconds"),
			Help:    "Time from handing an event to Kafka to its acks=all acknowledgement (or failure).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		byCode: make(map[[2]int]prometheus.Counter),
	}
	// The common answers exist from the start, so a dashboard sees 0, not nothing.
	for _, c := range [][2]int{{201, 0}, {204, 0}, {503, errnoUnavailable}} {
		m.counter(c[0], c[1])
	}
	if err := metrics.Register(reg, m.requests, m.produce, metrics.BreakerGauge("ingest", "kafka", breaker)); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *ingestMetrics) counter(status, errno int) prometheus.Counter {
	key := [2]int{status, errno}
	m.mu.RLock()
	c, ok := m.byCode[key]
	m.mu.RUnlock()
	if ok {
		return c
	}
	c = m.requests.WithLabelValues(strconv.Itoa(status), strconv.Itoa(errno))
	m.mu.Lock()
	m.byCode[key] = c
	m.mu.Unlock()
	return c
}

func (m *ingestMetrics) request(status, errno int) {
	if m != nil {
		m.counter(status, errno).Inc()
	}
}

func (m *ingestMetrics) observeProduce(d time.Duration) {
	if m != nil {
		m.produce.Observe(d.Seconds())
	}
}

// counted wraps a push API handler to count its answer by status and errno.
func (s *Server) counted(next echo.HandlerFunc) echo.HandlerFunc {
	if s.met == nil {
		return next
	}
	return func(c echo.Context) error {
		err := next(c)
		if err != nil {
			ae := toAPIError(err)
			s.met.request(ae.status, ae.errno)
			return err
		}
		s.met.request(c.Response().Status, 0)
		return nil
	}
}
