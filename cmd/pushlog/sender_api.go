package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/ingest"
	"github.com/pushlog/pushlog/projector"
	"github.com/pushlog/pushlog/schema"
)

// senderSources builds what ingest's sender APIs answer from (issue 15):
// the status table of GET /m/{id}, folded on this node from the messages
// and acks topics (supervised: a failed fold restarts and keeps its
// table), and the ClickHouse reports of GET /v1/report when analytics is
// configured (otherwise the report answers 503: analytics is off).
func senderSources(g *runGroup, cfg *serveConfig, names schema.Names, clientOpts []kgo.Opt, met *serveMetrics, logger *slog.Logger) (ingest.StatusSource, ingest.ReportConfig, error) {
	report := ingest.ReportConfig{MaxWindow: cfg.ReportMaxWindow}
	table, err := projector.NewStatusTable(projector.StatusTableConfig{
		Names: names, ClientOpts: clientOpts, MaxTTL: cfg.MaxTTL, Keep: cfg.StatusKeep,
		MaxEntries: cfg.StatusEntries, Logger: logger.With("role", "status-table"), Metrics: met.reg,
	})
	if err != nil {
		return nil, report, fmt.Errorf("status table: %w", err)
	}
	g.supervise("status-table", table.Run)
	if cfg.ClickHouseAddr != "" {
		r, err := analytics.NewSenderReporter(cfg.ClickHouseAddr, cfg.ClickHouseDB)
		if err != nil {
			return nil, report, fmt.Errorf("sender reports: %w", err)
		}
		report.Source = senderReports{r}
	}
	return table, report, nil
}

// senderReports adapts analytics' reports to ingest's ReportSource (the
// roles do not import each other).
type senderReports struct{ r *analytics.SenderReporter }

func (s senderReports) SenderReport(ctx context.Context, keyHash string, since, until time.Time) (ingest.SenderReport, error) {
	c, err := s.r.Report(ctx, keyHash, since, until)
	if err != nil {
		return ingest.SenderReport{}, err
	}
	return senderReportOf(c), nil
}

func senderReportOf(c analytics.SenderCounts) ingest.SenderReport {
	return ingest.SenderReport{
		Sender: c.KeyHash, Since: c.Since, Until: c.Until,
		Accepted: c.Accepted, Delivered: c.Delivered, Acked: c.Acked, Expired: c.Expired,
		Dropped: c.Dropped, DroppedByReason: c.DroppedByReason, Deleted: c.Deleted, Pending: c.Pending,
		AckLatencyMs: ingest.LatencyQuantiles{P50: c.AckP50, P95: c.AckP95, P99: c.AckP99},
		Urgency:      c.Urgency,
	}
}
