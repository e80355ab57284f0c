// Package node assembles a connector node from one Config: the WebSocket
// socket server (package connector), the owner of the UAIDs' partitions
// (connector/owner) and, in a cluster, the router (connector/route) and
// the node link (connector/remote). Run starts them and owns the order in
// which they stop.
//
// It is a package of its own because it imports all four: connector must
// not import owner, route or remote (they sit beside it, behind
// connector/link).
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/connector/remote"
	"github.com/pushlog/pushlog/connector/route"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/group"
)

// Defaults of Config.
const (
	DefaultDrainTimeout    = 3 * time.Second
	DefaultShutdownTimeout = 20 * time.Second
)

// Config configures a connector node.
type Config struct {
	// Server configures the socket server; New sets its Link and LinkAddr.
	Server connector.Config
	// Owner configures the owner of the UAIDs' partitions; New sets its
	// Remote and LinkAddr. Unused with Link.
	Owner owner.Config
	// Link, when set, replaces the owner and the cluster: the sockets ask
	// it alone (a tool's in-memory owner, cmd/pushload).
	Link link.Link
	// Listener is the WebSocket listener (it serves GET /metrics too).
	// Run closes it.
	Listener net.Listener
	// Cluster is the node link of a cluster; nil runs a single node.
	Cluster *Cluster
	// Broadcasts, when set, makes the broadcast table live (broadcasts.go);
	// nil keeps Server.Broadcasts fixed.
	Broadcasts *BroadcastsConfig

	// DrainTimeout bounds the wait, on shutdown, for clients to ack what
	// they were sent before their sockets close (default 3s).
	DrainTimeout time.Duration
	// ShutdownTimeout bounds the whole ordered shutdown (default 20s).
	ShutdownTimeout time.Duration

	// Logger is the base of every component's logger (attribute role);
	// Metrics registers every component's series. A component config's own
	// Logger or Metrics wins.
	Logger  *slog.Logger
	Metrics prometheus.Registerer
}

// Cluster configures the node link that joins this node to the others.
type Cluster struct {
	Listener  net.Listener // where peers connect; Run closes it
	Advertise string       // the address peers dial; default Listener's
	Secret    []byte       // shared by every node (remote.MinSecret bytes at least)
}

// Node is a connector node: build it with New, run it with Run.
type Node struct {
	cfg    Config
	log    *slog.Logger
	server *connector.Server
	link   *remote.Node    // nil on a single node
	owner  *owner.Owner    // nil for a tool's node (Config.Link)
	bcast  *liveBroadcasts // nil: a fixed broadcast table
	parts  parts
}

// parts are the components Run starts and then stops one at a time. A nil
// part is absent (a single node has no link, router or drain; a tool's
// Link no owner).
type parts struct {
	link       func(context.Context) error // serves peers until ctx ends, then closes every link
	router     func(context.Context) error // moves sessions with their partitions
	owner      func(context.Context) error // leaves its group when ctx ends
	broadcasts func(context.Context) error // folds the broadcasts topic into the sockets' table
	sockets    func(context.Context) error // serves until ctx ends, then closes every socket
	drain      func(context.Context)       // waits for the clients' acks
	held       func()                      // writes the owner's held Delivered events
	flush      func(context.Context) error // makes the clients' events durable
}

// New builds every component from cfg. Nothing runs before Run. On error
// the listeners are the caller's to close.
func New(cfg Config) (*Node, error) {
	if cfg.Listener == nil {
		return nil, errors.New("connector node: Listener is required")
	}
	if cfg.Cluster != nil && cfg.Cluster.Listener == nil {
		return nil, errors.New("connector node: Cluster.Listener is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.DrainTimeout = cmp.Or(cfg.DrainTimeout, DefaultDrainTimeout)
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	cfg.Server.Logger = cmp.Or(cfg.Server.Logger, cfg.Logger.With("role", "connector"))
	cfg.Server.Metrics = cmp.Or(cfg.Server.Metrics, cfg.Metrics)
	n := &Node{cfg: cfg, log: cfg.Logger}
	if cfg.Link != nil {
		n.cfg.Server.Link = cfg.Link
	} else if err := n.buildOwner(); err != nil {
		return nil, err
	}
	server, err := connector.New(n.cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("connector: %w", err)
	}
	n.server = server
	if cfg.Broadcasts != nil {
		if err := n.buildBroadcasts(); err != nil {
			return nil, err
		}
	}
	n.parts.sockets = func(ctx context.Context) error { return server.Run(ctx, cfg.Listener) }
	n.parts.flush = cfg.Server.Producer.Flush
	return n, nil
}

// buildOwner makes the owner and, in a cluster, the node link and the
// router, and sets the socket server's Link to what it must ask.
//
// In a cluster the owner and the router reach other nodes through the
// link's client side (they are built with it), and the link serves them
// to its peers: it gets them when it starts serving.
func (n *Node) buildOwner() error {
	cfg := &n.cfg
	ocfg := cfg.Owner
	ocfg.Logger = cmp.Or(ocfg.Logger, cfg.Logger.With("role", "owner"))
	ocfg.Metrics = cmp.Or(ocfg.Metrics, cfg.Metrics)
	advertise := ""
	if cfg.Cluster != nil {
		advertise = cmp.Or(cfg.Cluster.Advertise, cfg.Cluster.Listener.Addr().String())
		ln, err := remote.New(remote.Config{
			NodeID: cfg.Server.NodeID,
			Addr:   advertise,
			Secret: cfg.Cluster.Secret,
			Logger: cfg.Logger.With("role", "link"),
		})
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		n.link = ln
		ocfg.LinkAddr, ocfg.Remote = advertise, ln
	}
	own, err := owner.New(ocfg)
	if err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	n.owner = own
	n.parts.owner = own.Run
	n.parts.held = own.WriteHeld
	cfg.Server.Link = own
	if cfg.Cluster == nil {
		return nil
	}
	rt, err := n.buildRouter(own, advertise)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	cfg.Server.Link, cfg.Server.LinkAddr = rt, advertise
	return nil
}

// buildRouter makes the router, with its ownership table, around the
// local owner and the node link, and the parts that run them.
func (n *Node) buildRouter(own *owner.Owner, advertise string) (*route.Router, error) {
	cfg, ln := n.cfg, n.link
	names := cfg.Owner.Names
	if names.Messages == "" {
		names = schema.DefaultNames()
	}
	groupName := cmp.Or(cfg.Owner.Group, names.Group("connectors"))
	// Not the producer's client: group requests need one that is replaced
	// when the group's coordinator died (group.Admin).
	adm, err := group.NewAdmin(cfg.Owner.ClientOpts...)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	rt, err := route.New(route.Config{
		Partitions: cfg.Owner.Partitions,
		Self:       advertise,
		Local:      own,
		Remote:     ln,
		Table: route.TableConfig{
			Fetch: func(ctx context.Context) (owners map[int32]string, err error) {
				err = adm.Do(ctx, func(k *kadm.Client) error {
					owners, err = owner.GroupOwners(ctx, k, groupName, names.Messages)
					return err
				})
				return owners, err
			},
		},
		Logger:  cfg.Logger.With("role", "router"),
		Metrics: cfg.Metrics,
	})
	if err != nil {
		adm.Close()
		return nil, err
	}
	n.parts.router = func(ctx context.Context) error {
		defer adm.Close()
		return rt.Run(ctx)
	}
	handlers := remote.Handlers{Owner: own, Sessions: rt}
	n.parts.link = func(ctx context.Context) error {
		err := ln.Serve(ctx, cfg.Cluster.Listener, handlers)
		if err == nil {
			<-ctx.Done() // the link serves until its step of the shutdown
		}
		_ = ln.Close()
		return err
	}
	n.parts.drain = rt.Drain
	return rt, nil
}

// Connections is the number of open WebSocket connections.
func (n *Node) Connections() int { return n.server.Connections() }

// FoldPositions returns the owner's next offsets to fold per group topic
// and owned partition (nil without an owner), for the connectors group's
// head lag (pushlog_consumer_head_lag).
func (n *Node) FoldPositions() map[string]map[int32]int64 {
	if n.owner == nil {
		return nil
	}
	return n.owner.FoldPositions()
}

// LinkBreakers returns the state of the node link's breaker of each peer
// (none on a single node); the process reports them as
// pushlog_breaker_state{component="link",breaker=PEER}.
func (n *Node) LinkBreakers() map[string]gobreaker.State {
	if n.link == nil {
		return nil
	}
	return n.link.Breakers()
}

// BridgeBreakers is the owner's circuit breaker per mobile bridge app
// (connector/owner/bridge.go); nil for a tool's node.
func (n *Node) BridgeBreakers() map[string]gobreaker.State {
	if n.owner == nil {
		return nil
	}
	return n.owner.BridgeBreakers()
}

// Run starts the node link, the router, the owner and the socket server,
// and serves until ctx ends or one of them fails. It then stops them in
// this order, each step bounded by ShutdownTimeout overall:
//
//  1. the router stops moving sessions;
//  2. drain: the clients ack what they were sent (DrainTimeout);
//  3. flush: their Acked events (and the owner's Delivered events it held
//     for acks, owner.DeliveredHold) become durable, so where they
//     reconnect the owner reads them first;
//  4. close sockets (close frame 1001), flushing their Disconnected events;
//  5. leave group: the owner commits and leaves, and the next owner of its
//     partitions reads every ack our clients made, redelivering nothing
//     they acked;
//  6. close the node link, which delivered while the owner left.
//
// Run returns the failure that stopped the node, if any, with whatever
// the shutdown reported. It can be called once.
func (n *Node) Run(ctx context.Context) error {
	// The components live on contexts detached from ctx: its end starts
	// the shutdown below, which ends them one at a time.
	base := context.WithoutCancel(ctx)
	failed := make(chan error, 4)
	link := n.start(base, "link", n.parts.link, failed)
	router := n.start(base, "router", n.parts.router, failed)
	own := n.start(base, "owner", n.parts.owner, failed)
	bcast := n.start(base, "broadcasts", n.parts.broadcasts, failed)
	if n.bcast != nil {
		n.bcast.waitReady(ctx) // a hello must find the ids the topic holds
	}
	sockets := n.start(base, "connector", n.parts.sockets, failed)

	select {
	case <-ctx.Done():
	case err := <-failed:
		n.log.Error("connector node component failed; stopping the node", "err", err)
	}
	sctx, cancel := context.WithTimeout(base, n.cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{router.stop(sctx)}
	n.drainAndFlush(sctx)
	errs = append(errs, sockets.stop(sctx), own.stop(sctx), link.stop(sctx), bcast.stop(sctx))
	return errors.Join(errs...)
}

// drainAndFlush are the shutdown's steps 2 and 3, within DrainTimeout.
func (n *Node) drainAndFlush(ctx context.Context) {
	dctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	if n.parts.drain != nil {
		n.parts.drain(dctx)
	}
	if n.parts.held != nil {
		n.parts.held()
	}
	if err := n.parts.flush(dctx); err != nil {
		n.log.Warn("flush before closing sockets", "err", err)
	}
}

// component is a running part.
type component struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done closes
	early  bool  // it returned before stop: a failure, even without an error
}

// start runs fn on a context of its own; a return before stop is a failure,
// sent on failed (a panic too: the process keeps serving its other roles).
func (n *Node) start(base context.Context, name string, fn func(context.Context) error, failed chan<- error) *component {
	if fn == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(base)
	c := &component{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = n.runPart(ctx, name, fn)
		if ctx.Err() == nil {
			c.early = true
			if c.err == nil {
				c.err = errors.New("returned while the node was running")
			}
			select {
			case failed <- fmt.Errorf("%s: %w", name, c.err):
			default: // another failure already stops the node
			}
		}
	}()
	return c
}

func (n *Node) runPart(ctx context.Context, name string, fn func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("connector node component panicked", "component", name, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn(ctx)
}

// stop ends c's context and waits for it to return, until ctx ends; it
// returns c's error, a failure included.
func (c *component) stop(ctx context.Context) error {
	if c == nil {
		return nil
	}
	c.cancel()
	select {
	case <-c.done:
	case <-ctx.Done():
		return fmt.Errorf("%s still running after the shutdown timeout", c.name)
	}
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return nil
}
