package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
)

type analyticsCmd struct {
	Migrate analyticsMigrateCmd `cmd:"" help:"Apply the ClickHouse migrations (safe to run again)."`
	Report  analyticsReportCmd  `cmd:"" help:"Print the dashboard queries as tables."`
	Rebuild analyticsRebuildCmd `cmd:"" help:"Drop whole days of analytics and project them again from Kafka (the projector must be stopped)."`
}

// analyticsDataDir finds a running serve's ClickHouse settings when no
// address is given.
type analyticsDataDir struct {
	DataDir string `default:"./pushlog-data" env:"PUSHLOG_DATA_DIR" help:"Data directory of a running embedded serve, read when no ClickHouse address is given."`
}

type analyticsMigrateCmd struct {
	clickhouseFlags  `embed:""`
	analyticsDataDir `embed:""`
}

func (m *analyticsMigrateCmd) Run(ctx context.Context) error {
	if err := m.resolve(m.DataDir); err != nil {
		return err
	}
	conn, err := analytics.Open(ctx, m.Addr, m.Database)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := analytics.Migrate(ctx, conn, m.Database); err != nil {
		return err
	}
	fmt.Printf("database %s on %s is migrated\n", m.Database, m.Addr)
	return nil
}

type analyticsReportCmd struct {
	clickhouseFlags  `embed:""`
	analyticsDataDir `embed:""`
	Since            string   `default:"1h" help:"Start of the report window: a duration ago (90m), an RFC 3339 time or a date (UTC)."`
	Until            string   `help:"End of the report window (exclusive; default now): a duration ago, an RFC 3339 time or a date (UTC)."`
	Format           string   `default:"table" enum:"table,json,csv" help:"Output: table (aligned columns), json (one document) or csv (per query a header row and its rows, the query's name first)."`
	Query            []string `help:"Only these queries (delivery_rate, ack_latency, volume_by_sender, expiry_and_drops, connections); default all."`
	Sender           string   `help:"Only this sender (VAPID sub); or a VAPID public key (or the hex SHA-256 of one): that key's delivery report, as GET /v1/report answers it."`
	Node             string   `help:"Only this connection node (connections report)."`
	Limit            int      `default:"20" help:"Rows per table."`
}

func (r *analyticsReportCmd) Run(ctx context.Context) error {
	o, err := r.options(time.Now())
	if err != nil {
		return err
	}
	if err := r.resolve(r.DataDir); err != nil {
		return err
	}
	conn, err := analytics.Open(ctx, r.Addr, r.Database)
	if err != nil {
		return err
	}
	defer conn.Close()
	if key, ok := senderKeyHash(r.Sender); ok { // a VAPID key: GET /v1/report's numbers (sender_api.go)
		return writeSenderReport(ctx, conn, r.Database, key, o, r.Format, os.Stdout)
	}
	return analytics.WriteReport(ctx, conn, r.Database, o, r.Format, r.Query, os.Stdout)
}

// options turns the flags into the report's window and filters.
func (r *analyticsReportCmd) options(now time.Time) (analytics.ReportOptions, error) {
	o := analytics.ReportOptions{Sender: r.Sender, Node: r.Node, Limit: r.Limit, Now: func() time.Time { return now }}
	if r.Limit <= 0 {
		return o, fmt.Errorf("--limit: %d must be positive", r.Limit)
	}
	from, err := parseSince(r.Since, now)
	if err != nil {
		return o, fmt.Errorf("--since: %w", err)
	}
	o.From = from
	if r.Until != "" {
		if o.Until, err = parseSince(r.Until, now); err != nil {
			return o, fmt.Errorf("--until: %w", err)
		}
		if !o.Until.After(o.From) {
			return o, fmt.Errorf("--until %s is not after --since %s", o.Until.Format(time.RFC3339), o.From.Format(time.RFC3339))
		}
	}
	if d, err := time.ParseDuration(strings.TrimSpace(r.Since)); err == nil && r.Until == "" {
		// "last 1h" in the titles, as before.
		o.From, o.Since = time.Time{}, d
	}
	return o, nil
}

// newAnalyticsProjector builds serve's analytics projector. It is given
// ClickHouse's address, not a connection: Run connects, waiting with
// back-off while ClickHouse is down, so ClickHouse is never needed to start.
func newAnalyticsProjector(cfg *serveConfig, names schema.Names, clientOpts []kgo.Opt, reg prometheus.Registerer, logger *slog.Logger) (*analytics.Projector, error) {
	return analytics.NewProjector(analytics.ProjectorConfig{
		ClientOpts: clientOpts, Addr: cfg.ClickHouseAddr, Database: cfg.ClickHouseDB, Names: names, Logger: logger, Metrics: reg,
	})
}
