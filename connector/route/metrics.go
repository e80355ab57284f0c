package route

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema/metrics"
)

// collectors are the router's series, read from its counters at scrape time.
func (r *Router) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metrics.Name("router", "sessions"),
			Help: "Connections of this node attached to an owner (local or remote).",
		}, func() float64 { return float64(r.Stats().Sessions) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metrics.Name("router", "unacked"),
			Help: "Notifications delivered to this node's connections and not acked yet.",
		}, func() float64 { return float64(r.unacked.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: metrics.Name("router", "suppressed_total"),
			Help: "Deliveries dropped because the connection already had the message.",
		}, func() float64 { return float64(r.suppressed.Load()) }),
	}
}
