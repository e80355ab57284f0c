package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/schema"
)

// Status is what `pushlog status --json` prints. Fields are only ever
// added (scripts may rely on them).
type Status struct {
	Namespace string    `json:"namespace"`
	Time      time.Time `json:"time"`
	// Nodes are the members of the connectors group (the partition owners).
	Nodes []Node `json:"nodes"`
	// Owners maps each partition number to the node owning it; a partition
	// missing here has no owner (no connector running, or a rebalance).
	Owners []PartitionOwner `json:"partition_owners"`
	// Groups is the lag of every consumer group per topic and partition.
	Groups []GroupLag `json:"groups"`
	// Metrics are the figures that live in processes (connections,
	// pending messages, breakers, projector counters), scraped from the
	// /metrics of every node that announced a metrics address and of each
	// --node URL.
	Metrics []NodeMetrics `json:"node_metrics"`
}

// Node is one member of the connectors group.
type Node struct {
	NodeID   string `json:"node_id"` // from the Kafka client id "pushlog-<node id>"
	MemberID string `json:"member_id"`
	Host     string `json:"host"`
	LinkAddr string `json:"link_addr,omitempty"` // node-link address (cluster mode)
	// MetricsAddr is the host:port the node announced for GET /metrics
	// (absent from nodes of older versions, or on a wildcard listener the
	// node could not name).
	MetricsAddr string  `json:"metrics_addr,omitempty"`
	Partitions  []int32 `json:"partitions"`
}

// PartitionOwner is the owner of one partition number.
type PartitionOwner struct {
	Partition int32  `json:"partition"`
	NodeID    string `json:"node_id"`
	LinkAddr  string `json:"link_addr,omitempty"`
}

// NodeMetrics are one process's figures from its /metrics.
type NodeMetrics struct {
	URL string `json:"url"`
	// NodeID is the connector node that announced URL ("" for a --node
	// URL that no member announced).
	NodeID string `json:"node_id,omitempty"`
	Error  string `json:"error,omitempty"`
	// Each is absent when the process does not run that role.
	Connections     *float64 `json:"connections,omitempty"`
	Pending         *float64 `json:"pending_messages,omitempty"`
	OwnedPartitions *float64 `json:"owned_partitions,omitempty"`
	Unacked         *float64 `json:"unacked,omitempty"`
	// Breakers maps "component/breaker" to closed, half-open or open.
	Breakers map[string]string `json:"breakers,omitempty"`
	// Projectors maps a projector (channels, analytics) to its counters.
	Projectors map[string]ProjectorMetrics `json:"projectors,omitempty"`
	// Requests is ingest's answers by "status/errno".
	Requests map[string]float64 `json:"ingest_requests,omitempty"`
}

// ProjectorMetrics are one projector's counters in one process.
type ProjectorMetrics struct {
	Batches float64 `json:"batches"`
	Records float64 `json:"records"`
	Rows    float64 `json:"rows"`
}

// StatusConfig configures GetStatus.
type StatusConfig struct {
	Names schema.Names
	// NodeURLs are metrics URLs of pushlog processes (http://host:port/metrics
	// of a WebSocket, ingest or --metrics-addr listener); "/metrics" is
	// added when the URL has no path. They are scraped in addition to the
	// metrics addresses the connector nodes announce.
	NodeURLs []string
	// IncludeAnalytics lists the analytics group even when it never ran.
	IncludeAnalytics bool
	HTTPClient       *http.Client
}

// GetStatus gathers the status from Kafka and the nodes' /metrics.
func GetStatus(ctx context.Context, adm *kadm.Client, c StatusConfig) (*Status, error) {
	st := &Status{Namespace: c.Names.Namespace, Time: time.Now().UTC()}
	nodes, owners, err := connectorNodes(ctx, adm, c.Names)
	if err != nil {
		return nil, err
	}
	st.Nodes, st.Owners = nodes, owners
	lags, err := Lag(ctx, adm, Groups(c.Names))
	if err != nil {
		return nil, err
	}
	for _, g := range lags {
		if g.Role == "analytics" && !g.Exists && !c.IncludeAnalytics {
			continue // analytics not configured: its "lag" would be the whole log
		}
		st.Groups = append(st.Groups, g)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	for _, t := range scrapeTargets(st.Nodes, c.NodeURLs) {
		nm := ScrapeNode(ctx, hc, t.url)
		nm.NodeID = t.nodeID
		st.Metrics = append(st.Metrics, nm)
	}
	return st, nil
}

type scrapeTarget struct{ url, nodeID string }

// scrapeTargets are the announced metrics addresses of the nodes, then the
// explicit URLs, each URL once (a --node naming a discovered node adds
// nothing).
func scrapeTargets(nodes []Node, explicit []string) []scrapeTarget {
	var out []scrapeTarget
	seen := map[string]bool{}
	add := func(raw, nodeID string) {
		u := MetricsURL(raw)
		if seen[u] {
			return
		}
		seen[u] = true
		out = append(out, scrapeTarget{url: u, nodeID: nodeID})
	}
	for _, n := range nodes {
		if n.MetricsAddr != "" {
			add(n.MetricsAddr, n.NodeID)
		}
	}
	for _, u := range explicit {
		add(u, "")
	}
	return out
}

// connectorNodes describes the connectors group: its members and who
// owns each partition of the messages topic.
func connectorNodes(ctx context.Context, adm *kadm.Client, names schema.Names) ([]Node, []PartitionOwner, error) {
	group := names.Group("connectors")
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil && !errors.Is(err, kadm.ErrEmpty) {
		return nil, nil, fmt.Errorf("describe group %s: %w", group, err)
	}
	g, ok := described[group]
	if !ok || g.Err != nil {
		return nil, nil, nil
	}
	var nodes []Node
	var owners []PartitionOwner
	for _, m := range g.Members {
		n := Node{NodeID: strings.TrimPrefix(m.ClientID, "pushlog-"), MemberID: m.MemberID, Host: m.ClientHost}
		if meta, ok := m.Join.AsConsumer(); ok {
			info := owner.MemberInfoOf(meta.UserData)
			n.LinkAddr, n.MetricsAddr = info.LinkAddr, info.MetricsAddr
		}
		if as, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range as.Topics {
				if t.Topic != names.Messages {
					continue
				}
				n.Partitions = append(n.Partitions, t.Partitions...)
			}
		}
		sort.Slice(n.Partitions, func(i, j int) bool { return n.Partitions[i] < n.Partitions[j] })
		for _, p := range n.Partitions {
			owners = append(owners, PartitionOwner{Partition: p, NodeID: n.NodeID, LinkAddr: n.LinkAddr})
		}
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].NodeID < nodes[j].NodeID })
	sort.Slice(owners, func(i, j int) bool { return owners[i].Partition < owners[j].Partition })
	return nodes, owners, nil
}

// MetricsURL makes a full metrics URL of host:port or a URL without a path.
func MetricsURL(raw string) string {
	u := raw
	if !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"), "/") {
		u = strings.TrimRight(u, "/") + "/metrics"
	}
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		u = "http://" + u
	}
	return u
}

// ScrapeNode reads one process's /metrics; a failure is reported in Error.
func ScrapeNode(ctx context.Context, hc *http.Client, rawURL string) NodeMetrics {
	u := MetricsURL(rawURL)
	nm := NodeMetrics{URL: u}
	fams, err := scrape(ctx, hc, u)
	if err != nil {
		nm.Error = err.Error()
		return nm
	}
	fillNodeMetrics(&nm, fams)
	return nm
}

func scrape(ctx context.Context, hc *http.Client, u string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", u, err)
	}
	return fams, nil
}

func fillNodeMetrics(nm *NodeMetrics, fams map[string]*dto.MetricFamily) {
	one := func(name string) *float64 {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			return nil
		}
		v := value(f.GetMetric()[0])
		return &v
	}
	nm.Connections = one("pushlog_connector_connections")
	nm.Pending = one("pushlog_owner_pending_messages")
	nm.OwnedPartitions = one("pushlog_owner_partitions")
	nm.Unacked = one("pushlog_router_unacked")
	if f := fams["pushlog_breaker_state"]; f != nil {
		nm.Breakers = map[string]string{}
		for _, m := range f.GetMetric() {
			l := labels(m)
			nm.Breakers[l["component"]+"/"+l["breaker"]] = breakerName(value(m))
		}
	}
	for name, set := range map[string]func(*ProjectorMetrics, float64){
		"pushlog_projector_batches_total": func(p *ProjectorMetrics, v float64) { p.Batches = v },
		"pushlog_projector_records_total": func(p *ProjectorMetrics, v float64) { p.Records = v },
		"pushlog_projector_rows_total":    func(p *ProjectorMetrics, v float64) { p.Rows = v },
	} {
		f := fams[name]
		if f == nil {
			continue
		}
		if nm.Projectors == nil {
			nm.Projectors = map[string]ProjectorMetrics{}
		}
		for _, m := range f.GetMetric() {
			p := labels(m)["projector"]
			pm := nm.Projectors[p]
			set(&pm, value(m))
			nm.Projectors[p] = pm
		}
	}
	if f := fams["pushlog_ingest_requests_total"]; f != nil {
		nm.Requests = map[string]float64{}
		for _, m := range f.GetMetric() {
			l := labels(m)
			nm.Requests[l["status"]+"/"+l["errno"]] = value(m)
		}
	}
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

func breakerName(v float64) string {
	switch v {
	case 0:
		return "closed"
	case 1:
		return "half-open"
	case 2:
		return "open"
	}
	return fmt.Sprint(v)
}
