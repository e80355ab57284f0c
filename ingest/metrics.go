package ingest

import (
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// ingestMetrics are the push API's series. A nil *ingestMetrics (no
// Registerer configured) records nothing.
type ingestMetrics struct {
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec
	produce  prometheus.Histogram
	// byCode caches the counter of each (status, errno): the hot path
	// does a map read instead of hashing label values.
	mu     sync.RWMutex
	byCode map[[2]int]prometheus.Counter
}

// Reasons a push is refused for its size (pushlog_ingest_oversize_refusals_total).
const (
	reasonBody          = "body"
	reasonCryptoHeaders = "crypto_headers"
	reasonVAPIDToken    = "vapid_token"
	reasonVAPIDSub      = "vapid_sub"
	reasonEvent         = "event"
)

func newIngestMetrics(reg prometheus.Registerer, extra []prometheus.Collector) (*ingestMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &ingestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_ingest_requests_total",
			Help: "Push API requests (push and delete) by HTTP status and autopush errno (0 on success).",
		}, []string{"status", "errno"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_ingest_oversize_refusals_total",
			Help: "Pushes refused because a client-controlled size passed its limit, by reason: body, crypto_headers, vapid_token, vapid_sub, event.",
		}, []string{"reason"}),
		produce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushlog_ingest_produce_seconds",
			Help:    "Time from handing an event to Kafka to its acks=all acknowledgement (or failure).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		byCode: make(map[[2]int]prometheus.Counter),
	}
	// The common answers exist from the start, so a dashboard sees 0, not nothing.
	for _, c := range [][2]int{{201, 0}, {204, 0}, {503, errnoUnavailable}} {
		m.counter(c[0], c[1])
	}
	for _, r := range []string{reasonBody, reasonCryptoHeaders, reasonVAPIDToken, reasonVAPIDSub, reasonEvent} {
		m.refusals.WithLabelValues(r)
	}
	for _, c := range append([]prometheus.Collector{m.requests, m.refusals, m.produce}, extra...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// BreakerState is the state of the breaker around Kafka produces, for the
// process's pushlog_breaker_state{component="ingest",breaker="kafka"}
// (assembled where the registry is built, with every role's breakers).
func (s *Server) BreakerState() gobreaker.State { return s.breaker.State() }

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

// refuse counts a size refusal and returns its error.
func (s *Server) refuse(reason string, e *apiError) *apiError {
	if s.met != nil {
		s.met.refusals.WithLabelValues(reason).Inc()
	}
	return e
}

// gauges reports the VAPID cache and the retry index from their atomics.
func (s *Server) gauges() []prometheus.Collector {
	gauge := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushlog_ingest_" + name, Help: help},
			func() float64 { return float64(v()) })
	}
	counter := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushlog_ingest_" + name, Help: help},
			func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		gauge("vapid_cache_bytes", "Accounted bytes of the verified-JWT cache (bounded by --vapid-cache-bytes).", s.vapid.cacheBytes.Load),
		gauge("vapid_cache_entries", "Verified JWTs cached.", s.vapid.cacheEntries.Load),
		counter("vapid_cache_evictions_total", "Verified JWTs evicted from the cache to stay within its byte bound.", s.vapid.evictions.Load),
		counter("vapid_signature_checks_total", "VAPID JWTs checked in full (not answered from the cache; a token is cached the second time it is checked).", s.vapid.slowVerifies.Load),
		gauge("vapid_keys", "Parsed VAPID public keys cached (at most 1,024).", s.vapid.keys.entries),
		counter("vapid_key_evictions_total", "Parsed VAPID keys evicted, least recently used first.", s.vapid.keys.evictions.Load),
		gauge("vapid_key_table_bytes", "Heap of the signature-check tables of the keys that sign most (at most 8 MiB, 148 KiB each on amd64 and arm64).", s.vapid.keys.tableBytes),
		counter("vapid_key_table_evictions_total", "Signature-check tables dropped, least recently used first, to stay within their byte bound.", s.vapid.keys.tableEvictions.Load),
		gauge("dedup_entries", "Pushes remembered to recognise a retry (bounded by --dedup-entries).", s.dedup.entries.Load),
		gauge("dedup_bytes", "Estimated heap of the retry index (128 bytes per entry).", func() int64 { return s.dedup.entries.Load() * dedupEntryBytes }),
		counter("dedup_hits_total", "Retried pushes answered with the original message's Location instead of a second append.", s.dedup.hits.Load),
		counter("dedup_waits_total", "Retried pushes that found the original still being appended and waited for it.", s.dedup.waits.Load),
		counter("dedup_evictions_total", "Remembered pushes evicted (oldest first) to stay within --dedup-entries.", s.dedup.evictions.Load),
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
