package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/ingest"
	"github.com/pushlog/pushlog/projector"
	"github.com/pushlog/pushlog/schema"
)

// senderSources builds what ingest's sender APIs answer from (issue 15):
// the status table of GET /m/{id}, folded on this node from the messages
// and acks topics, which push receipts follow too (the caller runs it,
// supervised, once ingest follows it: a failed fold restarts and keeps its
// table), and the ClickHouse reports of GET /v1/report when analytics is
// configured (otherwise the report answers 503: analytics is off).
func senderSources(cfg *serveConfig, names schema.Names, clientOpts []kgo.Opt, met *serveMetrics, logger *slog.Logger) (*projector.StatusTable, ingest.ReportConfig, error) {
	report := ingest.ReportConfig{MaxWindow: cfg.ReportMaxWindow, Concurrency: cfg.ReportConcurrency}
	var history time.Duration
	if cfg.Receipts {
		history = cfg.ReceiptRetention // receipts follow the same fold
	}
	table, err := projector.NewStatusTable(projector.StatusTableConfig{
		Names: names, ClientOpts: clientOpts, MaxTTL: cfg.MaxTTL, Keep: cfg.StatusKeep, History: history,
		MaxEntries: cfg.StatusEntries, Logger: logger.With("role", "status-table"), Metrics: met.reg,
	})
	if err != nil {
		return nil, report, fmt.Errorf("status table: %w", err)
	}
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

// senderKeyHash recognises a VAPID public key (base64url of a 65-byte
// uncompressed P-256 point) or its SHA-256 in hex, and returns the hash.
func senderKeyHash(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == sha256.Size {
		return strings.ToLower(s), true
	}
	if b, err := schema.DecodeBase64(s); err == nil && len(b) == 65 && b[0] == 4 {
		sum := sha256.Sum256(b)
		return hex.EncodeToString(sum[:]), true
	}
	return "", false
}

// writeSenderReport prints one key's delivery report: json is exactly
// GET /v1/report's body; table and csv are one "name value" row each.
func writeSenderReport(ctx context.Context, conn driver.Conn, db, keyHash string, o analytics.ReportOptions, format string, w io.Writer) error {
	now := o.Now()
	since, until := o.From, o.Until
	if since.IsZero() {
		since = now.Add(-o.Since)
	}
	if until.IsZero() {
		until = now
	}
	c, err := analytics.SenderReport(ctx, conn, db, keyHash, since, until)
	if err != nil {
		return err
	}
	rep := senderReportOf(c)
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	sep := " "
	if format == "csv" {
		sep = ","
	}
	rows := [][2]string{{"sender", rep.Sender}, {"since", rep.Since.Format(time.RFC3339)}, {"until", rep.Until.Format(time.RFC3339)},
		{"accepted", fmt.Sprint(rep.Accepted)}, {"delivered", fmt.Sprint(rep.Delivered)}, {"acked", fmt.Sprint(rep.Acked)},
		{"expired", fmt.Sprint(rep.Expired)}, {"dropped", fmt.Sprint(rep.Dropped)}, {"deleted", fmt.Sprint(rep.Deleted)},
		{"pending", fmt.Sprint(rep.Pending)}, {"ack_latency_ms_p50", fmt.Sprint(rep.AckLatencyMs.P50)},
		{"ack_latency_ms_p95", fmt.Sprint(rep.AckLatencyMs.P95)}, {"ack_latency_ms_p99", fmt.Sprint(rep.AckLatencyMs.P99)}}
	for _, r := range slices.Sorted(maps.Keys(rep.DroppedByReason)) {
		rows = append(rows, [2]string{"dropped_" + r, fmt.Sprint(rep.DroppedByReason[r])})
	}
	for _, u := range slices.Sorted(maps.Keys(rep.Urgency)) {
		rows = append(rows, [2]string{"urgency_" + u, fmt.Sprint(rep.Urgency[u])})
	}
	for _, r := range rows {
		if _, err := fmt.Fprintln(w, r[0]+sep+r[1]); err != nil {
			return err
		}
	}
	return nil
}
