package bridge

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the bridge send series, shared by every app's Sender.
type Metrics struct {
	sends   *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// NewMetrics registers the bridge series on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_bridge_sends_total",
			Help: "Sends to a mobile bridge (FCM, APNs) by service, app, outcome (delivered, gone, retry, failed) and the service's reason (bounded identifiers, else http_<status>).",
		}, []string{"service", "app", "outcome", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushlog_bridge_send_seconds",
			Help:    "Time of one send to a mobile bridge, token refresh included, by service and app.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service", "app"}),
	}
	if reg != nil {
		reg.MustRegister(m.sends, m.latency)
	}
	return m
}

// Instrument wraps s so every send is counted and timed under service
// ("fcm", "apns") and app (an operator-configured app id: bounded).
func (m *Metrics) Instrument(service, app string, s Sender) Sender {
	return &instrumented{Sender: s, m: m, service: service, app: app,
		latency: m.latency.WithLabelValues(service, app)}
}

type instrumented struct {
	Sender
	m            *Metrics
	service, app string
	latency      prometheus.Observer
}

func (i *instrumented) Send(ctx context.Context, token string, msg Message) Result {
	start := time.Now()
	r := i.Sender.Send(ctx, token, msg)
	i.latency.Observe(time.Since(start).Seconds())
	i.m.sends.WithLabelValues(i.service, i.app, r.Outcome.String(), r.Reason).Inc()
	return r
}
