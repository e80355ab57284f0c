package connector

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/protocol"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// withMetrics registers the server's series on a fresh registry.
func withMetrics(mod func(*Config)) func(*Config) {
	return func(c *Config) {
		c.Metrics = prometheus.NewRegistry()
		if mod != nil {
			mod(c)
		}
	}
}

func (h *harness) refusals(limit string) float64 {
	return testutil.ToFloat64(h.srv.met.refusals[limit])
}

// call sends a register/unregister and returns the reply's status.
func call(t *testing.T, c *websocket.Conn, typ, chid string) float64 {
	t.Helper()
	send(t, c, map[string]any{"messageType": typ, "channelID": chid})
	r := recv(t, c)
	if r["messageType"] != typ || r["channelID"] != chid {
		t.Fatalf("reply %v to %s %s", r, typ, chid)
	}
	if st := r["status"].(float64); st != 200 && r["reason"] == "" {
		t.Fatalf("error reply without a reason: %v", r)
	}
	return r["status"].(float64)
}

// stillOpen checks the socket still answers a ping.
func stillOpen(t *testing.T, c *websocket.Conn) {
	t.Helper()
	send(t, c, `{"messageType":"ping"}`)
	if got := recvRaw(t, c); string(got) != "{}" {
		t.Fatalf("ping reply %s", got)
	}
}

type step struct {
	typ    string // register / unregister
	chid   string
	status float64
}

func runSteps(t *testing.T, c *websocket.Conn, steps []step) {
	t.Helper()
	for i, s := range steps {
		if got := call(t, c, s.typ, s.chid); got != s.status {
			t.Fatalf("step %d: %s %s = %v, want %v", i, s.typ, s.chid, got, s.status)
		}
	}
}

// countEvents counts the registration events of uaid written so far.
func (h *harness) countEvents(uaid string) (regs, unregs int) {
	h.t.Helper()
	for _, ev := range h.settle(func(ev *pb.Event) bool { return ev.GetUaid() == uaid }) {
		switch {
		case ev.GetChannelRegistered() != nil:
			regs++
		case ev.GetChannelUnregistered() != nil:
			unregs++
		}
	}
	return regs, unregs
}

// TestChannelLimit: the channels the owner listed at hello count; a new
// channel past MaxChannels gets 413 and the socket stays open;
// re-registering a channel the UAID has stays 200; an unregister makes
// room.
func TestChannelLimit(t *testing.T) {
	a, b, c, d, e := newChannelID(), newChannelID(), newChannelID(), newChannelID(), newChannelID()
	tests := []struct {
		name    string
		have    []string // listed by the owner at hello
		partial bool
		steps   []step
		refused float64
		regs    int // ChannelRegistered events written
	}{
		{"new uaid fills up", nil, false, []step{
			{"register", a, 200}, {"register", b, 200}, {"register", c, 200},
			{"register", d, 413}, {"register", a, 200}, {"register", d, 413},
			{"unregister", b, 200}, {"register", d, 200}, {"register", e, 413},
		}, 3, 5},
		{"owner's channels count", []string{a, b, c}, false, []step{
			{"register", d, 413}, {"register", c, 200}, {"unregister", a, 200}, {"register", d, 200},
		}, 1, 2},
		{"owner listed more than the limit", []string{a, b, c, d}, false, []step{
			{"register", e, 413}, {"register", d, 200}, {"unregister", d, 200}, {"register", e, 413},
			{"unregister", c, 200}, {"register", e, 200},
		}, 2, 2},
		{"partial list: what is known counts", []string{a}, true, []step{
			{"register", b, 200}, {"register", c, 200}, {"register", d, 413},
		}, 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withMetrics(func(c *Config) { c.MaxChannels = 3 }))
			uaid := schema.NewUAID()
			h.link.addUAID(uaid, tc.have...)
			h.link.partial = tc.partial
			ws, reply := h.hello(uaid)
			if reply["uaid"] != uaid {
				t.Fatalf("uaid not kept: %v", reply)
			}
			runSteps(t, ws, tc.steps)
			stillOpen(t, ws)
			if got := h.refusals(limitChannels); got != tc.refused {
				t.Errorf("channel refusals %v, want %v", got, tc.refused)
			}
			if regs, _ := h.countEvents(uaid); regs != tc.regs {
				t.Errorf("%d ChannelRegistered events, want %d", regs, tc.regs)
			}
		})
	}
}

// TestUnknownUnregister: an unregister of a channel the UAID does not have
// is answered 200 and writes nothing, unless the owner's list was partial.
func TestUnknownUnregister(t *testing.T) {
	known := newChannelID()
	tests := []struct {
		name    string
		partial bool
		unknown int // unregisters of random channels
		unregs  int // ChannelUnregistered events written
		counted float64
	}{
		{"complete list: nothing written", false, 50, 1, 50},
		{"partial list: written as before", true, 5, 7, 0}, // the second unregister of known too
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withMetrics(nil))
			uaid := schema.NewUAID()
			h.link.addUAID(uaid, known)
			h.link.partial = tc.partial
			ws, _ := h.hello(uaid)
			for range tc.unknown {
				if st := call(t, ws, "unregister", newChannelID()); st != 200 {
					t.Fatalf("unknown unregister status %v", st)
				}
			}
			runSteps(t, ws, []step{{"unregister", known, 200}, {"unregister", known, 200}})
			if _, unregs := h.countEvents(uaid); unregs != tc.unregs {
				t.Errorf("%d ChannelUnregistered events, want %d", unregs, tc.unregs)
			}
			if got := testutil.ToFloat64(h.srv.met.unknownUnr); got != tc.counted+1 && !tc.partial {
				t.Errorf("unknown unregisters counted %v, want %v", got, tc.counted+1)
			}
		})
	}
}

// TestRegistrationRate: past MaxRegistrationsPerMinute registers and
// unregisters get 429 with nothing written and the socket stays open; an
// unknown channel's unregister is free.
func TestRegistrationRate(t *testing.T) {
	h := newHarness(t, withMetrics(func(c *Config) { c.MaxRegistrationsPerMinute = 3 }))
	ws, reply := h.hello("")
	uaid := reply["uaid"].(string)
	a, b, c, d := newChannelID(), newChannelID(), newChannelID(), newChannelID()
	runSteps(t, ws, []step{
		{"register", a, 200}, {"register", b, 200}, {"unregister", a, 200},
		{"register", c, 429}, {"register", b, 429}, {"unregister", b, 429},
		{"unregister", d, 200}, // unknown: costs no registration
	})
	stillOpen(t, ws)
	if got := h.refusals(limitRegistrations); got != 3 {
		t.Errorf("registration refusals %v, want 3", got)
	}
	if regs, unregs := h.countEvents(uaid); regs != 2 || unregs != 1 {
		t.Errorf("%d registered, %d unregistered events; want 2 and 1", regs, unregs)
	}
}

// TestMessageRate: every client message after hello costs a token, acks
// of notifications this socket delivered excepted; past
// MaxMessagesPerMinute the socket is closed with 4774.
func TestMessageRate(t *testing.T) {
	const limit = 5
	tests := []struct {
		name   string
		send   func(t *testing.T, h *harness, c *websocket.Conn, uaid string, i int)
		n      int
		closed bool
	}{
		{"nacks within the limit", nack, limit, false},
		{"nacks past it", nack, limit + 1, true},
		{"broadcast_subscribe past it", func(t *testing.T, _ *harness, c *websocket.Conn, _ string, _ int) {
			send(t, c, map[string]any{"messageType": "broadcast_subscribe", "broadcasts": map[string]string{}})
		}, limit + 1, true},
		{"acks of versions not delivered here past it", func(t *testing.T, h *harness, c *websocket.Conn, uaid string, i int) {
			send(t, c, map[string]any{"messageType": "ack", "updates": []map[string]any{
				{"channelID": "x", "version": h.sealedVersion(uaid, newChannelID(), int64(i))}}})
		}, limit + 1, true},
		{"an ack with several foreign updates pays for each", func(t *testing.T, h *harness, c *websocket.Conn, uaid string, _ int) {
			var ups []map[string]any
			for j := range limit + 1 {
				ups = append(ups, map[string]any{"version": h.sealedVersion(uaid, newChannelID(), int64(j))})
			}
			send(t, c, map[string]any{"messageType": "ack", "updates": ups})
		}, 1, true},
		{"acks of garbage cost one per message", func(t *testing.T, h *harness, c *websocket.Conn, uaid string, _ int) {
			var ups []map[string]any
			for j := range 3 * limit {
				ups = append(ups, map[string]any{"version": fmt.Sprint("garbage", j)})
			}
			send(t, c, map[string]any{"messageType": "ack", "updates": ups})
		}, limit, false},
		{"acks of delivered notifications are free", func(t *testing.T, h *harness, c *websocket.Conn, uaid string, i int) {
			chid := newChannelID()
			v := h.sealedVersion(uaid, chid, int64(i))
			if err := h.link.session(t, uaid).Deliver(link.Notification{UAID: uaid, ChannelID: chid, Version: v, Ref: &pb.MessageRef{Offset: int64(i), ChannelId: chid}}); err != nil {
				t.Fatal(err)
			}
			recv(t, c)
			send(t, c, map[string]any{"messageType": "ack", "updates": []map[string]any{{"channelID": chid, "version": v}}})
		}, 3 * limit, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withMetrics(func(c *Config) { c.MaxMessagesPerMinute = limit }))
			ws, reply := h.hello("")
			uaid := reply["uaid"].(string)
			for i := range tc.n {
				tc.send(t, h, ws, uaid, i)
			}
			if tc.closed {
				expectClose(t, ws, closeBackoff)
				if got := h.refusals(limitMessages); got != 1 {
					t.Errorf("message refusals %v, want 1", got)
				}
				return
			}
			stillOpen(t, ws) // pings are not counted
			if got := h.refusals(limitMessages); got != 0 {
				t.Errorf("message refusals %v, want 0", got)
			}
		})
	}
}

func nack(t *testing.T, h *harness, c *websocket.Conn, uaid string, i int) {
	send(t, c, map[string]any{"messageType": "nack", "version": h.sealedVersion(uaid, newChannelID(), int64(i)), "code": 301})
}

// TestSizeBounds: client-supplied maps and lists past their bounds close
// the socket with 1008.
func TestSizeBounds(t *testing.T) {
	many := map[string]string{}
	for i := range protocol.MaxBroadcastEntries + 1 {
		many[fmt.Sprint("id", i)] = "v"
	}
	long := map[string]string{strings.Repeat("i", protocol.MaxBroadcastField+1): "v"}
	longVersion := map[string]string{"id": strings.Repeat("v", protocol.MaxBroadcastField+1)}
	fits := map[string]string{strings.Repeat("i", protocol.MaxBroadcastField): strings.Repeat("v", protocol.MaxBroadcastField)}
	for i := range protocol.MaxBroadcastEntries - 1 {
		fits[fmt.Sprint("id", i)] = "v"
	}
	updates := func(n int) []map[string]any {
		ups := make([]map[string]any, n)
		for i := range ups {
			ups[i] = map[string]any{"channelID": "c", "version": "v"}
		}
		return ups
	}
	tests := []struct {
		name  string
		hello map[string]string // hello broadcasts
		after map[string]any    // message after hello, nil for none
		limit string            // "" when accepted
	}{
		{"hello with too many broadcasts", many, nil, limitBroadcasts},
		{"hello with a long broadcast id", long, nil, limitBroadcasts},
		{"hello with a long version", longVersion, nil, limitBroadcasts},
		{"hello at the bounds", fits, nil, ""},
		{"broadcast_subscribe with too many", nil, map[string]any{"messageType": "broadcast_subscribe", "broadcasts": many}, limitBroadcasts},
		{"broadcast_subscribe at the bounds", nil, map[string]any{"messageType": "broadcast_subscribe", "broadcasts": fits}, ""},
		{"ack with too many updates", nil, map[string]any{"messageType": "ack", "updates": updates(protocol.MaxAckUpdates + 1)}, limitAckUpdates},
		{"ack at the bound", nil, map[string]any{"messageType": "ack", "updates": updates(protocol.MaxAckUpdates)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withMetrics(func(c *Config) { c.MaxMessagesPerMinute = 10 * protocol.MaxAckUpdates }))
			ws := h.dial()
			send(t, ws, map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": tc.hello})
			if tc.limit == limitBroadcasts && tc.after == nil {
				expectClose(t, ws, closePolicy)
			} else {
				if r := recv(t, ws); r["status"] != 200.0 {
					t.Fatalf("hello reply %v", r)
				}
				if tc.after != nil {
					send(t, ws, tc.after)
				}
				if tc.limit != "" {
					expectClose(t, ws, closePolicy)
				} else {
					if tc.after != nil && tc.after["messageType"] == "broadcast_subscribe" {
						recv(t, ws) // the errors for the unknown ids
					}
					stillOpen(t, ws)
				}
			}
			for _, l := range []string{limitBroadcasts, limitAckUpdates} {
				want := 0.0
				if l == tc.limit {
					want = 1
				}
				if got := h.refusals(l); got != want {
					t.Errorf("%s refusals %v, want %v", l, got, want)
				}
			}
		})
	}
}

// TestConnectionRatePerIP: past MaxConnectionsPerIPPerMinute an address's
// upgrades are answered 429.
func TestConnectionRatePerIP(t *testing.T) {
	h := newHarness(t, withMetrics(func(c *Config) { c.MaxConnectionsPerIPPerMinute = 2 }))
	h.srv.ipLimit.exempt = nil // the test client is on loopback
	h.dial()
	h.dial()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testTimeout}
	_, resp, err := d.Dial(h.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third dial: %v, %+v", err, resp)
	}
	resp.Body.Close()
	if got := h.refusals(limitConnectRate); got != 1 {
		t.Errorf("connection refusals %v, want 1", got)
	}
}

func TestIPLimiter(t *testing.T) {
	// The limiter counts on the monotonic clock from its start: times a
	// little after the limiters made below.
	now := time.Now().Add(time.Second)
	tests := []struct {
		name  string
		addrs []string // connections in order, at the same instant
		want  []bool
	}{
		{"per address", []string{"8.8.8.8:1", "8.8.8.8:2", "8.8.8.8:3", "8.8.4.4:1"}, []bool{true, true, false, true}},
		{"ipv6 by /64", []string{"[2001:db8:1:2::1]:1", "[2001:db8:1:2::ffff]:1", "[2001:db8:1:2:3::1]:9", "[2001:db8:1:3::1]:1"}, []bool{true, true, false, true}},
		{"v4-mapped is the v4 address", []string{"[::ffff:1.2.3.4]:1", "1.2.3.4:2", "1.2.3.4:3"}, []bool{true, true, false}},
		{"proxies exempt", []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "10.0.0.1:1", "10.0.0.1:1", "10.0.0.1:1", "[::1]:1", "[::1]:1", "[::1]:1"},
			[]bool{true, true, true, true, true, true, true, true, true}},
		{"unparsable admitted", []string{"pipe", "pipe", "pipe"}, []bool{true, true, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newIPLimiter(2)
			for i, a := range tc.addrs {
				if ok, _ := l.allow(a, now); ok != tc.want[i] {
					t.Fatalf("connection %d from %s: %v, want %v", i, a, ok, tc.want[i])
				}
			}
		})
	}
	// Refill: one more a minute/n later.
	l := newIPLimiter(2)
	for range 2 {
		l.allow("8.8.8.8:1", now)
	}
	if ok, _ := l.allow("8.8.8.8:1", now.Add(29*time.Second)); ok {
		t.Fatal("admitted before the refill")
	}
	if ok, _ := l.allow("8.8.8.8:1", now.Add(31*time.Second)); !ok {
		t.Fatal("not admitted after the refill")
	}
	// Disabled.
	if ok, _ := newIPLimiter(-1).allow("8.8.8.8:1", now); !ok {
		t.Fatal("a disabled limiter refused")
	}
}

// TestIPLimiterTableBound: the table never holds more than maxTrackedIPs;
// when full of busy addresses new ones are admitted untracked, and once
// their buckets are full again the table is pruned.
func TestIPLimiterTableBound(t *testing.T) {
	now := time.Now().Add(time.Second)
	l := newIPLimiter(1)
	for i := range maxTrackedIPs {
		a := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		if ok, untracked := l.allow(a.String()+":1", now); !ok || untracked {
			t.Fatalf("address %d: ok %v, untracked %v", i, ok, untracked)
		}
	}
	if ok, untracked := l.allow("12.0.0.1:1", now); !ok || !untracked {
		t.Fatalf("full table: ok %v, untracked %v; want admitted untracked", ok, untracked)
	}
	if len(l.byAddr) != maxTrackedIPs {
		t.Fatalf("table holds %d", len(l.byAddr))
	}
	later := now.Add(2 * time.Minute)
	if ok, untracked := l.allow("12.0.0.1:1", later); !ok || untracked {
		t.Fatalf("after the refill: ok %v, untracked %v", ok, untracked)
	}
	if len(l.byAddr) != 1 {
		t.Fatalf("not pruned: %d", len(l.byAddr))
	}
}

// TestLimitMetricNames: the series operators alert on are exported under
// these names, every limit label present from the start.
func TestLimitMetricNames(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	newHarness(t, func(c *Config) { c.Metrics = reg })
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range fams {
		series[f.GetName()] = len(f.GetMetric())
	}
	for name, n := range map[string]int{
		"pushlog_connector_client_refusals_total":     len(allLimits),
		"pushlog_connector_unknown_unregisters_total": 1,
		"pushlog_connector_hellos_total":              numHelloKinds,
	} {
		if series[name] != n {
			t.Errorf("%s: %d series, want %d", name, series[name], n)
		}
	}
}
