package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pushlog/pushlog/cmd/internal/console"
	"github.com/pushlog/pushlog/cmd/ops"
	"github.com/pushlog/pushlog/schema"
)

// defaultConsoleAddr is --console-addr's default: loopback only, so the
// console needs no token by default.
const defaultConsoleAddr = "127.0.0.1:8084"

// consoleOff reports whether --console-addr turns the console off.
func (c *serveConfig) consoleOff() bool { return c.ConsoleAddr == "" || c.ConsoleAddr == "off" }

// startConsole runs the web console on its own listener. On the default
// address a port already taken (a second pushlog on this host) leaves the
// console off with a warning; an address given explicitly must work.
func startConsole(g *runGroup, cfg *serveConfig, names schema.Names, adm ops.Admin, met *serveMetrics, logger *slog.Logger) error {
	if cfg.consoleOff() {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.ConsoleAddr)
	if err != nil {
		if cfg.ConsoleAddr == defaultConsoleAddr {
			logger.Warn("console off: its default address is taken (another pushlog on this host?); set --console-addr", "addr", cfg.ConsoleAddr, "err", err)
			return nil
		}
		return fmt.Errorf("--console-addr: %w", err)
	}
	c, err := console.New(console.Config{
		Token:    cfg.ConsoleToken,
		Gatherer: met.reg,
		Metrics:  met.reg,
		Status: func(ctx context.Context) (st *ops.Status, err error) {
			err = adm.Do(ctx, func(adm *kadm.Client) error {
				st, err = ops.GetStatus(ctx, adm, ops.StatusConfig{Names: names, IncludeAnalytics: cfg.ClickHouseAddr != ""})
				return err
			})
			return st, err
		},
		ClickHouseAddr: cfg.ClickHouseAddr,
		ClickHouseDB:   cfg.ClickHouseDB,
		Version:        version,
		Logger:         logger.With("role", "console"),
	})
	if err != nil {
		_ = ln.Close()
		return err
	}
	// Read-only and for people: its failure must not stop the service.
	g.startNonFatal("console", func(ctx context.Context) error { return c.Run(ctx, ln) })
	return nil
}
