package connector

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/connector/link"
)

// Per-client bounds. Every one answers past its limit with a clear error
// and counts the refusal (connector_client_refusals_total{limit}).
//
// Settings (Config): MaxChannels, MaxRegistrationsPerMinute,
// MaxMessagesPerMinute, MaxConnectionsPerIPPerMinute. Constants, because no
// real client comes near them (a client message is also bounded in bytes by
// MaxMessage):
const (
	// maxBroadcastEntries bounds the broadcasts map of a hello or a
	// broadcast_subscribe: Firefox follows one or two Megaphone ids, and
	// unknown ids are echoed back under "errors", so the reply grows with
	// the request.
	maxBroadcastEntries = 64
	// maxBroadcastField bounds a broadcast id and a version in bytes
	// ("remote-settings/monitor_changes", "\"1700000000000\"").
	maxBroadcastField = 128
	// maxAckUpdates bounds the updates of one ack: Firefox sends one per
	// notification; each update may write an Acked event.
	maxAckUpdates = 100
	// maxTrackedIPs bounds the per-address connection-rate table. When it
	// is full of busy addresses, new addresses are admitted untracked
	// (counted): the limit never refuses a client for lack of memory.
	maxTrackedIPs = 1 << 16
)

// closePolicy closes a socket whose message exceeds a size bound.
const closePolicy = websocket.ClosePolicyViolation // 1008

// Limit names (the refusals metric's label).
const (
	limitChannels      = "channels"           // register past MaxChannels: status 413
	limitRegistrations = "registration_rate"  // register/unregister past MaxRegistrationsPerMinute: status 429
	limitMessages      = "message_rate"       // any message past MaxMessagesPerMinute: close 4774
	limitBroadcasts    = "broadcasts"         // broadcasts map too big: close 1008
	limitAckUpdates    = "ack_updates"        // ack with too many updates: close 1008
	limitConnectRate   = "connection_rate_ip" // new connections past MaxConnectionsPerIPPerMinute: HTTP 429
	limitIPTable       = "ip_table_full"      // admitted untracked: the address table is full
)

var allLimits = []string{limitChannels, limitRegistrations, limitMessages, limitBroadcasts, limitAckUpdates, limitConnectRate, limitIPTable}

// Register/unregister statuses of the limits.
const (
	// statusTooManyChannels: the UAID holds MaxChannels channels. Not 409,
	// which autopush answers when the channel id belongs to another UAID
	// (a client may then retry with a new id, which would only loop here);
	// 413 says "the set is at its size limit" and Firefox, like for any
	// status but 200, fails the subscription and keeps the socket.
	statusTooManyChannels = 413
	// statusTooManyRequests: the socket's registration rate is exhausted;
	// nothing was written, the client may retry later.
	statusTooManyRequests = 429
)

// gcra is a token bucket kept as one number (the generic cell rate
// algorithm): tat is the time, in unix nanoseconds, at which the bucket
// would be full again. A bucket of n tokens refilled over period allows
// n back to back, then one every period/n.
type gcra struct{ tat int64 }

// allow takes cost tokens at now if the bucket has them.
func (g *gcra) allow(now int64, n int, period time.Duration, cost int) bool {
	if cost <= 0 {
		return true
	}
	interval := int64(period) / int64(n)
	tat := max(g.tat, now)
	next := tat + int64(cost)*interval
	if next-now > int64(period) {
		return false
	}
	g.tat = next
	return true
}

// chanSet is the UAID's registered channels as one socket knows them:
// the owner's list at hello plus this socket's own registers and
// unregisters. Sorted, 16 bytes per channel, nothing before hello.
type chanSet struct {
	ids [][16]byte
	// partial: the owner's list may miss channels (an older owner, or
	// more than the node link carries), so an unregister of a channel not
	// here is written anyway.
	partial bool
}

func newChanSet(info link.UAIDInfo) chanSet {
	if !info.Valid {
		return chanSet{}
	}
	ids := slices.Clone(info.Channels)
	slices.SortFunc(ids, cmpID)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		ids = nil
	}
	return chanSet{ids: slices.Clip(ids), partial: info.Partial}
}

func cmpID(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) }

func (s *chanSet) has(id [16]byte) bool {
	_, ok := slices.BinarySearchFunc(s.ids, id, cmpID)
	return ok
}

func (s *chanSet) add(id [16]byte) {
	i, ok := slices.BinarySearchFunc(s.ids, id, cmpID)
	if !ok {
		s.ids = slices.Insert(s.ids, i, id)
	}
}

func (s *chanSet) remove(id [16]byte) {
	if i, ok := slices.BinarySearchFunc(s.ids, id, cmpID); ok {
		s.ids = slices.Delete(s.ids, i, i+1)
		if len(s.ids) == 0 {
			s.ids = nil // a slice never shrinks: drop it
		}
	}
}

// broadcastsTooBig reports whether a client's broadcasts map exceeds the
// bounds.
func broadcastsTooBig(m map[string]string) bool {
	if len(m) > maxBroadcastEntries {
		return true
	}
	for id, v := range m {
		if len(id) > maxBroadcastField || len(v) > maxBroadcastField {
			return true
		}
	}
	return false
}

// ipLimiter bounds the rate of new connections per client address (an IPv6
// client by its /64: one host usually holds the whole prefix).
// Loopback and private addresses are exempt by default: that is where a TLS
// proxy or load balancer in front of pushlog connects from, carrying many
// clients.
type ipLimiter struct {
	n      int                   // connections per minute; 0: no limit
	exempt func(netip.Addr) bool // nil: none
	mu     sync.Mutex
	byAddr map[netip.Addr]*gcra
	pruned int64 // unix nanoseconds of the last prune of a full table
}

func newIPLimiter(perMinute int) *ipLimiter {
	return &ipLimiter{n: perMinute, exempt: proxyAddr, byAddr: map[netip.Addr]*gcra{}}
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
	ts := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.byAddr[addr]
	if g == nil {
		if len(l.byAddr) >= maxTrackedIPs && !l.prune(ts) {
			return true, true
		}
		g = &gcra{}
		l.byAddr[addr] = g
	}
	return g.allow(ts, l.n, time.Minute, 1), false
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
		if g.tat <= now {
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
