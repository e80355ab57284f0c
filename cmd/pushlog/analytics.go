package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
)

type clickhouseFlags struct {
	Addr     string `required:"" env:"CLICKHOUSE_ADDR" help:"ClickHouse native address (host:port)."`
	Database string `default:"pushlog" env:"PUSHLOG_CLICKHOUSE_DB" help:"ClickHouse database."`
}

type analyticsCmd struct {
	Migrate analyticsMigrateCmd `cmd:"" help:"Apply the ClickHouse migrations (safe to run again)."`
	Report  analyticsReportCmd  `cmd:"" help:"Print the dashboard queries as tables."`
	Rebuild analyticsRebuildCmd `cmd:"" help:"Drop whole days of analytics and project them again from Kafka (the projector must be stopped)."`
}

type analyticsMigrateCmd struct {
	clickhouseFlags `embed:""`
}

func (m *analyticsMigrateCmd) Run(ctx context.Context) error {
	conn, err := analytics.Open(ctx, m.Addr, m.Database)
	if err != nil {
		return err
	}
	defer conn.Close()
	return analytics.Migrate(ctx, conn, m.Database)
}

type analyticsReportCmd struct {
	clickhouseFlags `embed:""`
	Since           time.Duration `default:"1h" help:"Report window, ending now."`
	Sender          string        `help:"Only this sender (VAPID sub)."`
	Node            string        `help:"Only this connection node (connections report)."`
	Limit           int           `default:"20" help:"Rows per table."`
}

func (r *analyticsReportCmd) Run(ctx context.Context) error {
	if r.Since <= 0 {
		return fmt.Errorf("--since: %s must be positive", r.Since)
	}
	conn, err := analytics.Open(ctx, r.Addr, r.Database)
	if err != nil {
		return err
	}
	defer conn.Close()
	return analytics.ReportWith(ctx, conn, r.Database, analytics.ReportOptions{Since: r.Since, Sender: r.Sender, Node: r.Node, Limit: r.Limit}, os.Stdout)
}

// newAnalyticsProjector builds serve's analytics projector. It is given
// ClickHouse's address, not a connection: Run connects, waiting with
// back-off while ClickHouse is down, so ClickHouse is never needed to start.
func newAnalyticsProjector(cfg *serveConfig, names schema.Names, clientOpts []kgo.Opt, reg prometheus.Registerer, logger *slog.Logger) (*analytics.Projector, error) {
	return analytics.NewProjector(analytics.ProjectorConfig{
		ClientOpts: clientOpts, Addr: cfg.ClickHouseAddr, Database: cfg.ClickHouseDB, Names: names, Logger: logger, Metrics: reg,
	})
}
