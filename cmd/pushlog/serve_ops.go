package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pushlog/pushlog/cmd/internal/health"
)

// serveOps is what serve tells operators: the listeners it bound, the
// Dockerflow health of the listeners without an HTTP API of their own,
// the start-up banner and the runtime file.
type serveOps struct {
	cfg     *serveConfig
	adm     *kadm.Client
	sup     *supervisor
	version buildVersion
	logger  *slog.Logger

	mu         sync.Mutex
	bound      map[string]string // listener name -> bound address
	clickhouse clickhouseState   // the analytics projector; nil when off or not started
}

func newServeOps(cfg *serveConfig, adm *kadm.Client, sup *supervisor, logger *slog.Logger) *serveOps {
	return &serveOps{cfg: cfg, adm: adm, sup: sup, version: readBuildVersion(), logger: logger, bound: map[string]string{}}
}

// listening records a bound listener for the banner and the runtime file.
func (o *serveOps) listening(name, addr string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bound[name] = addr
}

func (o *serveOps) addr(name string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bound[name]
}

// clickhouseState is what the heartbeat reads of the analytics projector.
type clickhouseState interface {
	BreakerState() gobreaker.State
	Failing() bool // the last ClickHouse operation failed
}

// setClickHouse makes ClickHouse's reachability part of the metrics
// listener's readiness.
func (o *serveOps) setClickHouse(state clickhouseState) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.clickhouse = state
}

// kafkaCheck fails when no broker answers a metadata request.
func (o *serveOps) kafkaCheck(ctx context.Context) error {
	_, err := o.adm.BrokerMetadata(ctx)
	return err
}

// healthHandler answers the Dockerflow endpoints about Kafka and the
// given supervised roles: what the process behind the listener needs.
// ClickHouse, when analytics is on, shows under readiness only: the
// analytics projector waits for it and catches up, restarting would not
// help.
func (o *serveOps) healthHandler(roles ...string) http.Handler {
	return o.healthHandlerWith(o.kafkaCheck, roles...)
}

func (o *serveOps) healthHandlerWith(kafka health.Check, roles ...string) http.Handler {
	checks := map[string]health.Check{"kafka": kafka}
	if len(roles) > 0 {
		checks["roles"] = health.Check(o.sup.check(roles...))
	}
	readiness := map[string]health.Check{}
	if o.cfg.ClickHouseAddr != "" {
		readiness["clickhouse"] = func(context.Context) error {
			o.mu.Lock()
			state := o.clickhouse
			o.mu.Unlock()
			if state == nil {
				return errors.New("the analytics projector has not started")
			}
			if s := state.BreakerState(); s != gobreaker.StateClosed || state.Failing() {
				return fmt.Errorf("ClickHouse %s does not answer (circuit breaker %s); analytics catches up once it does", o.cfg.ClickHouseAddr, s)
			}
			return nil
		}
	}
	return health.Handler(health.Config{
		Checks:        checks,
		Readiness:     readiness,
		Roles:         func() any { return o.sup.status() },
		Version:       o.version.info(),
		VersionString: o.version.Version,
		Logger:        o.logger,
	})
}

// processRoles are the supervised role names this process runs, for the
// heartbeat of its metrics listener.
func (o *serveOps) processRoles() []string {
	var out []string
	if o.cfg.has(roleProjector) {
		out = append(out, "channel-projector")
		if o.cfg.ClickHouseAddr != "" {
			out = append(out, "analytics-projector")
		}
	}
	if o.cfg.has(roleConnector) {
		out = append(out, "connector")
	}
	if o.cfg.has(roleIngest) {
		out = append(out, "gone-set")
	}
	return out
}

// announce prints the banner and, for the embedded broker, writes the
// runtime file operator commands read; the returned function removes it
// at a clean stop.
func (o *serveOps) announce(embeddedBroker bool, w io.Writer) func() {
	writeBanner(w, o.bannerLines(embeddedBroker))
	if !embeddedBroker {
		return func() {}
	}
	remove, err := writeRuntime(o.cfg.DataDir, o.runtimeInfo(embeddedBroker))
	if err != nil {
		// Not fatal: the service works; operator commands need flags.
		o.logger.Warn("runtime file not written; operator commands need --kafka-brokers", "err", err)
		return func() {}
	}
	return remove
}

func (o *serveOps) runtimeInfo(embeddedBroker bool) runtimeInfo {
	info := runtimeInfo{
		PID: os.Getpid(), Version: o.version.Version, NodeID: o.cfg.NodeID, Namespace: o.cfg.Namespace,
		KafkaBrokers: o.cfg.KafkaBrokers, Embedded: embeddedBroker, Roles: o.cfg.Roles,
		HTTPAddr: o.addr(listenerIngest), WSAddr: o.addr(listenerWS), MetricsAddr: o.addr(listenerMetrics),
		StartedAt: time.Now().UTC(),
	}
	if o.cfg.ClickHouseAddr != "" {
		info.ClickHouseAddr, info.ClickHouseDB = o.cfg.ClickHouseAddr, o.cfg.ClickHouseDB
	}
	return info
}

// Listener names (banner, runtime file).
const (
	listenerIngest  = "push API"
	listenerWS      = "websocket"
	listenerMetrics = "metrics"
	listenerDebug   = "debug"
)

// bannerLines is the start-up banner: what listens where, the data
// directory, the roles, analytics, and what to run next.
func (o *serveOps) bannerLines(embeddedBroker bool) [][2]string {
	c := o.cfg
	var lines [][2]string
	add := func(k, v string) { lines = append(lines, [2]string{k, v}) }
	add("pushlog", o.version.String()[len("pushlog "):])
	add("node", c.NodeID)
	add("roles", strings.Join(c.Roles, ", "))
	if a := o.addr(listenerIngest); a != "" {
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		add(listenerIngest, scheme+"://"+a+"  (public URL "+c.PublicURL+")")
	}
	if a := o.addr(listenerWS); a != "" {
		add(listenerWS, "ws://"+a+"/")
	}
	if a := o.addr(listenerMetrics); a != "" {
		add(listenerMetrics, "http://"+a+"/metrics")
	}
	if a := o.addr(listenerDebug); a != "" {
		add(listenerDebug, "http://"+a+"/debug/pprof/")
	}
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		dir = c.DataDir
	}
	add("data directory", dir)
	if embeddedBroker {
		add("kafka", "embedded at "+strings.Join(c.KafkaBrokers, ",")+" (operator commands find it via "+filepath.Join(dir, runtimeFileName)+")")
	} else {
		add("kafka", strings.Join(c.KafkaBrokers, ",")+" namespace "+c.Namespace)
	}
	switch {
	case c.ClickHouseAddr != "" && c.has(roleProjector):
		add("analytics", "on: ClickHouse "+c.ClickHouseAddr+" database "+c.ClickHouseDB+" (pushlog analytics report)")
	case c.ClickHouseAddr != "":
		add("analytics", "projected by the process with the projector role (ClickHouse "+c.ClickHouseAddr+")")
	default:
		add("analytics", "off: start ClickHouse and pass --clickhouse-addr host:9000 (CLICKHOUSE_ADDR)")
	}
	add("next", "pushlog status   (health: pushlog health "+o.healthTarget()+")")
	return lines
}

// healthTarget is a listener `pushlog health` can ask.
func (o *serveOps) healthTarget() string {
	for _, n := range []string{listenerIngest, listenerWS, listenerMetrics} {
		if a := o.addr(n); a != "" {
			return a
		}
	}
	return "HOST:PORT"
}

func writeBanner(w io.Writer, lines [][2]string) {
	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, l[0], l[1])
	}
	_, _ = io.WriteString(w, b.String())
}
