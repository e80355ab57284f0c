package connector

import (
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema/pb"
)

// TestMetrics: connections, deliveries, acks and nacks (by code) are
// counted, and GET /metrics is served next to the upgrade.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newHarness(t, func(c *Config) {
		c.Metrics = reg
		c.MetricsHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	})
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	chid := newChannelID()
	var versions []string
	for off := int64(1); off <= 3; off++ {
		v := h.sealedVersion(uaid, chid, off)
		versions = append(versions, v)
		if err := s.Deliver(link.Notification{UAID: uaid, ChannelID: chid, Version: v, Ref: &pb.MessageRef{Offset: off, ChannelId: chid}}); err != nil {
			t.Fatal(err)
		}
		recv(t, c)
	}
	send(t, c, map[string]any{"messageType": "ack", "updates": []map[string]any{
		{"channelID": chid, "version": versions[0]},
		{"channelID": chid, "version": versions[1], "code": 102},
	}})
	send(t, c, map[string]any{"messageType": "nack", "version": versions[2], "code": 301})
	send(t, c, `{}`)
	recv(t, c)

	want := `
# HELP pushlog_connector_acks_total Acks received from user agents, by code (100 delivered, 101 decryption failed, 102 not delivered).
# TYPE pushlog_connector_acks_total counter
pushlog_connector_acks_total{code="100"} 1
pushlog_connector_acks_total{code="101"} 0
pushlog_connector_acks_total{code="102"} 1
# HELP pushlog_connector_connections Open WebSocket connections.
# TYPE pushlog_connector_connections gauge
pushlog_connector_connections 1
# HELP pushlog_connector_deliveries_total Notifications queued to a user agent's socket.
# TYPE pushlog_connector_deliveries_total counter
pushlog_connector_deliveries_total 3
# HELP pushlog_connector_nacks_total Nacks received from user agents, by code (301..303; 0 for any other).
# TYPE pushlog_connector_nacks_total counter
pushlog_connector_nacks_total{code="0"} 0
pushlog_connector_nacks_total{code="301"} 1
pushlog_connector_nacks_total{code="302"} 0
pushlog_connector_nacks_total{code="303"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_connector_acks_total", "pushlog_connector_connections",
		"pushlog_connector_deliveries_total", "pushlog_connector_nacks_total"); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(h.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	if got := fams["pushlog_connector_deliveries_total"].GetMetric()[0].GetCounter().GetValue(); got != 3 {
		t.Fatalf("deliveries over HTTP: %v", got)
	}
}

// TestNoMetricsRoute: without a handler /metrics is not found.
func TestNoMetricsRoute(t *testing.T) {
	h := newHarness(t, nil)
	resp, err := http.Get(h.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics without a handler: %d", resp.StatusCode)
	}
}

// TestPushToSocket: a notification accepted while its user agent was
// connected is observed once written, from its accept time; one accepted
// before the socket opened (it waited for a connection), or without an
// accept time (an older owner), is not; a clock ahead of ours counts 0.
func TestPushToSocket(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newHarness(t, func(c *Config) { c.Metrics = reg })
	before := time.Now().Add(-time.Second).UnixMilli()
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	chid := newChannelID()
	accepted := time.Now().UnixMilli()
	time.Sleep(30 * time.Millisecond)
	for off, ref := range []*pb.MessageRef{
		{Offset: 1, ChannelId: chid, AcceptedMs: accepted}, // observed, ≥ 30ms
		{Offset: 2, ChannelId: chid, AcceptedMs: before},   // waited for the connection
		nil,                          // no accept time
		{Offset: 4, ChannelId: chid}, // no accept time
		{Offset: 5, ChannelId: chid, AcceptedMs: time.Now().Add(time.Hour).UnixMilli()}, // ingest's clock ahead: 0
		{Offset: 6, ChannelId: chid, AcceptedMs: math.MaxInt64},                         // absurd: not observed
	} {
		v := h.sealedVersion(uaid, chid, int64(off+1))
		if err := s.Deliver(link.Notification{UAID: uaid, ChannelID: chid, Version: v, Ref: ref}); err != nil {
			t.Fatal(err)
		}
		recv(t, c)
	}
	var hist *dto.Histogram
	waitFor(t, "two observations", func() bool {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == "pushlog_connector_push_to_socket_seconds" {
				hist = f.GetMetric()[0].GetHistogram()
			}
		}
		return hist.GetSampleCount() == 2
	})
	if sum := hist.GetSampleSum(); sum < 0.029 || sum > 10 {
		t.Fatalf("observed sum %vs, want the ~30ms of one message", sum)
	}
	if first := hist.GetBucket()[0]; first.GetUpperBound() != 0.0005 || first.GetCumulativeCount() != 1 {
		t.Fatalf("first bucket %v, want the future-dated message in it", first)
	}
}
