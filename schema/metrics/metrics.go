// Package metrics holds what pushlog's packages share for Prometheus: the
// breaker-state series every breaker reports under one name, and nil-safe
// registration (a nil Registerer means "no metrics").
package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Namespace prefixes every series.
const Namespace = "pushlog"

// BreakerStateName is the one series of every circuit breaker, labelled
// by breaker: 0 closed, 1 half-open, 2 open.
const BreakerStateName = Namespace + "_breaker_state"

// breakerHelp must be identical wherever the series is described: the
// registry refuses one name with two help texts.
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

// Breaker is one breaker's name and state.
type Breaker struct {
	Name  string
	State gobreaker.State
}

// breakers reports the breakers of one component at scrape time. Every
// component's collector has the const label component and the variable
// label breaker, so all of them can share one series name on a registry.
type breakers struct {
	desc *prometheus.Desc
	list func() []Breaker
}

// Breakers reports the breakers of component (its set may change at run
// time, like one per node-link peer) as pushlog_breaker_state{component,breaker}.
func Breakers(component string, list func() []Breaker) prometheus.Collector {
	return &breakers{
		desc: prometheus.NewDesc(BreakerStateName, breakerHelp, []string{"breaker"}, prometheus.Labels{"component": component}),
		list: list,
	}
}

// BreakerGauge reports one breaker of component.
func BreakerGauge(component, name string, state func() gobreaker.State) prometheus.Collector {
	return Breakers(component, func() []Breaker { return []Breaker{{Name: name, State: state()}} })
}

func (b *breakers) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *breakers) Collect(ch chan<- prometheus.Metric) {
	for _, br := range b.list() {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, BreakerValue(br.State), br.Name)
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
