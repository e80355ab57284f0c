// Package metrics is what pushlog's binaries share for Prometheus where a
// process's registry is built: the breaker-state series every role's
// breakers report under one name, and nil-safe registration (a nil
// Registerer means "no metrics"). It lives under cmd, not in the contract
// (schema), because only the binaries assemble registries: roles register
// their own series with prometheus directly and expose their breakers'
// states, and this package turns those states into one series.
package metrics

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Namespace prefixes every series.
const Namespace = "pushlog"

// BreakerStateName is the one series of every circuit breaker, labelled
// by component and breaker: 0 closed, 1 half-open, 2 open.
const BreakerStateName = Namespace + "_breaker_state"

// breakerHelp must be identical wherever the series is described: the
// registry refuses one name with two help texts. That is why every
// component's breakers are reported by this one collector type.
const breakerHelp = "Circuit breaker state by breaker: 0 closed, 1 half-open, 2 open."

// BreakerValue maps a gobreaker state to the gauge value.
func BreakerValue(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}

// breakers reports the breakers of one component at scrape time. Every
// component's collector has the const label component and the variable
// label breaker, so all of them can share one series name on a registry.
type breakers struct {
	desc  *prometheus.Desc
	state func() map[string]gobreaker.State
}

// Breakers reports the breakers of component, by name (its set may change
// at run time, like one per node-link peer), as
// pushlog_breaker_state{component,breaker}.
func Breakers(component string, state func() map[string]gobreaker.State) prometheus.Collector {
	return &breakers{
		desc:  prometheus.NewDesc(BreakerStateName, breakerHelp, []string{"breaker"}, prometheus.Labels{"component": component}),
		state: state,
	}
}

// BreakerGauge reports the one breaker name of component.
func BreakerGauge(component, name string, state func() gobreaker.State) prometheus.Collector {
	return Breakers(component, func() map[string]gobreaker.State { return map[string]gobreaker.State{name: state()} })
}

func (b *breakers) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *breakers) Collect(ch chan<- prometheus.Metric) {
	states := b.state()
	for _, name := range slices.Sorted(maps.Keys(states)) {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, BreakerValue(states[name]), name)
	}
}

// Register registers every collector on reg; a nil reg registers nothing.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}

// Name returns the full name of a pushlog series.
func Name(subsystem, name string) string {
	return prometheus.BuildFQName(Namespace, subsystem, name)
}
