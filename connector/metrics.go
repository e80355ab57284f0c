package connector

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// connMetrics are the connection node's series; a nil *connMetrics (no
// Registerer) records nothing. Counters of every valid code are resolved
// once, so the hot path is an array index and an atomic add.
type connMetrics struct {
	deliveries prometheus.Counter
	acks       [ackLast - ackDelivered + 1]prometheus.Counter // by code 100..102
	nacks      [nackLast - nackFirst + 2]prometheus.Counter   // [0] code 0, then 301..303
	refusals   map[string]prometheus.Counter                  // by limit (allLimits); read-only after New
	unknownUnr prometheus.Counter
	hellos     [numHelloKinds]prometheus.Counter
	toSocket   prometheus.Histogram
	keptPoll   prometheus.Counter
}

// pushToSocketBuckets span a local pipeline's milliseconds (finely: its
// p50 is 1–3 ms) to a stalled one's half minute (an owner replaying after
// a restart). One series, so twenty buckets cost little.
var pushToSocketBuckets = []float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newConnMetrics(reg prometheus.Registerer, s *Server) (*connMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_connector_acks_total",
		Help: "Acks received from user agents, by code (100 delivered, 101 decryption failed, 102 not delivered).",
	}, []string{"code"})
	nacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_connector_nacks_total",
		Help: "Nacks received from user agents, by code (301..303; 0 for any other).",
	}, []string{"code"})
	m := &connMetrics{deliveries: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pushlog_connector_deliveries_total",
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
		Name: "pushlog_connector_connections",
		Help: "Open WebSocket connections.",
	}, func() float64 { return float64(s.Connections()) })
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_connector_client_refusals_total",
		Help: "Client requests refused by a per-client bound, by limit (channels, registration_rate, message_rate, broadcasts, ack_updates, connection_rate_ip; ip_table_full counts connections admitted untracked).",
	}, []string{"limit"})
	m.refusals = make(map[string]prometheus.Counter, len(allLimits))
	for _, l := range allLimits {
		m.refusals[l] = refusals.WithLabelValues(l)
	}
	m.unknownUnr = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pushlog_connector_unknown_unregisters_total",
		Help: "Unregisters of channels the UAID does not have: answered 200, nothing written.",
	})
	hellos := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushlog_connector_hellos_total",
		Help: "Hellos answered, by uaid: known (kept), new (none or malformed given), reset (unknown given: reset and replaced).",
	}, []string{"uaid"})
	for k := range m.hellos {
		m.hellos[k] = hellos.WithLabelValues(helloKindNames[k])
	}
	m.toSocket = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pushlog_connector_push_to_socket_seconds",
		Help:    "From ingest accepting a push to its notification written to the user agent's socket, for user agents connected when the push was accepted (a message that waited for a connection is not observed). Accept times have millisecond resolution and come from ingest's clock.",
		Buckets: pushToSocketBuckets,
	})
	m.keptPoll = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pushlog_connector_sockets_kept_polled_total",
		Help: "Upgraded TCP sockets left in the Go runtime's poller because their descriptor could not be duplicated (open-file limit): each costs about 0.8 KB more while it stays open.",
	})
	for _, c := range []prometheus.Collector{m.deliveries, acks, nacks, conns, refusals, m.unknownUnr, hellos, m.toSocket, m.keptPoll} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Hello kinds (the hellos metric's label).
const (
	helloKnown = iota
	helloNew
	helloReset
	numHelloKinds
)

var helloKindNames = [numHelloKinds]string{"known", "new", "reset"}

// refused counts a refusal by limit (one of allLimits).
func (m *connMetrics) refused(limit string) {
	if m != nil {
		m.refusals[limit].Inc()
	}
}

func (m *connMetrics) keptPolled() {
	if m != nil {
		m.keptPoll.Inc()
	}
}

func (m *connMetrics) unknownUnregister() {
	if m != nil {
		m.unknownUnr.Inc()
	}
}

func (m *connMetrics) hello(kind int) {
	if m != nil {
		m.hellos[kind].Inc()
	}
}

func (m *connMetrics) delivered() {
	if m != nil {
		m.deliveries.Inc()
	}
}

// pushToSocket observes a notification's push→socket latency; a negative
// one (ingest's clock ahead of this node's) counts as zero.
func (m *connMetrics) pushToSocket(ns int64) {
	if m != nil {
		m.toSocket.Observe(float64(max(ns, 0)) / 1e9)
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
