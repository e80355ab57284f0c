package ingest

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pushlog/pushlog/schema"
)

// DefaultMaxReportWindow bounds until-since of GET /v1/report: a month of
// a busy sender's rows is what one ClickHouse query should scan.
const DefaultMaxReportWindow = 31 * 24 * time.Hour

// DefaultReportWindow is the window when since is not given (until-24h).
const DefaultReportWindow = 24 * time.Hour

// errnoInvalidRange is pushlog's own (autopush-rs uses 101-114, quotas
// 129): since/until of a report missing their format, reversed or longer
// than the report window bound.
const errnoInvalidRange = 130

// maxTimeParam bounds since/until before parsing (RFC 3339 with
// nanoseconds and an offset is 35 bytes).
const maxTimeParam = 64

// Results of GET /v1/report (pushlog_ingest_report_requests_total), beside
// statusUnauthorized, statusForbidden and statusOff.
const (
	reportOK       = "ok"
	reportBadRange = "bad_range"
	reportFailed   = "failed"
	reportBusy     = "busy"
)

// DefaultReportConcurrency bounds the reports one node runs at once: each
// is four ClickHouse queries over up to a month of a sender's rows.
const DefaultReportConcurrency = 4

// ReportSource computes a sender's delivery report; analytics implements
// it over ClickHouse (wired in cmd/pushlog: ingest does not import
// analytics).
type ReportSource interface {
	// SenderReport counts the messages accepted in [since, until) from
	// the VAPID key whose SHA-256 is keyHash (lowercase hex), with their
	// outcomes as known now.
	SenderReport(ctx context.Context, keyHash string, since, until time.Time) (SenderReport, error)
}

// SenderReport is the JSON answer of GET /v1/report. Every message accepted
// in the window is counted in exactly one of acked, expired, dropped,
// deleted or pending (its earliest settlement), so
// accepted = acked + expired + dropped + deleted + pending.
type SenderReport struct {
	Sender          string            `json:"sender"` // SHA-256 of the VAPID public key, hex
	Since           time.Time         `json:"since"`
	Until           time.Time         `json:"until"`
	Accepted        uint64            `json:"accepted"`
	Delivered       uint64            `json:"delivered"` // sent to the user agent at least once
	Acked           uint64            `json:"acked"`
	Expired         uint64            `json:"expired"`
	Dropped         uint64            `json:"dropped"`
	DroppedByReason map[string]uint64 `json:"dropped_by_reason"`
	Deleted         uint64            `json:"deleted"`
	Pending         uint64            `json:"pending"`
	// AckLatencyMs is accept-to-ack latency of the acked messages
	// (p50, p95, p99 in milliseconds; zero without acks).
	AckLatencyMs LatencyQuantiles  `json:"ack_latency_ms"`
	Urgency      map[string]uint64 `json:"urgency"` // accepted messages by urgency
}

// LatencyQuantiles are latency quantiles in milliseconds.
type LatencyQuantiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// Balanced reports whether the accounting identity holds.
func (r SenderReport) Balanced() bool {
	return r.Accepted == r.Acked+r.Expired+r.Dropped+r.Deleted+r.Pending
}

// ReportConfig configures GET /v1/report.
type ReportConfig struct {
	// Source is nil when analytics is off: the report answers 503.
	Source ReportSource
	// MaxWindow bounds until-since (default 31 days).
	MaxWindow time.Duration
	// Timeout bounds one report's query (default 10s).
	Timeout time.Duration
	// Concurrency bounds the reports running at once on this node
	// (default 4); past it a report answers 503 with Retry-After.
	Concurrency int
}

func (c *ReportConfig) withDefaults() {
	if c.MaxWindow <= 0 {
		c.MaxWindow = DefaultMaxReportWindow
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultReportConcurrency
	}
}

// handleReport answers GET /v1/report?since=&until= for the VAPID key of
// the request's Authorization header (aud = this service's origin).
func (s *Server) handleReport(c echo.Context) error {
	result, err := s.report(c)
	if s.senders != nil {
		s.senders.reports.WithLabelValues(result).Inc()
	}
	return err
}

func (s *Server) report(c echo.Context) (string, error) {
	cfg := s.cfg.Report
	cfg.withDefaults()
	req := c.Request()
	auth, aerr := s.authenticate(req.Header, schema.Endpoint{})
	if aerr != nil {
		return statusUnauthorized, aerr
	}
	if !auth.ok {
		return statusUnauthorized, unauthorized("Missing VAPID header: a report is for the key that signs its request")
	}
	since, until, aerr := reportWindow(c.QueryParam("since"), c.QueryParam("until"), s.now(), cfg.MaxWindow)
	if aerr != nil {
		return reportBadRange, aerr
	}
	if cfg.Source == nil {
		return statusOff, unavailable("Analytics is off on this service: reports need ClickHouse (--clickhouse-addr)", 0)
	}
	if _, busy := s.senders.runningKeys.LoadOrStore(auth.keyHash, struct{}{}); busy {
		return reportBusy, unavailable("A report for this key is already running; retry when it is done", 1)
	}
	defer s.senders.runningKeys.Delete(auth.keyHash)
	if n := s.senders.running.Add(1); n > int64(cfg.Concurrency) {
		s.senders.running.Add(-1)
		return reportBusy, unavailable("Too many reports running; retry later", 1)
	}
	defer s.senders.running.Add(-1)
	ctx, cancel := context.WithTimeout(req.Context(), cfg.Timeout)
	defer cancel()
	rep, err := cfg.Source.SenderReport(ctx, hex.EncodeToString(auth.keyHash[:]), since, until)
	if err != nil {
		s.log.Warn("sender report failed", "err", err)
		if errors.Is(err, context.DeadlineExceeded) {
			return reportFailed, unavailable("The report took too long; try a shorter window", 1)
		}
		return reportFailed, unavailable("The report could not be computed; retry later", 1)
	}
	c.Response().Header().Set(headerCacheControl, "no-store")
	return reportOK, c.JSON(http.StatusOK, rep)
}

// reportWindow parses since and until (RFC 3339, or unix seconds): until
// defaults to now and is clamped to it (a report is of a closed window),
// since defaults to until-24h; since must be before until and the window at
// most maxWindow.
func reportWindow(sinceStr, untilStr string, now time.Time, maxWindow time.Duration) (since, until time.Time, aerr *apiError) {
	until = now
	if untilStr != "" {
		t, err := parseReportTime(untilStr)
		if err != nil {
			return since, until, badRequest(errnoInvalidRange, "until: "+err.Error())
		}
		if t.Before(now) {
			until = t
		}
	}
	since = until.Add(-DefaultReportWindow)
	if sinceStr != "" {
		t, err := parseReportTime(sinceStr)
		if err != nil {
			return since, until, badRequest(errnoInvalidRange, "since: "+err.Error())
		}
		since = t
	}
	if !since.Before(until) {
		return since, until, badRequest(errnoInvalidRange, "since must be before until (and before now)")
	}
	if until.Sub(since) > maxWindow {
		return since, until, badRequest(errnoInvalidRange, "The window is longer than "+maxWindow.String()+": ask for several shorter ones")
	}
	return since.UTC(), until.UTC(), nil
}

var errTimeFormat = errors.New("want RFC 3339 (2026-12-06T07:00:00Z) or unix seconds")

func parseReportTime(s string) (time.Time, error) {
	if len(s) > maxTimeParam {
		return time.Time{}, errTimeFormat
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		// Bounded to years 1970..9999 so time arithmetic cannot overflow.
		if n < 0 || n > 253402300799 {
			return time.Time{}, errTimeFormat
		}
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 1970 {
		return time.Time{}, errTimeFormat
	}
	return t, nil
}
