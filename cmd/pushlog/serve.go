package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/cmd/internal/embedded"
	"github.com/pushlog/pushlog/cmd/internal/gctune"
	"github.com/pushlog/pushlog/cmd/internal/metrics"
	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/connector/node"
	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/ingest"
	"github.com/pushlog/pushlog/projector"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/group"
)

type serveCmd struct {
	serveConfig `embed:""`
}

func (s *serveCmd) Run(ctx context.Context, logger *slog.Logger) error {
	cfg := &s.serveConfig
	stableID := cfg.NodeID == "" // validate fills a random one
	if err := cfg.validate(); err != nil {
		return err
	}
	if len(cfg.KafkaBrokers) == 0 {
		// Before the key file: one process owns an embedded data directory.
		lock, err := embedded.LockDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
	}
	if stableID {
		id, lock, err := stableNodeID(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
		cfg.NodeID = id
	}
	keys, err := cfg.sealingKeys(ctx)
	if err != nil {
		return err
	}
	names, _ := schema.NamesFor(cfg.Namespace) // validated
	sealer, err := schema.NewSealer(keys)
	if err != nil {
		return err
	}
	embeddedBroker := len(cfg.KafkaBrokers) == 0
	clientOpts := []kgo.Opt{kgo.ClientID("pushlog-" + cfg.NodeID)}
	if embeddedBroker {
		// This process's clients reach its broker through pipes, not
		// loopback TCP (see embedded.Local).
		local := embedded.NewLocal(logger.With("role", "embedded-kafka"))
		cluster, err := startEmbedded(cfg, local, logger)
		if err != nil {
			return err
		}
		defer cluster.Close()
		cfg.KafkaBrokers = cluster.ListenAddrs()
		clientOpts = append(clientOpts, kgo.Dialer(local.Dial))
	}
	clientOpts = append(clientOpts, kgo.SeedBrokers(cfg.KafkaBrokers...))
	producer, err := kgo.NewClient(append(clientOpts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),                             // a push waits for its own append: no batching delay
		kgo.ProducerBatchCompression(kgo.NoCompression()), // bodies are encrypted: incompressible
		kgo.RecordDeliveryTimeout(cfg.ProduceTimeout),
		// After a broker dies, the producer learns the new leaders from
		// metadata; kgo's default throttles refreshes to one per 5 s, which
		// would add up to 5 s to every leadership move.
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.DisableClientMetrics(),
	)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer producer.Close()
	if err := ensureTopics(ctx, clientOpts, cfg, names, logger); err != nil {
		return err
	}
	logger.Info("pushlog starting", "version", readBuildVersion().String(), "node", cfg.NodeID, "roles", cfg.Roles,
		"kafka", cfg.KafkaBrokers, "public_url", cfg.PublicURL)

	met := newServeMetrics(logger)
	sup, err := newSupervisor(met.reg, logger)
	if err != nil {
		return err
	}
	g := newRunGroup(ctx, logger, sup)
	g.ops = newServeOps(cfg, kadm.NewClient(producer), sup, logger)
	// The lag monitor's and the console's group requests: each its own
	// client, replaced when a group coordinator died (group.Admin), so a
	// slow refresh of one never holds the other.
	lagAdm, err := group.NewAdmin(clientOpts...)
	if err != nil {
		return g.abort(err, cfg.ShutdownTimeout)
	}
	defer lagAdm.Close()
	consoleAdm, err := group.NewAdmin(clientOpts...)
	if err != nil {
		return g.abort(err, cfg.ShutdownTimeout)
	}
	defer consoleAdm.Close()
	if err := met.startLagMonitor(g, cfg, names, lagAdm, logger); err != nil {
		return g.abort(fmt.Errorf("metrics: %w", err), cfg.ShutdownTimeout)
	}
	if embeddedBroker {
		if err := startTrimmer(g, cfg, names, producer, met, logger); err != nil {
			return g.abort(fmt.Errorf("embedded trimmer: %w", err), cfg.ShutdownTimeout)
		}
	}
	metricsBound := "" // the --metrics-addr listener's bound address
	if cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return g.abort(fmt.Errorf("--metrics-addr: %w", err), cfg.ShutdownTimeout)
		}
		metricsBound = ln.Addr().String()
		g.ops.listening(listenerMetrics, metricsBound)
		healthH := g.ops.healthHandler(g.ops.processRoles()...)
		g.start("metrics", func(ctx context.Context) error { return serveMetricsAddr(ctx, ln, met.handler, healthH, logger) })
	}
	if err := startConsole(g, cfg, names, consoleAdm, met, logger); err != nil {
		return g.abort(err, cfg.ShutdownTimeout)
	}
	if cfg.GCHeadroom > 0 {
		g.start("gctune", gctune.New(gctune.Config{Headroom: cfg.GCHeadroom, Registerer: met.reg}).Run)
	}
	if cfg.DebugAddr != "" {
		ln, err := net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			return g.abort(fmt.Errorf("--debug-addr: %w", err), cfg.ShutdownTimeout)
		}
		g.ops.listening(listenerDebug, ln.Addr().String())
		g.start("debug", func(ctx context.Context) error { return serveDebug(ctx, ln, logger) })
	}
	if cfg.has(roleProjector) {
		if err := startProjectors(g, cfg, names, clientOpts, producer, met, logger); err != nil {
			return g.abort(err, cfg.ShutdownTimeout)
		}
	}
	if cfg.has(roleConnector) {
		in := connectorInputs{g: g, cfg: cfg, names: names, clientOpts: clientOpts, producer: producer, sealer: sealer,
			met: met, metricsBound: metricsBound, logger: logger}
		if err := startConnector(in); err != nil {
			return g.abort(err, cfg.ShutdownTimeout)
		}
	}
	if cfg.has(roleIngest) {
		if err := startIngest(g, cfg, names, clientOpts, producer, sealer, met, logger); err != nil {
			return g.abort(err, cfg.ShutdownTimeout)
		}
	}
	// After every listener is bound: the banner shows their addresses.
	defer g.ops.announce(embeddedBroker, os.Stdout)()
	err = g.wait(cfg.ShutdownTimeout)
	logger.Info("pushlog stopped")
	return err
}

// ensureTopics creates the topics; EnsureTopics waits until the brokers
// show them with leaders.
// It uses its own client: kadm reads topic metadata through the client's
// cache, which a client refreshes at most every MetadataMinAge (5 s by
// default), so polling for new topics on the shared producer made every
// start on fresh topics wait 5 s.
func ensureTopics(ctx context.Context, clientOpts []kgo.Opt, cfg *serveConfig, names schema.Names, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts), kgo.MetadataMinAge(50*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("kafka admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	minInsync, err := schema.MinInsyncFor(ctx, adm, cfg.MinInsync, cfg.Replication)
	if err != nil {
		// Not fatal: the topics still work; `pushlog topics` names the fix.
		logger.Warn("could not read the brokers' default.replication.factor; topics created now keep the broker's min.insync.replicas",
			"err", err)
	}
	specs := schema.WithMinInsync(names.Specs(cfg.MaxTTL), minInsync)
	if err := schema.EnsureTopics(ctx, adm, specs, cfg.Partitions, cfg.Replication); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	return nil
}

func startProjectors(g *runGroup, cfg *serveConfig, names schema.Names, clientOpts []kgo.Opt, producer *kgo.Client, met *serveMetrics, logger *slog.Logger) error {
	p, err := projector.NewChannelProjector(projector.ChannelProjectorConfig{ClientOpts: clientOpts, Producer: producer, Names: names, UAIDExpiry: cfg.UAIDExpiry, Logger: logger, Metrics: met.reg})
	if err != nil {
		return fmt.Errorf("channel projector: %w", err)
	}
	// Both projectors' Run may be called again after a failure (what they
	// did not commit is projected again); ingest and the sockets do not
	// depend on them, so a failure is restarted, not fatal.
	g.supervise("channel-projector", p.Run)
	if cfg.ClickHouseAddr != "" {
		// ClickHouse is optional: the projector connects (and migrates)
		// inside Run, waiting with back-off while ClickHouse is down, and
		// catches up from its committed offsets once it answers.
		ap, err := newAnalyticsProjector(cfg, names, clientOpts, met.reg, logger.With("role", "analytics-projector"))
		if err != nil {
			return fmt.Errorf("analytics projector: %w", err)
		}
		if err := met.reg.Register(metrics.BreakerGauge("analytics", "clickhouse", ap.BreakerState)); err != nil {
			return fmt.Errorf("analytics projector: %w", err)
		}
		g.ops.setClickHouse(ap)
		g.supervise("analytics-projector", ap.Run)
	}
	return nil
}

// connectorInputs is what the connector node is built from: the flags and
// what serve made for every role.
type connectorInputs struct {
	g          *runGroup
	cfg        *serveConfig
	names      schema.Names
	clientOpts []kgo.Opt
	producer   *kgo.Client
	sealer     *schema.Sealer
	met        *serveMetrics
	// metricsBound is the bound --metrics-addr listener ("" when off); it
	// or else the WebSocket listener is announced as this node's metrics
	// address.
	metricsBound string
	logger       *slog.Logger
}

// startConnector maps the flags to the connector node's config and runs
// it (the node owns its components and their shutdown order).
func startConnector(in connectorInputs) (err error) {
	cl, err := listenLink(in.cfg, in.logger) // nil: single node
	if err != nil {
		return err
	}
	// Listen before the owner joins its group: the WebSocket listener's
	// bound address may be the metrics address it announces there.
	ln, err := net.Listen("tcp", in.cfg.WSAddr)
	if err != nil {
		return fmt.Errorf("--ws-addr: %w", err)
	}
	defer func() {
		if err != nil {
			_ = ln.Close()
		}
	}()
	in.logger.Info("websocket listener", "addr", ln.Addr().String())
	in.g.ops.listening(listenerWS, ln.Addr().String())
	metricsBound := in.metricsBound
	if metricsBound == "" {
		metricsBound = ln.Addr().String() // it serves GET /metrics too
	}
	linkAdvertise := ""
	if cl != nil {
		linkAdvertise = cl.Advertise
	}
	metricsAdv, why := advertiseMetrics(metricsBound, linkAdvertise)
	if why != "" {
		in.logger.Warn("metrics address not announced to the connectors group; `pushlog status` needs --node for this node", "reason", why)
	}
	ob, err := ownerBridges(in.cfg.bridgeFlags) // bridges.go (issue 14)
	if err != nil {
		return err
	}
	n, err := node.New(node.Config{
		Server: connector.Config{
			Names:          in.names,
			NodeID:         in.cfg.NodeID,
			PublicURL:      in.cfg.PublicURL,
			Sealer:         in.sealer,
			Producer:       in.producer,
			HelloTimeout:   in.cfg.HelloTimeout,
			PingInterval:   in.cfg.PingInterval,
			PongTimeout:    in.cfg.PongTimeout,
			MinClientPing:  in.cfg.MinClientPing,
			Broadcasts:     in.cfg.Broadcasts,
			ProduceTimeout: in.cfg.ProduceTimeout,
			MetricsHandler: in.met.handler,
			HealthHandler:  in.g.ops.healthHandler("connector"),

			MaxChannels:                  in.cfg.MaxChannels,
			MaxRegistrationsPerMinute:    in.cfg.MaxRegistrationsPerMinute,
			MaxMessagesPerMinute:         in.cfg.MaxClientMessagesPerMinute,
			MaxConnectionsPerIPPerMinute: in.cfg.connectionsPerIP(),
		},
		Owner: owner.Config{
			ClientOpts:   in.clientOpts,
			Names:        in.names,
			Producer:     in.producer,
			Partitions:   in.cfg.Partitions,
			Sealer:       in.sealer,
			NodeID:       in.cfg.NodeID,
			PendingLimit: in.cfg.PendingLimit,
			UAIDExpiry:   in.cfg.UAIDExpiry,
			GroupOpts:    []kgo.Opt{kgo.SessionTimeout(in.cfg.GroupSessionTimeout), kgo.HeartbeatInterval(in.cfg.GroupHeartbeat)},
			MetricsAddr:  metricsAdv,
			Bridges:      ob,
		},
		Listener:        ln,
		Cluster:         cl,
		Broadcasts:      &node.BroadcastsConfig{Megaphone: node.MegaphoneConfig{URL: in.cfg.MegaphoneURL, Token: in.cfg.MegaphoneToken, Interval: in.cfg.MegaphoneInterval}},
		DrainTimeout:    in.cfg.DrainTimeout,
		ShutdownTimeout: in.cfg.ShutdownTimeout,
		Logger:          in.logger,
		Metrics:         in.met.reg,
	})
	if err != nil {
		if cl != nil {
			_ = cl.Listener.Close()
		}
		return err
	}
	if err := in.met.reg.Register(metrics.Breakers("bridge", n.BridgeBreakers)); err != nil { // bridges.go: one per app
		return fmt.Errorf("bridges: %w", err)
	}
	if cl != nil {
		if err := in.met.reg.Register(metrics.Breakers("link", n.LinkBreakers)); err != nil {
			_ = cl.Listener.Close()
			return fmt.Errorf("node link: %w", err)
		}
	}
	if in.met.lag != nil {
		in.met.lag.WatchPositions("connectors", n.FoldPositions) // pushlog_consumer_head_lag
	}
	// The node cannot be run again in this process; its failure must not
	// take ingest down with it.
	in.g.startNonFatal("connector", n.Run)
	return nil
}

// advertiseMetrics is the metrics address to announce for a listener bound
// to bound: as is, or on a wildcard (every interface) the host of the
// node-link address others already dial; without one, "" and why.
func advertiseMetrics(bound, linkAdvertise string) (addr, why string) {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", fmt.Sprintf("listener address %q: %v", bound, err)
	}
	if !wildcardHost(host) {
		return bound, ""
	}
	if linkAdvertise != "" {
		if lh, _, err := net.SplitHostPort(linkAdvertise); err == nil && !wildcardHost(lh) {
			return net.JoinHostPort(lh, port), ""
		}
	}
	return "", fmt.Sprintf("metrics listener %s is on every interface and there is no --link-advertise host to name it by", bound)
}

func wildcardHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

func startIngest(g *runGroup, cfg *serveConfig, names schema.Names, clientOpts []kgo.Opt, producer *kgo.Client, sealer *schema.Sealer, met *serveMetrics, logger *slog.Logger) error {
	gone, err := projector.NewGoneSet(projector.GoneSetConfig{ClientOpts: clientOpts, Names: names, Expiry: cfg.UAIDExpiry, Logger: logger, Metrics: met.reg})
	if err != nil {
		return fmt.Errorf("gone set: %w", err)
	}
	adm := kadm.NewClient(producer)
	// Only what ingest needs decides its heartbeat: a load balancer must
	// not take the push API out of rotation because analytics (ClickHouse)
	// or a projector is down. Those show under "roles", for information.
	health := map[string]func(context.Context) error{
		"kafka": func(ctx context.Context) error {
			_, err := adm.BrokerMetadata(ctx)
			return err
		},
	}
	var autopushKeys *ingest.AutopushKeys
	if cfg.AutopushCryptoKeys != "" {
		if autopushKeys, err = ingest.ParseAutopushKeys(cfg.AutopushCryptoKeys); err != nil {
			return fmt.Errorf("--autopush-crypto-keys: %w", err)
		}
	}
	proxies, err := ingest.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	status, report, err := senderSources(cfg, names, clientOpts, met, logger) // sender_api.go
	if err != nil {
		return err
	}
	bridges, bridgeTable, err := ingestBridges(cfg.bridgeFlags, cfg.MaxChannels, names, clientOpts, met) // bridges.go (issue 14)
	if err != nil {
		return err
	}
	srv, err := ingest.New(ingest.Config{
		Names:          names,
		PublicURL:      cfg.PublicURL,
		Sealer:         sealer,
		Producer:       producer,
		Partitions:     cfg.Partitions,
		Gone:           gone,
		MaxTTL:         cfg.MaxTTL,
		MaxBody:        cfg.MaxBody,
		ProduceTimeout: cfg.ProduceTimeout,
		Health:         health,
		Readiness:      map[string]func(context.Context) error{"gone-set": goneReadiness(gone)},
		Roles:          func() any { return g.sup.status() },
		Metrics:        met.reg,
		Admin:          ingest.AdminConfig{Token: cfg.AdminToken},
		MetricsHandler: met.handler,
		Version:        g.ops.version.info(),
		Logger:         logger.With("role", "ingest"),

		// Size bounds, retry index and breaker probing (issues 10, 11).
		MaxCryptoHeaders: cfg.MaxCryptoHeaders,
		MaxVAPIDSub:      cfg.MaxVAPIDSub,
		MaxVAPIDToken:    cfg.MaxVAPIDToken,
		MaxEvent:         cfg.MaxEventBytes,
		VAPIDCacheBytes:  cfg.VAPIDCacheBytes,
		DedupEntries:     cfg.DedupEntries,
		Breaker:          ingest.BreakerConfig{OpenTimeout: cfg.BreakerProbeInterval},
		AutopushKeys:     autopushKeys,
		Quota: ingest.QuotaConfig{ // issue 15: per-sender quotas
			VAPIDRate: cfg.PushQuotaVAPIDRate, VAPIDBurst: cfg.PushQuotaVAPIDBurst,
			SubscriptionRate: cfg.PushQuotaSubscriptionRate, SubscriptionBurst: cfg.PushQuotaSubscriptionBurst,
			AddressRate: cfg.PushQuotaAddressRate, AddressBurst: cfg.PushQuotaAddressBurst,
			LimitPrivateAddresses: cfg.PushQuotaPrivate, TrustedProxies: proxies, Entries: cfg.PushQuotaEntries,
		},
		Status: status, Report: report, // issue 15: message status, sender reports

		Receipts: receiptsConfig(cfg, status), // issue 15: RFC 8030 push receipts (ingest/receipts.go)
		Bridges:  bridges,                     // issue 14: mobile registration API (bridges.go)
	})
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if err := met.reg.Register(metrics.BreakerGauge("ingest", "kafka", srv.BreakerState)); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	g.supervise("status-table", status.Run) // after ingest.New: receipts follow it from its first event
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		c, err := ingest.LoadTLS(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return err
		}
		tlsCfg = c
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	logger.Info("push listener", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
	g.ops.listening(listenerIngest, ln.Addr().String())
	// Ingest serves at once, while the gone set catches up (minutes on a
	// large registrations topic; waiting for it, or exiting after a bound,
	// made a restart loop). Until it is ready a push to a channel that
	// turns out gone gets 201 instead of 410: the owner drops it, and the
	// sender learns 410 on a later push. A 503 would refuse every push for
	// the whole catch-up. Readiness shows in the heartbeat's "readiness".
	g.startNonFatal("gone-set", gone.Run)
	if bridgeTable != nil {
		g.startNonFatal("bridge-table", bridgeTable.Run) // bridges.go
	}
	g.start("ingest", func(ctx context.Context) error {
		go logGoneReady(ctx, gone, logger)
		return srv.Run(ctx, ln, tlsCfg)
	})
	return nil
}

// goneReadiness is the gone set's heartbeat readiness: nil once it caught
// up, else why pushes to gone channels may still get 201.
func goneReadiness(gone interface {
	WaitReady(context.Context) error
}) func(context.Context) error {
	return func(ctx context.Context) error {
		done, cancel := context.WithCancel(ctx)
		cancel() // only asks: never waits
		if err := gone.WaitReady(done); err != nil {
			return fmt.Errorf("catching up (pushes to unregistered channels get 201, the owner drops them): %w", err)
		}
		return nil
	}
}

// logGoneReady logs, loudly when it takes long, until the gone set is
// ready.
func logGoneReady(ctx context.Context, gone *projector.GoneSet, logger *slog.Logger) {
	start := time.Now()
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := gone.WaitReady(wctx)
		cancel()
		switch {
		case err == nil:
			logger.Info("gone set ready; ingest answers 410 for unregistered channels", "after", time.Since(start).Round(time.Millisecond))
			return
		case ctx.Err() != nil:
			return
		case wctx.Err() == nil: // the gone set stopped: runOnce logged it
			return
		}
		logger.Warn("gone set still catching up; ingest serves meanwhile (pushes to unregistered channels get 201)", "waited", time.Since(start).Round(time.Second))
	}
}

// runGroup runs the roles. A role started with start is essential: the
// first to fail stops the rest (and the process). One started with
// supervise is restarted by sup after a failure instead; one started with
// startNonFatal is left stopped (loudly).
type runGroup struct {
	ctx    context.Context
	cancel context.CancelFunc
	logger *slog.Logger
	sup    *supervisor
	ops    *serveOps // listeners, health and banner (nil in tests)
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

func newRunGroup(parent context.Context, logger *slog.Logger, sup *supervisor) *runGroup {
	ctx, cancel := context.WithCancel(parent)
	return &runGroup{ctx: ctx, cancel: cancel, logger: logger, sup: sup}
}

// supervise runs fn as a role that is restarted with back-off whenever it
// fails; fn must be safe to call again after it returned.
func (g *runGroup) supervise(name string, fn func(context.Context) error) {
	g.start(name, func(ctx context.Context) error { return g.sup.run(ctx, name, fn) })
}

// startNonFatal runs fn, which may be called only once, as a role whose
// failure after start-up is logged, counted and shown in the heartbeat but
// does not stop the process (supervisor.runOnce): only start-up errors and
// SIGTERM end it.
func (g *runGroup) startNonFatal(name string, fn func(context.Context) error) {
	g.start(name, func(ctx context.Context) error { return g.sup.runOnce(ctx, name, fn) })
}

func (g *runGroup) start(name string, fn func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := fn(g.ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			g.logger.Error("role failed", "role", name, "err", err)
			g.mu.Lock()
			g.errs = append(g.errs, fmt.Errorf("%s: %w", name, err))
			g.mu.Unlock()
		}
		g.cancel()
	}()
}

// abort stops the roles already started after a start-up failure and
// returns err with whatever they reported.
func (g *runGroup) abort(err error, timeout time.Duration) error {
	g.cancel()
	return errors.Join(err, g.wait(timeout))
}

// wait returns once every role stopped, or once the roles had timeout to
// stop after the first stop signal: a Kafka client blocked on a group join
// (the broker holds it until a crashed member's session ends) must not keep
// a SIGTERM'd process alive. Leaving then loses nothing: offsets are
// committed at low watermarks as the owners go.
func (g *runGroup) wait(timeout time.Duration) error {
	<-g.ctx.Done()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		g.logger.Error("roles still running after the shutdown timeout; exiting", "timeout", timeout)
		g.mu.Lock()
		g.errs = append(g.errs, fmt.Errorf("shutdown: roles still running after %s", timeout))
		g.mu.Unlock()
	}
	g.cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.errs...)
}

// receiptsConfig maps the --receipt* flags; receipts follow the status
// table (one fold of the messages and acks topics per node);
// --no-receipts leaves them without it, which turns them off.
func receiptsConfig(cfg *serveConfig, status *projector.StatusTable) ingest.ReceiptsConfig {
	rc := ingest.ReceiptsConfig{Retention: cfg.ReceiptRetention, Buffer: cfg.ReceiptBuffer,
		SubsPerSender: cfg.ReceiptSubsPerSender, MaxStreams: cfg.ReceiptStreams, Idle: cfg.ReceiptIdle}
	if cfg.Receipts {
		rc.Feed = status
	}
	return rc
}
