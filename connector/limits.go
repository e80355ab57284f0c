package connector

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pushlog/pushlog/connector/protocol"
)

// Per-client bounds. Every one answers past its limit with a clear error
// and counts the refusal (connector_client_refusals_total{limit}).
//
// The protocol machine decides the per-socket ones (connector/protocol:
// MaxChannels, MaxRegistrationsPerMinute, MaxMessagesPerMinute, the
// broadcasts, ack and unacked bounds); the connection rate per address is
// decided here, before any WebSocket state exists.

// maxTrackedIPs bounds the per-address connection-rate table. When it is
// full of busy addresses, new addresses are admitted untracked (counted):
// the limit never refuses a client for lack of memory.
const maxTrackedIPs = 1 << 16

// Limit names (the refusals metric's label).
const (
	limitChannels      = protocol.LimitChannels      // register past MaxChannels: status 413
	limitRegistrations = protocol.LimitRegistrations // register/unregister past MaxRegistrationsPerMinute: status 429
	limitMessages      = protocol.LimitMessages      // any message past MaxMessagesPerMinute: close 4774
	limitBroadcasts    = protocol.LimitBroadcasts    // broadcasts map too big: close 1008
	limitAckUpdates    = protocol.LimitAckUpdates    // ack with too many updates: close 1008
	limitConnectRate   = "connection_rate_ip"        // new connections past MaxConnectionsPerIPPerMinute: HTTP 429
	limitIPTable       = "ip_table_full"             // admitted untracked: the address table is full
)

var allLimits = []string{limitChannels, limitRegistrations, limitMessages, limitBroadcasts, limitAckUpdates, limitConnectRate, limitIPTable}

// ipLimiter bounds the rate of new connections per client address (an IPv6
// client by its /64: one host usually holds the whole prefix).
// Loopback and private addresses are exempt by default: that is where a TLS
// proxy or load balancer in front of pushlog connects from, carrying many
// clients.
type ipLimiter struct {
	n      int                   // connections per minute; 0: no limit
	exempt func(netip.Addr) bool // nil: none
	mu     sync.Mutex
	byAddr map[netip.Addr]*protocol.Rate
	pruned int64          // clock of the last prune of a full table
	clock  protocol.Clock // what the buckets count on
}

func newIPLimiter(perMinute int) *ipLimiter {
	return &ipLimiter{n: perMinute, exempt: proxyAddr, byAddr: map[netip.Addr]*protocol.Rate{}, clock: protocol.Clock{Epoch: time.Now()}}
}

// proxyAddr reports addresses a proxy in front of pushlog would use.
func proxyAddr(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast()
}

// allow reports whether a connection from remoteAddr (host:port) may
// proceed, and whether it was admitted untracked (table full).
func (l *ipLimiter) allow(remoteAddr string, now time.Time) (ok, untracked bool) {
	if l.n <= 0 {
		return true, false
	}
	addr, valid := parseRemoteAddr(remoteAddr)
	if !valid || (l.exempt != nil && l.exempt(addr)) {
		return true, false
	}
	addr = rateKey(addr)
	ts := l.clock.Nanos(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.byAddr[addr]
	if g == nil {
		if len(l.byAddr) >= maxTrackedIPs && !l.prune(ts) {
			return true, true
		}
		g = &protocol.Rate{}
		l.byAddr[addr] = g
	}
	return g.Allow(ts, l.n, time.Minute, 1), false
}

// prune drops the addresses whose bucket is full again (the same as not
// tracked) and reports whether that made room. It scans at most once a
// second: a table full of busy addresses is not rescanned per connection.
func (l *ipLimiter) prune(now int64) bool {
	if now-l.pruned < int64(time.Second) {
		return false
	}
	l.pruned = now
	for a, g := range l.byAddr {
		if g.Full(now) {
			delete(l.byAddr, a)
		}
	}
	return len(l.byAddr) < maxTrackedIPs
}

// parseRemoteAddr parses a connection's host:port (or bare host).
func parseRemoteAddr(remoteAddr string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// rateKey is what the rate is kept by: the IPv4 address, or the /64 of an
// IPv6 one.
func rateKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}
