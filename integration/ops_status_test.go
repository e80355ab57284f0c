package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// opsRun runs a pushlog operator command against the test Kafka.
func opsRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(pushlogBin, args...)
	cmd.Env = append(os.Environ(), "KAFKA_BROKERS="+kafkaBrokers(t))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String() + errOut.String(), fmt.Errorf("pushlog %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// opsStatusJSON is what these tests read of `pushlog status --json`. The
// tests keep their own copy of the output's shape rather than import
// cmd/ops: nothing outside cmd/ imports a binary's packages, and a test
// that decodes the documented JSON also catches a renamed field.
type opsStatusJSON struct {
	Namespace string `json:"namespace"`
	Nodes     []struct {
		NodeID      string  `json:"node_id"`
		MetricsAddr string  `json:"metrics_addr"`
		Partitions  []int32 `json:"partitions"`
	} `json:"nodes"`
	Owners []struct {
		Partition int32  `json:"partition"`
		NodeID    string `json:"node_id"`
	} `json:"partition_owners"`
	Groups  []opsGroupJSON `json:"groups"`
	Metrics []struct {
		URL             string   `json:"url"`
		NodeID          string   `json:"node_id"`
		Error           string   `json:"error"`
		Connections     *float64 `json:"connections"`
		OwnedPartitions *float64 `json:"owned_partitions"`
	} `json:"node_metrics"`
}

// opsGroupJSON is one consumer group's lag in `status --json`.
type opsGroupJSON struct {
	Role       string `json:"role"`
	Group      string `json:"group"`
	Total      int64  `json:"total"`
	Partitions []struct {
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Lag       int64  `json:"lag"`
	} `json:"partitions"`
}

// opsStatus runs `pushlog status --json` and decodes it.
func opsStatus(t *testing.T, ns string, nodes ...string) *opsStatusJSON {
	t.Helper()
	args := []string{"status", "--json", "--namespace", ns}
	for _, n := range nodes {
		args = append(args, "--node", n)
	}
	out, err := opsRun(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var st opsStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return &st
}

func opsGroup(st *opsStatusJSON, role string) *opsGroupJSON {
	for i := range st.Groups {
		if st.Groups[i].Role == role {
			return &st.Groups[i]
		}
	}
	return nil
}

// opsTopicLag sums a group's lag on one topic.
func opsTopicLag(g *opsGroupJSON, topic string) int64 {
	var n int64
	for _, p := range g.Partitions {
		if p.Topic == topic {
			n += p.Lag
		}
	}
	return n
}

// TestOpsStatusLag (d): pushes accepted while no connector runs show up as
// lag of the connectors group in `status --json`; once a connector runs and
// the user agent acks everything, the lag returns to zero.
func TestOpsStatusLag(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	s, _ := snServer(t)
	ns := s.opts.Namespace
	names, _ := schema.NamesFor(ns)
	vapid := snNewVAPID(t)
	uaid, sub := snOffline(ctx, t, s, "")

	// Phase 1: ingest and projector only. The harness waits for the
	// WebSocket port too, so a placeholder listens there meanwhile.
	s.terminate()
	s.env = append(s.env, "PUSHLOG_ROLES=ingest,projector")
	wsHost := strings.TrimSuffix(strings.TrimPrefix(s.WSURL, "ws://"), "/")
	placeholder, err := net.Listen("tcp", wsHost)
	if err != nil {
		t.Fatal(err)
	}
	s.restart()
	placeholder.Close()
	const n = 5
	for i := range n {
		snMustCreate(ctx, t, sub, []byte(fmt.Sprintf("while connectors are down %d", i)), snPush{TTL: snLongTTL, VAPID: vapid})
	}
	st := opsStatus(t, ns)
	if len(st.Nodes) != 0 || len(st.Owners) != 0 {
		t.Fatalf("nodes %+v owners %+v with no connector running", st.Nodes, st.Owners)
	}
	conn := opsGroup(st, "connectors")
	if conn == nil {
		t.Fatalf("no connectors group in %+v", st.Groups)
	}
	if got := opsTopicLag(conn, names.Messages); got < n {
		t.Fatalf("connectors lag on %s = %d, want at least %d (status %+v)", names.Messages, got, n, conn)
	}
	if out, err := opsRun(t, "status", "--namespace", ns); err != nil || !strings.Contains(out, "no connector running") {
		t.Fatalf("table output: %v\n%s", err, out)
	}

	// Phase 2: every role again; the user agent gets and acks everything.
	s.terminate()
	s.env = append(s.env, "PUSHLOG_ROLES=ingest,connector,projector")
	s.restart()
	ua := uaRedial(ctx, t, s.WSURL, uaid)
	for i := range n {
		ua.ack(snExpect(ctx, t, ua, sub, fmt.Sprintf("while connectors are down %d", i)))
	}
	ua.sync(ctx)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st = opsStatus(t, ns)
		conn = opsGroup(st, "connectors")
		if conn != nil && conn.Total == 0 && len(st.Owners) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag did not return to zero: %+v", st)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(st.Nodes) != 1 || len(st.Nodes[0].Partitions) != 4 {
		t.Fatalf("nodes %+v, want one owning 4 partitions", st.Nodes)
	}
	// Without --node, status scrapes the metrics address the connector
	// announced in the group (its WebSocket listener): one client.
	node := st.Nodes[0]
	if wsHost := strings.TrimSuffix(strings.TrimPrefix(s.WSURL, "ws://"), "/"); node.MetricsAddr != wsHost {
		t.Fatalf("node announced metrics address %q, want the WebSocket listener %q", node.MetricsAddr, wsHost)
	}
	if len(st.Metrics) != 1 {
		t.Fatalf("node metrics %+v, want the one discovered node", st.Metrics)
	}
	m := st.Metrics[0]
	if m.NodeID != node.NodeID || m.Error != "" || m.Connections == nil || *m.Connections != 1 || m.OwnedPartitions == nil || *m.OwnedPartitions != 4 {
		t.Fatalf("discovered node metrics %+v (node %+v), want 1 connection and 4 owned partitions", m, node)
	}
	out, err := opsRun(t, "status", "--namespace", ns)
	if err != nil || !strings.Contains(out, node.MetricsAddr) || strings.Contains(out, "pass --node") {
		t.Fatalf("table output without --node: %v\n%s", err, out)
	}
}

// opsScrape parses a /metrics page with the Prometheus text parser.
func opsScrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s does not parse: %v", url, err)
	}
	return fams
}

// opsValue is the value of the series of name whose labels include want.
func opsValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestOpsMetrics (e): /metrics on the ingest and WebSocket listeners parses
// and its counters match the traffic sent.
func TestOpsMetrics(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	s, _ := snServer(t, "PUSHLOG_LAG_INTERVAL=200ms")
	vapid := snNewVAPID(t)
	ua := uaDial(ctx, t, s.WSURL, "")
	sub := ua.subscribe(ctx, "")
	const n = 4
	for i := range n {
		snMustCreate(ctx, t, sub, []byte(fmt.Sprintf("m%d", i)), snPush{TTL: snLongTTL, VAPID: vapid})
		ua.ack(snExpect(ctx, t, ua, sub, fmt.Sprintf("m%d", i)))
	}
	ua.sync(ctx)
	bad, err := http.Post(s.HTTPURL+"/wpush/v1/not-a-token", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()

	wsMetrics := "http" + strings.TrimSuffix(strings.TrimPrefix(s.WSURL, "ws"), "/") + "/metrics"
	for _, url := range []string{s.HTTPURL + "/metrics", wsMetrics} {
		fams := opsScrape(t, url)
		checks := []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"pushlog_ingest_requests_total", map[string]string{"status": "201", "errno": "0"}, n},
			{"pushlog_ingest_requests_total", map[string]string{"status": "404", "errno": "102"}, 1},
			{"pushlog_connector_deliveries_total", nil, n},
			{"pushlog_connector_acks_total", map[string]string{"code": "100"}, n},
			{"pushlog_connector_connections", nil, 1},
			{"pushlog_breaker_state", map[string]string{"component": "ingest", "breaker": "kafka"}, 0},
		}
		for _, c := range checks {
			got, ok := opsValue(fams, c.name, c.labels)
			if !ok || got != c.want {
				t.Errorf("%s: %s%v = %v (present %v), want %v", url, c.name, c.labels, got, ok, c.want)
			}
		}
		if _, ok := opsValue(fams, "pushlog_owner_pending_messages", nil); !ok {
			t.Errorf("%s: no pushlog_owner_pending_messages", url)
		}
		if _, ok := opsValue(fams, "pushlog_projector_batches_total", map[string]string{"projector": "channels"}); !ok {
			t.Errorf("%s: no channel projector batches", url)
		}
	}
	// The lag series appear once the monitor ran.
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams := opsScrape(t, s.HTTPURL+"/metrics")
		if _, ok := opsValue(fams, "pushlog_consumer_lag", map[string]string{"group": s.opts.Namespace + "-connectors"}); ok {
			if _, ok := opsValue(fams, "pushlog_projector_lag", map[string]string{"projector": "channels"}); ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no consumer lag series")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// status reads the same figures from the node: from the announced
	// WebSocket listener, and from an explicit --node (added, not
	// replacing the discovered one).
	st := opsStatus(t, s.opts.Namespace, s.HTTPURL)
	if len(st.Metrics) != 2 {
		t.Fatalf("node metrics in status: %+v, want the discovered node and --node", st.Metrics)
	}
	for _, m := range st.Metrics {
		if m.Error != "" || m.Connections == nil || *m.Connections != 1 {
			t.Fatalf("node metrics in status: %+v", st.Metrics)
		}
		if explicit := m.URL == s.HTTPURL+"/metrics"; explicit == (m.NodeID != "") {
			t.Fatalf("node metrics %+v: want the --node URL without a node id, the discovered one with", m)
		}
	}
}

// TestOpsTopics: a fresh namespace verifies OK after --create; topics with
// a wrong partition count and a too short retention are explained, with
// the fix, and the command exits non-zero.
func TestOpsTopics(t *testing.T) {
	ns := freshNamespace()
	if out, err := opsRun(t, "topics", "--namespace", ns, "--create", "--partitions", "4"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := opsRun(t, "topics", "--namespace", ns); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("verify of created topics: %v\n%s", err, out)
	}
	if out, err := opsRun(t, "topics", "--namespace", freshNamespace()); err == nil || !strings.Contains(out, "does not exist") {
		t.Fatalf("missing topics without --create: %v\n%s", err, out)
	}

	bad := freshNamespace()
	names, _ := schema.NamesFor(bad)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaBrokers(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := testContext(t, time.Minute)
	for _, spec := range names.Specs(720 * time.Hour) {
		parts, cfg := int32(4), spec.Configs()
		switch spec.Name {
		case names.Acks:
			parts = 3
		case names.Messages:
			cfg["retention.ms"] = kadm.StringPtr("3600000")
		case names.Presence:
			cfg["cleanup.policy"] = kadm.StringPtr("delete")
		}
		if _, err := adm.CreateTopic(ctx, parts, -1, cfg, spec.Name); err != nil {
			t.Fatal(err)
		}
	}
	opsWaitFor(t, "created topics visible", func() bool {
		d, err := adm.ListTopics(ctx, names.All()...)
		if err != nil {
			return false
		}
		for _, n := range names.All() {
			if td, ok := d[n]; !ok || td.Err != nil {
				return false
			}
		}
		return true
	})
	out, err := opsRun(t, "topics", "--namespace", bad)
	if err == nil {
		t.Fatalf("mismatching topics verified OK:\n%s", out)
	}
	for _, want := range []string{
		names.Acks + " has 3 partitions but the other pushlog topics have 4",
		"kafka-topics.sh",
		names.Messages + " keeps records 1h0m0s",
		"--entity-name " + names.Messages + " --add-config retention.ms=2678400000",
		names.Presence + " has cleanup.policy=delete but must be compact",
		"--add-config cleanup.policy=compact",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, names.Registrations+" has") || strings.Contains(out, names.Channels+" has") {
		t.Errorf("a correct topic reported:\n%s", out)
	}
}

// opsWaitFor polls cond every 100ms for up to 30s.
func opsWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
