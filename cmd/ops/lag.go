// Package ops holds pushlog's operator tooling that reads Kafka directly:
// consumer lag (for `pushlog status` and the pushlog_consumer_lag series),
// topic verification (`pushlog topics`) and the cluster status.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/cmd/internal/metrics"
	"github.com/pushlog/pushlog/schema"
)

// Group is one pushlog consumer group and the topics it consumes.
type Group struct {
	Role   string // "connectors", "channels" or "analytics"
	Name   string // the group name in the namespace
	Topics []string
	// LowWatermark: the group commits below records it has read (the
	// connectors commit their oldest unsettled message), so its commit
	// says nothing of how far it has read. The other groups commit what
	// they have folded.
	LowWatermark bool
	// Positions returns the next offsets to read per topic and partition
	// as known in this process (a local owner's fold positions); nil or a
	// missing partition: unknown here.
	Positions func() map[string]map[int32]int64
}

// Groups returns pushlog's consumer groups in the namespace of names.
func Groups(names schema.Names) []Group {
	var at []string
	for _, t := range analytics.Topics() {
		at = append(at, names.FromDefault(t))
	}
	return []Group{
		{Role: "connectors", Name: names.Group("connectors"), Topics: []string{names.Messages, names.Acks, names.Registrations}, LowWatermark: true},
		{Role: "channels", Name: names.Group("channels"), Topics: []string{names.Registrations}},
		{Role: "analytics", Name: names.Group("analytics"), Topics: at},
	}
}

// PartitionLag is one group's lag on one partition.
type PartitionLag struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Committed is the group's committed offset, -1 when it has none (the
	// lag then counts every record still in the log).
	Committed int64 `json:"committed"`
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
	Lag       int64 `json:"lag"`
	// Position is the next offset the group will read (-1: unknown in
	// this process); HeadLag is End − Position, the records it has not
	// read yet (-1: unknown). For groups that commit what they fold they
	// equal Committed and Lag.
	Position int64 `json:"position"`
	HeadLag  int64 `json:"head_lag"`
}

// GroupLag is one group's lag over its topics.
type GroupLag struct {
	Role    string `json:"role"`
	Group   string `json:"group"`
	State   string `json:"state"` // Stable, Empty, Dead, PreparingRebalance...
	Members int    `json:"members"`
	// Exists: the group has members or committed offsets (a group that
	// never ran has neither).
	Exists bool  `json:"exists"`
	Total  int64 `json:"total"`
	// HeadTotal sums the known HeadLag of the partitions (for the
	// connectors group: those owned in this process).
	HeadTotal  int64          `json:"head_total"`
	Partitions []PartitionLag `json:"partitions"`
}

// Lag computes end offset − committed offset for every partition of each
// group's topics. A partition without a commit counts from its log start:
// records nobody consumed yet (a group that never ran) are lag, which is
// what an operator needs to see after connectors were down. For the
// connectors group the committed offsets are the owners' low watermarks,
// so its lag on messages also covers messages still pending for offline
// user agents; its head lag (End − Position) does not, and is known where
// the group's Positions are.
func Lag(ctx context.Context, adm *kadm.Client, groups []Group) ([]GroupLag, error) {
	var topics []string
	for _, g := range groups {
		topics = append(topics, g.Topics...)
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.Name
	}
	described, err := adm.DescribeGroups(ctx, names...)
	if err != nil && !errors.Is(err, kadm.ErrEmpty) {
		return nil, fmt.Errorf("describe groups: %w", err)
	}
	out := make([]GroupLag, 0, len(groups))
	for _, g := range groups {
		committed, err := adm.FetchOffsets(ctx, g.Name)
		if err == nil {
			err = committed.Error()
		}
		if errors.Is(err, kerr.GroupIDNotFound) {
			committed, err = nil, nil // never ran: nothing committed
		}
		if err != nil {
			return nil, fmt.Errorf("fetch offsets of %s: %w", g.Name, err)
		}
		var positions map[string]map[int32]int64
		if g.Positions != nil {
			positions = g.Positions()
		}
		gl := GroupLag{Role: g.Role, Group: g.Name, State: "Dead"}
		if d, ok := described[g.Name]; ok && d.Err == nil {
			gl.State, gl.Members = d.State, len(d.Members)
			gl.Exists = gl.Members > 0
		}
		for _, t := range g.Topics {
			ends.Each(func(lo kadm.ListedOffset) {
				if lo.Topic != t {
					return
				}
				pl := PartitionLag{Group: g.Name, Topic: t, Partition: lo.Partition, Committed: -1, End: lo.Offset}
				if s, ok := starts.Lookup(t, lo.Partition); ok {
					pl.Start = s.Offset
				}
				from := pl.Start
				if c, ok := committed.Lookup(t, lo.Partition); ok && c.At >= 0 {
					pl.Committed, from = c.At, c.At
					gl.Exists = true
				}
				pl.Lag = max(pl.End-from, 0)
				gl.Total += pl.Lag
				pl.Position, pl.HeadLag = headLag(g, positions, pl, from)
				gl.HeadTotal += max(pl.HeadLag, 0)
				gl.Partitions = append(gl.Partitions, pl)
			})
		}
		sort.Slice(gl.Partitions, func(i, j int) bool {
			a, b := gl.Partitions[i], gl.Partitions[j]
			if a.Topic != b.Topic {
				return a.Topic < b.Topic
			}
			return a.Partition < b.Partition
		})
		out = append(out, gl)
	}
	return out, nil
}

// headLag is a partition's read position and End − position, or -1, -1
// when the position is unknown here. The position was read after End:
// it may be past it, which is no lag.
func headLag(g Group, positions map[string]map[int32]int64, pl PartitionLag, from int64) (pos, lag int64) {
	if p, ok := positions[pl.Topic][pl.Partition]; ok {
		return p, max(pl.End-p, 0)
	}
	if g.LowWatermark {
		return -1, -1
	}
	return from, max(pl.End-from, 0)
}

// LagMonitor computes the groups' lag periodically and exports it as
// pushlog_consumer_lag{group,topic,partition}, pushlog_consumer_group_lag{group}
// and pushlog_projector_lag{projector} (the channels and analytics groups),
// which count from the committed offset, and the head lag (records not
// read yet) as pushlog_consumer_head_lag{group,topic,partition} and
// pushlog_consumer_group_head_lag{group}: for the connectors group only
// the partitions whose positions this process knows (WatchPositions).
// Scrapes read the last result; they never wait on Kafka.
type LagMonitor struct {
	adm      Admin
	groups   []Group
	interval time.Duration
	log      *slog.Logger

	mu        sync.Mutex
	last      []GroupLag
	positions map[string]func() map[string]map[int32]int64 // by role

	partDesc, groupDesc, projDesc *prometheus.Desc
	headDesc, groupHeadDesc       *prometheus.Desc
	errors                        prometheus.Counter
}

// Admin runs admin requests: group.Admin in a server (it survives a dead
// group coordinator).
type Admin interface {
	Do(ctx context.Context, fn func(*kadm.Client) error) error
}

// NewLagMonitor returns a monitor of groups every interval (default 15s).
func NewLagMonitor(adm Admin, groups []Group, interval time.Duration, logger *slog.Logger) *LagMonitor {
	if interval <= 0 {
		interval = 15 * time.Second
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &LagMonitor{
		adm: adm, groups: groups, interval: interval, log: logger.With("component", "lag-monitor"),
		partDesc: prometheus.NewDesc(metrics.Name("consumer", "lag"),
			"Records behind: end offset minus committed offset (log start when nothing is committed), per group, topic and partition.",
			[]string{"group", "topic", "partition"}, nil),
		groupDesc: prometheus.NewDesc(metrics.Name("consumer", "group_lag"),
			"Sum of pushlog_consumer_lag per group.", []string{"group"}, nil),
		projDesc: prometheus.NewDesc(metrics.Name("projector", "lag"),
			"Records the projector has not committed yet, over its topics.", []string{"projector"}, nil),
		headDesc: prometheus.NewDesc(metrics.Name("consumer", "head_lag"),
			"Records the group has not read yet: end offset minus the group's read position, per group, topic and partition (connectors: the partitions this process owns).",
			[]string{"group", "topic", "partition"}, nil),
		groupHeadDesc: prometheus.NewDesc(metrics.Name("consumer", "group_head_lag"),
			"Sum of pushlog_consumer_head_lag per group (connectors: over the partitions this process owns).", []string{"group"}, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metrics.Name("consumer", "lag_errors_total"),
			Help: "Lag computations that failed (Kafka unreachable).",
		}),
	}
}

// WatchPositions gives the monitor the read positions of role's group as
// this process knows them (a connector node's owner), for its head lag.
func (m *LagMonitor) WatchPositions(role string, fn func() map[string]map[int32]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.positions == nil {
		m.positions = make(map[string]func() map[string]map[int32]int64)
	}
	m.positions[role] = fn
}

// Run refreshes the lag until ctx ends.
func (m *LagMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh computes the lag once.
func (m *LagMonitor) Refresh(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, m.interval)
	defer cancel()
	var lags []GroupLag
	err := m.adm.Do(cctx, func(adm *kadm.Client) (err error) {
		lags, err = Lag(cctx, adm, m.withPositions())
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			m.errors.Inc()
			m.log.Warn("consumer lag", "err", err)
		}
		return
	}
	m.mu.Lock()
	m.last = lags
	m.mu.Unlock()
}

// withPositions is the monitored groups with the watched positions.
func (m *LagMonitor) withPositions() []Group {
	m.mu.Lock()
	defer m.mu.Unlock()
	groups := slices.Clone(m.groups)
	for i, g := range groups {
		if fn := m.positions[g.Role]; fn != nil && g.Positions == nil {
			groups[i].Positions = fn
		}
	}
	return groups
}

// Describe implements prometheus.Collector.
func (m *LagMonitor) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.partDesc
	ch <- m.groupDesc
	ch <- m.projDesc
	ch <- m.headDesc
	ch <- m.groupHeadDesc
	m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *LagMonitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	last := m.last
	m.mu.Unlock()
	for _, g := range last {
		headKnown := false
		for _, p := range g.Partitions {
			ch <- prometheus.MustNewConstMetric(m.partDesc, prometheus.GaugeValue, float64(p.Lag), g.Group, p.Topic, strconv.Itoa(int(p.Partition)))
			if p.HeadLag >= 0 {
				headKnown = true
				ch <- prometheus.MustNewConstMetric(m.headDesc, prometheus.GaugeValue, float64(p.HeadLag), g.Group, p.Topic, strconv.Itoa(int(p.Partition)))
			}
		}
		ch <- prometheus.MustNewConstMetric(m.groupDesc, prometheus.GaugeValue, float64(g.Total), g.Group)
		if headKnown { // a process that knows no position of the group does not claim 0
			ch <- prometheus.MustNewConstMetric(m.groupHeadDesc, prometheus.GaugeValue, float64(g.HeadTotal), g.Group)
		}
		if g.Role == "channels" || g.Role == "analytics" {
			ch <- prometheus.MustNewConstMetric(m.projDesc, prometheus.GaugeValue, float64(g.Total), g.Role)
		}
	}
	m.errors.Collect(ch)
}
