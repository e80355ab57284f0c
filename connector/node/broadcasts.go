package node

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/broadcasts"
)

// Live broadcasts ("megaphone"): the node folds <namespace>.broadcasts
// (schema/broadcasts) into the socket server's table, so a change written
// by any source (`pushlog broadcast set`, ingest's admin endpoint, a
// Megaphone poller on any node) reaches this node's subscribed clients.

// Defaults of BroadcastsConfig.
const (
	DefaultBroadcastsReadyTimeout = 10 * time.Second
	DefaultMegaphoneInterval      = 30 * time.Second // autopush-rs's megaphone_poll_interval
	DefaultMegaphoneTimeout       = 10 * time.Second
	DefaultMegaphoneMaxBody       = 1 << 20
)

// BroadcastsConfig makes the node's broadcast table live.
type BroadcastsConfig struct {
	ClientOpts []kgo.Opt   // the topic's reader; default Owner.ClientOpts
	Producer   *kgo.Client // writes the seed and Megaphone's changes; default Server.Producer
	// Seed are the versions given at start (--broadcasts; default
	// Server.Broadcasts). An id the topic does not hold yet is written to
	// it; an id the topic holds keeps the topic's version (a change made
	// since by any source wins over a restart with old flags). A seeded id
	// stays known on this node even while the topic cannot be read.
	Seed map[string]string
	// ReadyTimeout bounds how long the sockets wait, at start, for the
	// table to be read to its end (default 10s); past it they serve with
	// what was read and the seed, and the rest follows as it is read.
	ReadyTimeout time.Duration
	Megaphone    MegaphoneConfig
}

// MegaphoneConfig polls a Megaphone-compatible API, as autopush-rs does:
// GET URL with "Authorization: Bearer Token", answered
// {"broadcasts":{"id":"version",...}}. A version Megaphone changed since
// the poller's last answer is written to the topic (source megaphone)
// unless the table holds it already (megaphoneChanges). Every node that
// has a URL polls (one poller per process, no election); the writes are
// idempotent, so several pollers only repeat each other.
type MegaphoneConfig struct {
	URL        string        // "" = off
	Token      string        // sent as a bearer token when set
	Interval   time.Duration // default 30s
	Timeout    time.Duration // bounds one poll (default 10s)
	MaxBody    int64         // bounds an answer in bytes (default 1 MiB)
	HTTPClient *http.Client  // default: one with Timeout
}

// liveBroadcasts is the node's part that folds the topic, seeds it and
// polls Megaphone.
type liveBroadcasts struct {
	cfg    BroadcastsConfig
	names  schema.Names
	table  *broadcasts.Table
	server *connector.Server
	log    *slog.Logger
	met    *broadcastMetrics
	// megaSeen is Megaphone's last answer (the poller's goroutine only).
	megaSeen map[string]string
}

func (n *Node) buildBroadcasts() error {
	cfg := *n.cfg.Broadcasts
	if len(cfg.ClientOpts) == 0 {
		cfg.ClientOpts = n.cfg.Owner.ClientOpts
	}
	cfg.Producer = cmp.Or(cfg.Producer, n.cfg.Server.Producer)
	if cfg.Seed == nil {
		cfg.Seed = n.cfg.Server.Broadcasts
	}
	cfg.ReadyTimeout = cmp.Or(cfg.ReadyTimeout, DefaultBroadcastsReadyTimeout)
	mp := &cfg.Megaphone
	mp.Interval = cmp.Or(mp.Interval, DefaultMegaphoneInterval)
	mp.Timeout = cmp.Or(mp.Timeout, DefaultMegaphoneTimeout)
	mp.MaxBody = cmp.Or(mp.MaxBody, DefaultMegaphoneMaxBody)
	if mp.HTTPClient == nil {
		mp.HTTPClient = &http.Client{Timeout: mp.Timeout}
	}
	if len(cfg.ClientOpts) == 0 || cfg.Producer == nil {
		return fmt.Errorf("broadcasts: need Kafka client options and a producer")
	}
	for id, v := range cfg.Seed {
		if err := schema.ValidBroadcastID(id); err != nil {
			return fmt.Errorf("broadcasts seed: %w", err)
		}
		if err := schema.ValidBroadcastVersion(v); err != nil {
			return fmt.Errorf("broadcasts seed %s: %w", id, err)
		}
	}
	names := n.cfg.Server.Names
	if names.Messages == "" {
		names = schema.DefaultNames()
	}
	met, err := newBroadcastMetrics(n.cfg.Metrics)
	if err != nil {
		return fmt.Errorf("broadcasts: %w", err)
	}
	b := &liveBroadcasts{cfg: cfg, names: names, server: n.server, log: n.cfg.Logger.With("role", "broadcasts"), met: met}
	b.table, err = broadcasts.New(broadcasts.Config{
		ClientOpts: cfg.ClientOpts,
		Names:      names,
		OnChange:   b.changed,
		OnIgnored:  met.ignore,
		Logger:     b.log,
	})
	if err != nil {
		return err
	}
	if met != nil {
		met.table = b.table
	}
	n.bcast = b
	n.parts.broadcasts = b.run
	return nil
}

// run folds the topic until ctx ends; once it was read to its end it
// writes the seed's missing ids and polls Megaphone.
func (b *liveBroadcasts) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- b.table.Run(ctx) }()
	select {
	case <-b.table.Ready():
	case err := <-errc:
		return err
	}
	b.apply(b.table.Snapshot())
	b.seed(ctx)
	if b.cfg.Megaphone.URL != "" {
		go b.pollMegaphone(ctx)
	}
	return <-errc
}

// waitReady waits until the table was read to its end, ReadyTimeout or
// ctx ends.
func (b *liveBroadcasts) waitReady(ctx context.Context) {
	t := time.NewTimer(b.cfg.ReadyTimeout)
	defer t.Stop()
	select {
	case <-b.table.Ready():
	case <-t.C:
		b.log.Warn("broadcasts not read to the end yet; serving with the seed meanwhile", "waited", b.cfg.ReadyTimeout)
	case <-ctx.Done():
	}
}

// changed is the fold's callback: count by source, then apply.
func (b *liveBroadcasts) changed(table map[string]string, changed map[string]schema.Broadcast) {
	for _, c := range changed {
		b.met.change(c.Source)
	}
	b.apply(table)
}

// apply sets the socket server's table: the seed overlaid by the topic.
func (b *liveBroadcasts) apply(table map[string]string) {
	eff := maps.Clone(b.cfg.Seed)
	if eff == nil {
		eff = map[string]string{}
	}
	maps.Copy(eff, table)
	b.met.sent(b.server.SetBroadcasts(eff))
}

// seed writes the seed's ids the topic does not hold.
func (b *liveBroadcasts) seed(ctx context.Context) {
	have := b.table.Snapshot()
	missing := map[string]string{}
	for id, v := range b.cfg.Seed {
		if _, ok := have[id]; !ok {
			missing[id] = v
		}
	}
	if len(missing) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.Megaphone.Timeout)
	defer cancel()
	if err := broadcasts.Write(wctx, b.cfg.Producer, b.names, missing, "seed"); err != nil {
		b.log.Warn("broadcasts: seed not written (this node still knows it)", "err", err)
		return
	}
	b.log.Info("broadcasts: seeded the topic", "ids", len(missing))
}

// broadcastMetrics are the live table's series; nil records nothing.
type broadcastMetrics struct {
	changes *prometheus.CounterVec
	frames  prometheus.Counter
	ignored *prometheus.CounterVec
	polls   *prometheus.CounterVec
	table   *broadcasts.Table
}

func newBroadcastMetrics(reg prometheus.Registerer) (*broadcastMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &broadcastMetrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_broadcast_changes_total",
			Help: "Broadcast versions changed in this node's table (new id or new version), by the source that wrote them (cli, admin, megaphone, seed).",
		}, []string{"source"}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushlog_broadcast_frames_sent_total",
			Help: "Broadcast frames sent to subscribed clients because a version changed.",
		}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_broadcast_records_ignored_total",
			Help: "Records of the broadcasts topic not folded, by reason (invalid: id or version outside the format; table_full: a new id past the bound of ids).",
		}, []string{"reason"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushlog_broadcast_megaphone_polls_total",
			Help: "Polls of the Megaphone API, by result (ok, fetch, status, too_large, invalid, write).",
		}, []string{"result"}),
	}
	ids := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushlog_broadcast_ids",
		Help: "Broadcast ids in this node's table (bounded by schema.MaxBroadcasts).",
	}, func() float64 {
		if m.table == nil {
			return 0
		}
		return float64(len(m.table.Snapshot()))
	})
	for _, c := range []prometheus.Collector{m.changes, m.frames, m.ignored, m.polls, ids} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *broadcastMetrics) change(source string) {
	if m == nil {
		return
	}
	switch source {
	case "cli", "admin", "megaphone", "seed":
	default:
		source = "other" // the header is written by whoever can write to Kafka
	}
	m.changes.WithLabelValues(source).Inc()
}

func (m *broadcastMetrics) sent(n int) {
	if m != nil && n > 0 {
		m.frames.Add(float64(n))
	}
}

func (m *broadcastMetrics) ignore(reason string) {
	if m != nil {
		m.ignored.WithLabelValues(reason).Inc()
	}
}

func (m *broadcastMetrics) poll(result string) {
	if m != nil {
		m.polls.WithLabelValues(result).Inc()
	}
}
