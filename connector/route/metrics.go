package route

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// collectors are the router's series, read from its counters at scrape time.
func (r *Router) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushlog_router_sessions",
			Help: "Connections of this node attached to an owner (local or remote).",
		}, func() float64 { return float64(r.Stats().Sessions) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushlog_router_unacked",
			Help: "Notifications delivered to this node's connections and not acked yet.",
		}, func() float64 { return float64(r.unacked.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "pushlog_router_suppressed_total",
			Help: "Deliveries dropped because the connection already had the message.",
		}, func() float64 { return float64(r.suppressed.Load()) }),
	}
}

// register registers cs on reg; a nil reg (no metrics configured) registers nothing.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) (err error) {
	for _, c := range cs {
		err = errors.Join(err, prometheus.WrapRegistererWith(nil, reg).Register(c))
	}
	return err
}
