package ingest

import (
	"context"
	"crypto/subtle"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema"
)

// StatusSource answers a message's status from state folded locally
// (projector.StatusTable: the messages and acks topics folded with
// schema.MessageStatus into a bounded table); a request never reads the log.
type StatusSource interface {
	// Status returns the message's fold; false when the message is not
	// known (never accepted, or settled longer ago than the keep time,
	// or evicted by the table's bound).
	Status(key schema.MessageKey) (schema.MessageStatus, bool)
	// Ready reports whether the source folded what the log held when it
	// started; before, an unknown message answers 503, not 404.
	Ready() bool
}

// behindSource is a StatusSource that reads in batches and tells a message
// it has not read yet (projector.StatusTable): unknown, such a message
// answers 503 with Retry-After, not 404, since it may have been accepted
// a moment ago. An id past the topic's end is not behind (404), so a
// message that is not there is never 503 for good.
type behindSource interface {
	Behind(ctx context.Context, key schema.MessageKey) bool
}

// Results of GET /m/{id} (pushlog_ingest_status_lookups_total): a state
// name, or one of these.
const (
	statusInvalidID    = "invalid_id"
	statusNotFound     = "not_found"
	statusUnauthorized = "unauthorized"
	statusForbidden    = "forbidden"
	statusOff          = "off"
	statusLimited      = "limited" // over a quota: 429
	statusCatchingUp   = "catching_up"
)

// senderMetrics are the series of the sender APIs (status and report).
type senderMetrics struct {
	lookups *prometheus.CounterVec
	reports *prometheus.CounterVec
	running atomic.Int64 // reports in flight (ReportConfig.Concurrency)
	// runningKeys holds the key hashes with a report in flight: one at a
	// time per key, so one sender cannot hold every slot.
	runningKeys sync.Map
}

func newSenderMetrics() *senderMetrics {
	m := &senderMetrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_ingest_status_lookups_total",
			Help: "GET /m/{id} message status lookups by result: the state answered (pending, delivered, acked, expired, dropped, deleted) or invalid_id, not_found, unauthorized, forbidden, off, limited (429: a lookup costs a push's quota tokens), catching_up (503: unknown while the node's table catches up after a start, or before it read a message accepted a moment ago).",
		}, []string{"result"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_ingest_report_requests_total",
			Help: "GET /v1/report delivery reports by result: ok, bad_range, unauthorized, forbidden, off, failed, busy (--report-concurrency reports already running).",
		}, []string{"result"}),
	}
	for s := schema.StatePending; s <= schema.StateDeleted; s++ {
		m.lookups.WithLabelValues(s.String())
	}
	for _, r := range []string{statusInvalidID, statusNotFound, statusUnauthorized, statusForbidden, statusOff, statusLimited, statusCatchingUp} {
		m.lookups.WithLabelValues(r)
	}
	for _, r := range []string{reportOK, reportBadRange, statusUnauthorized, statusForbidden, statusOff, reportFailed, reportBusy} {
		m.reports.WithLabelValues(r)
	}
	return m
}

func (m *senderMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.lookups, m.reports}
}

// senderRoutes adds the sender APIs: message status and delivery report.
func (s *Server) senderRoutes(e *echo.Echo) {
	get := []string{http.MethodGet, http.MethodHead}
	e.Match(get, "/m/:id", s.counted(s.handleStatus))
	e.Match(get, "/v1/report", s.counted(s.handleReport))
}

// statusBody is the JSON answer of GET /m/{id}. Times are RFC 3339 UTC with
// milliseconds; a step not reached is absent.
type statusBody struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"` // dropped only
	TTL        int64  `json:"ttl"`
	Urgency    string `json:"urgency"`
	Deliveries int32  `json:"deliveries"`
	Accepted   string `json:"accepted"`
	Delivered  string `json:"delivered,omitempty"`
	Acked      string `json:"acked,omitempty"`
	Expired    string `json:"expired,omitempty"`
	Dropped    string `json:"dropped,omitempty"`
	Deleted    string `json:"deleted,omitempty"`
}

func msTime(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// handleStatus answers GET /m/{id}. The sealed id is the capability; a
// message sent to a key-bound (v2) endpoint also needs a VAPID header of
// that key (401 without one, 403 with another key).
func (s *Server) handleStatus(c echo.Context) error {
	result, err := s.status(c)
	if s.senders != nil {
		s.senders.lookups.WithLabelValues(result).Inc()
	}
	return err
}

func (s *Server) status(c echo.Context) (string, error) {
	id := c.Param("id")
	m, err := s.cfg.Sealer.OpenMessageID(id)
	if err != nil || m.Partition >= s.cfg.Partitions || schema.PartitionOf(m.UAID, s.cfg.Partitions) != m.Partition {
		return statusInvalidID, errInvalidMsgID
	}
	if s.cfg.Status == nil {
		return statusOff, unavailable("Message status is off on this node", 0)
	}
	key := schema.MessageKey{Partition: m.Partition, Offset: m.Offset}
	st, ok := s.cfg.Status.Status(key)
	if !ok || st.AcceptedMs == 0 {
		// An ack folded before its MessageAccepted tells neither the
		// key binding nor the accept time: not known yet.
		if !s.cfg.Status.Ready() {
			return statusCatchingUp, unavailable("Message status is catching up after a restart; retry later", 1)
		}
		if b, ok := s.cfg.Status.(behindSource); ok && b.Behind(c.Request().Context(), key) {
			return statusCatchingUp, unavailable("Message status has not read this message yet; retry shortly", 1)
		}
		return statusNotFound, errUnknownMessage
	}
	auth := authResult{}
	if st.KeyBound {
		var result string
		var aerr *apiError
		if auth, result, aerr = s.checkSenderKey(c.Request().Header, st.KeyHash); aerr != nil {
			return result, aerr
		}
	}
	// A lookup costs what a push to the message's endpoint costs, from
	// the same buckets (quota.go): polling cannot outrun the push quotas.
	if aerr := s.checkQuota(c.Request(), schema.Endpoint{UAID: m.UAID, ChannelID: m.ChannelID}, auth); aerr != nil {
		return statusLimited, aerr
	}
	body := statusBody{
		ID: id, State: st.State.String(), TTL: st.TTLSeconds, Urgency: schema.UrgencyName(st.Urgency),
		Deliveries: st.Deliveries, Accepted: msTime(st.AcceptedMs), Delivered: msTime(st.DeliveredMs),
	}
	switch st.State {
	case schema.StateAcked:
		body.Acked = msTime(st.SettledMs)
	case schema.StateExpired:
		body.Expired = msTime(st.SettledMs)
	case schema.StateDropped:
		body.Dropped, body.Reason = msTime(st.SettledMs), schema.DropReasonName(st.Reason)
	case schema.StateDeleted:
		body.Deleted = msTime(st.SettledMs)
	}
	c.Response().Header().Set(headerCacheControl, "no-store")
	return st.State.String(), c.JSON(http.StatusOK, body)
}

var errUnknownMessage = newError(http.StatusNotFound, errnoInvalidToken, "Unknown message (never accepted, or settled longer ago than the status is kept)")

// checkSenderKey requires a valid VAPID header (aud = this service's
// origin) whose key hashes to want: 401 without a valid one, 403 for
// another key.
func (s *Server) checkSenderKey(h http.Header, want [32]byte) (authResult, string, *apiError) {
	auth, aerr := s.authenticate(h, schema.Endpoint{})
	if aerr != nil {
		return auth, statusUnauthorized, aerr
	}
	if !auth.ok {
		return auth, statusUnauthorized, unauthorized("Missing VAPID header: this message was sent to a key-bound endpoint")
	}
	if subtle.ConstantTimeCompare(auth.keyHash[:], want[:]) != 1 {
		return auth, statusForbidden, newError(http.StatusForbidden, errnoInvalidAuth, "VAPID key is not the message's sender key")
	}
	return auth, "", nil
}
