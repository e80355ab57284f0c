package connector

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema/metrics"
)

// connMetrics are the connection node's series; a nil *connMetrics (no
// Registerer) records nothing. Counters of every valid code are resolved
// once, so the hot path is an array index and an atomic add.
type connMetrics struct {
	deliveries prometheus.Counter
	acks       [ackLast - ackDelivered + 1]prometheus.Counter // by code 100..102
	nacks      [nackLast - nackFirst + 2]prometheus.Counter   // [0] code 0, then 301..303
}

func newConnMetrics(reg prometheus.Registerer, s *Server) (*connMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metrics.Name("connector", "acks_total"),
		Help: "Acks received from user agents, by code (100 delivered, 101 decryption failed, 102 not delivered).",
	}, []string{"code"})
	nacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metrics.Name("connector", "nacks_total"),
		Help: "Nacks received from user agents, by code (301..303; 0 for any other).",
	}, []string{"code"})
	m := &connMetrics{deliveries: prometheus.NewCounter(prometheus.CounterOpts{
		Name: metrics.Name("connector", "deliveries_total"),
		Help: "Notifications queued to a user agent's socket.",
	})}
	for i := range m.acks {
		m.acks[i] = acks.WithLabelValues(strconv.Itoa(ackDelivered + i))
	}
	m.nacks[0] = nacks.WithLabelValues("0")
	for i := 1; i < len(m.nacks); i++ {
		m.nacks[i] = nacks.WithLabelValues(strconv.Itoa(nackFirst + i - 1))
	}
	conns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metrics.Name("connector", "connections"),
		Help: "Open WebSocket connections.",
	}, func() float64 { return float64(s.Connections()) })
	if err := metrics.Register(reg, m.deliveries, acks, nacks, conns); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *connMetrics) delivered() {
	if m != nil {
		m.deliveries.Inc()
	}
}

// acked counts an ack; code is already clamped to 100..102.
func (m *connMetrics) acked(code int32) {
	if m != nil && code >= ackDelivered && code <= ackLast {
		m.acks[code-ackDelivered].Inc()
	}
}

// nacked counts a nack; code is 0 or 301..303.
func (m *connMetrics) nacked(code int32) {
	if m == nil {
		return
	}
	if code >= nackFirst && code <= nackLast {
		m.nacks[code-nackFirst+1].Inc()
		return
	}
	m.nacks[0].Inc()
}
