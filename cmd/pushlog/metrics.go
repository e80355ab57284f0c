package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushlog/pushlog/cmd/internal/health"
	"github.com/pushlog/pushlog/cmd/ops"
	"github.com/pushlog/pushlog/schema"
)

// serveMetrics is one process's registry (no global default registry):
// every role registers its series on it and every listener serves it.
type serveMetrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	lag     *ops.LagMonitor // set by startLagMonitor
}

func newServeMetrics(logger *slog.Logger) *serveMetrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &serveMetrics{
		reg: reg,
		handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
			ErrorHandling: promhttp.ContinueOnError, // one failing collector must not hide the rest
		}),
	}
}

// startLagMonitor computes the consumer groups' lag every interval in this
// process (pushlog_consumer_lag, pushlog_projector_lag). The analytics group
// is watched only where analytics is configured.
func (m *serveMetrics) startLagMonitor(g *runGroup, cfg *serveConfig, names schema.Names, adm ops.Admin, logger *slog.Logger) error {
	var groups []ops.Group
	for _, gr := range ops.Groups(names) {
		if gr.Role == "analytics" && cfg.ClickHouseAddr == "" {
			continue
		}
		groups = append(groups, gr)
	}
	mon := ops.NewLagMonitor(adm, groups, cfg.LagInterval, logger)
	if err := m.reg.Register(mon); err != nil {
		return err
	}
	m.lag = mon
	g.start("lag-monitor", mon.Run)
	return nil
}

// serveMetricsAddr runs the --metrics-addr listener: /metrics and the
// Dockerflow endpoints (healthH), for processes without an HTTP listener
// of their own (projector-only).
func serveMetricsAddr(ctx context.Context, ln net.Listener, h, healthH http.Handler, logger *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	if healthH != nil {
		for _, p := range health.Paths {
			mux.Handle(p, healthH)
		}
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	logger.Info("metrics listener", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
