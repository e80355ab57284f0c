package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/cmd/internal/metrics"
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/connector/remote"
	"github.com/pushlog/pushlog/connector/route"
	"github.com/pushlog/pushlog/schema"
)

// cluster is the wiring of a connector node that shares the partitions
// with other nodes: its node link (remote.Node) and the router that sends
// each UAID's calls to the owner of its partition.
type cluster struct {
	advertise string // the link address other nodes dial
	ln        net.Listener
	node      *remote.Node
	router    *route.Router
	table     *route.Table
}

// sessionDialerFunc adapts a function to owner.SessionDialer.
type sessionDialerFunc func(addr string, uaid schema.UAID, connID string) link.Session

func (f sessionDialerFunc) Session(addr string, uaid schema.UAID, connID string) link.Session {
	return f(addr, uaid, connID)
}

// listenLink opens the node-link listener (cluster mode only) and returns
// the address to announce: --link-advertise, else the bound address.
func listenLink(cfg *serveConfig, logger *slog.Logger) (*cluster, error) {
	if cfg.LinkAddr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.LinkAddr)
	if err != nil {
		return nil, fmt.Errorf("--link-addr: %w", err)
	}
	adv := cfg.LinkAdvertise
	if adv == "" {
		adv = ln.Addr().String()
	}
	logger.Info("node link listener", "addr", ln.Addr().String(), "advertise", adv)
	return &cluster{advertise: adv, ln: ln}, nil
}

// dialer is the owner's SessionDialer: it exists before the node link (the
// link needs the owner), so it looks the node up when called.
func (c *cluster) dialer() owner.SessionDialer {
	return sessionDialerFunc(func(addr string, uaid schema.UAID, connID string) link.Session {
		if c.node == nil {
			return nil
		}
		return c.node.Session(addr, uaid, connID)
	})
}

// build makes the router and the node link around the local owner.
func (c *cluster) build(cfg *serveConfig, names schema.Names, producer *kgo.Client, own *owner.Owner, reg prometheus.Registerer, logger *slog.Logger) error {
	adm := kadm.NewClient(producer)
	group := names.Group("connectors")
	c.table = route.NewTable(route.TableConfig{
		Fetch: func(ctx context.Context) (map[int32]string, error) {
			return owner.GroupOwners(ctx, adm, group, names.Messages)
		},
		Logger: logger.With("role", "router"),
	})
	rt, err := route.New(route.Config{
		Partitions: cfg.Partitions,
		Self:       c.advertise,
		Local:      own,
		Owners:     c.table,
		Logger:     logger.With("role", "router"),
		Metrics:    reg,
	})
	if err != nil {
		return err
	}
	c.table.OnChange(rt.TableChanged)
	node, err := remote.New(remote.Config{
		NodeID:   cfg.NodeID,
		Addr:     c.advertise,
		Secret:   []byte(cfg.LinkSecret),
		Owner:    own,
		Sessions: rt,
		Logger:   logger.With("role", "link"),
	})
	if err != nil {
		return err
	}
	if err := reg.Register(metrics.Breakers("link", node.Breakers)); err != nil {
		return fmt.Errorf("node link: %w", err)
	}
	rt.SetRemote(node)
	c.router, c.node = rt, node
	return nil
}

// start runs the router, the ownership table and the node link. The link
// stays up until ownerDone: while the owner leaves the group it still
// delivers, and peers still reach it.
func (c *cluster) start(g *runGroup, ownerDone <-chan struct{}) {
	g.start("router", func(ctx context.Context) error {
		go c.table.Run(ctx)
		return c.router.Run(ctx)
	})
	g.start("link", func(ctx context.Context) error {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		go func() {
			select {
			case <-ownerDone:
			case <-lctx.Done():
			}
			cancel()
		}()
		err := c.node.Serve(lctx, c.ln)
		if err == nil {
			<-ownerDone
		}
		_ = c.node.Close()
		return err
	})
}

// drain lets the clients of this node ack what they were sent before their
// sockets close (a no-op for a single node).
func (c *cluster) drain(ctx context.Context) {
	if c != nil {
		c.router.Drain(ctx)
	}
}
