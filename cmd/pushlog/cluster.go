package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"

	"github.com/pushlog/pushlog/connector/node"
)

// listenLink opens the node-link listener (cluster mode only) and maps the
// link flags to the node's cluster config: the address to announce is
// --link-advertise, else the bound address.
func listenLink(cfg *serveConfig, logger *slog.Logger) (*node.Cluster, error) {
	if cfg.LinkAddr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.LinkAddr)
	if err != nil {
		return nil, fmt.Errorf("--link-addr: %w", err)
	}
	adv := cmp.Or(cfg.LinkAdvertise, ln.Addr().String())
	logger.Info("node link listener", "addr", ln.Addr().String(), "advertise", adv)
	return &node.Cluster{Listener: ln, Advertise: adv, Secret: []byte(cfg.LinkSecret)}, nil
}
