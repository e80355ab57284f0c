package remote

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/connector/link"
)

func TestNewValidates(t *testing.T) {
	ok := Config{NodeID: "n", Addr: "127.0.0.1:1", Secret: testSecret}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"short secret", func(c *Config) { c.Secret = []byte("short") }, "secret"},
		{"no addr", func(c *Config) { c.Addr = "" }, "Addr"},
		{"long id", func(c *Config) { c.NodeID = strings.Repeat("x", maxIdentity+1) }, "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	n, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	// The owner comes with Serve.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	if err := n.Serve(t.Context(), ln, Handlers{}); err == nil || !strings.Contains(err.Error(), "Owner") {
		t.Fatalf("Serve without an owner: err = %v, want it to mention %q", err, "Owner")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve that failed left its listener open: %v", err)
	}
}

// TestRoundTrips runs every call of the link between a connection node and
// an owner node.
func TestRoundTrips(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	cn := startNode(t, "conn", "", nil)
	own.owner.valid[testUAID] = true

	info, err := cn.CheckUAID(ctx5(t), own.Addr(), testUAID)
	if err != nil || !info.Valid || len(info.Channels) != 0 || info.Partial {
		t.Fatalf("CheckUAID = %+v, %v", info, err)
	}
	if info, err := cn.CheckUAID(ctx5(t), own.Addr(), "unknown"); err != nil || info.Valid {
		t.Fatalf("CheckUAID(unknown) = %+v, %v", info, err)
	}
	if _, err := cn.CheckUAID(ctx5(t), own.Addr(), boomUAID); err == nil || !strings.Contains(err.Error(), "kafka is down") {
		t.Fatalf("owner error not carried: %v", err)
	}

	// Attach: the owner gets a session that delivers back over the link.
	client := cn.sessions.add(testUAID, "c1")
	if err := cn.Attach(ctx5(t), own.Addr(), testUAID, "c1"); err != nil {
		t.Fatal(err)
	}
	proxy := recv(t, own.owner.attachedCh, "attach")
	if proxy.ConnID() != "c1" {
		t.Fatalf("proxy conn id %q", proxy.ConnID())
	}
	want := testNote(testUAID, 42)
	if err := proxy.Deliver(want); err != nil {
		t.Fatal(err)
	}
	got := recv(t, client.got, "delivery")
	if got.Version != want.Version || !slices.Equal(got.Data, want.Data) || got.Encoding != want.Encoding ||
		got.UAID != testUAID || !proto.Equal(got.Ref, want.Ref) || got.ChannelID != want.ChannelID {
		t.Fatalf("delivered %+v, want %+v", got, want)
	}

	// Acked reaches the owner.
	cn.Acked(own.Addr(), testUAID, want.Ref)
	waitFor(t, "ack at the owner", func() bool {
		own.owner.mu.Lock()
		defer own.owner.mu.Unlock()
		return len(own.owner.acked) == 1 && proto.Equal(own.owner.acked[0], want.Ref)
	})

	// Detach forgets the session at the owner.
	cn.Detach(own.Addr(), testUAID, "c1")
	waitFor(t, "detach at the owner", func() bool { return own.owner.session(testUAID) == nil })
}

func TestNotOwner(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	cn := startNode(t, "conn", "", nil)
	own.owner.notOwner = true
	if _, err := cn.CheckUAID(ctx5(t), own.Addr(), testUAID); !errors.Is(err, link.ErrNotOwner) {
		t.Fatalf("CheckUAID err = %v, want ErrNotOwner", err)
	}
	if err := cn.Attach(ctx5(t), own.Addr(), testUAID, "c1"); !errors.Is(err, link.ErrNotOwner) {
		t.Fatalf("Attach err = %v, want ErrNotOwner", err)
	}
}

// TestDeliverToGoneSession: a delivery for a connection the connection
// node does not have detaches it at the owner.
func TestDeliverToGoneSession(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	cn := startNode(t, "conn", "", nil)
	if err := cn.Attach(ctx5(t), own.Addr(), testUAID, "gone"); err != nil {
		t.Fatal(err)
	}
	proxy := recv(t, own.owner.attachedCh, "attach")
	if err := proxy.Deliver(testNote(testUAID, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "detach after Gone", func() bool { return own.owner.session(testUAID) == nil })
}

func TestAuthRejected(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	cn := startNode(t, "conn", "", func(c *Config) { c.Secret = []byte("another-secret-of-16+") })
	_, err := cn.CheckUAID(ctx5(t), own.Addr(), testUAID)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("err = %v, want an authentication failure", err)
	}
	if own.owner.session(testUAID) != nil {
		t.Fatal("unauthenticated peer reached the owner")
	}
}

// TestAcceptorMustProveSecret: a dialer refuses an acceptor that does not
// know the secret (a fake owner cannot collect deliveries or hellos).
func TestAcceptorMustProveSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		nonce, _ := newNonce()
		_ = writeFrame(nc, &frame{typ: tChallenge, nonce: nonce, node: "evil", addr: "evil:1"})
		if _, err := readTyped(br, tAuth); err != nil {
			return
		}
		_ = writeFrame(nc, &frame{typ: tWelcome, mac: make([]byte, 32)})
		time.Sleep(time.Second)
	}()
	cn := startNode(t, "conn", "", nil)
	_, err = cn.CheckUAID(ctx5(t), ln.Addr().String(), testUAID)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "proof") {
		t.Fatalf("err = %v, want the acceptor's proof refused", err)
	}
}

func TestGarbageRefused(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	nc, err := net.Dial("tcp", own.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			return // closed by the node
		}
	}
}

// TestBreaker: a peer that refuses connections opens its breaker; calls
// then fail fast until it half-opens and the peer is back.
func TestBreaker(t *testing.T) {
	cn := startNode(t, "conn", "", func(c *Config) { c.BreakerOpen = 300 * time.Millisecond })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for range DefaultBreakerFailures {
		if _, err := cn.CheckUAID(ctx5(t), addr, testUAID); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	_, err = cn.CheckUAID(ctx5(t), addr, testUAID)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "breaker open") {
		t.Fatalf("err = %v, want the breaker open", err)
	}
	// The peer comes up: after the open period a call goes through.
	own := startNode(t, "owner", addr, func(c *Config) { c.Addr = addr })
	own.owner.valid[testUAID] = true
	waitFor(t, "breaker half-open and the call through", func() bool {
		v, err := cn.CheckUAID(ctx5(t), addr, testUAID)
		return err == nil && v.Valid
	})
}

// TestLinkLossDetaches: when the link breaks, the owner detaches the
// sessions attached through it and the connection node is told; a new
// call dials again.
func TestLinkLossDetaches(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	addr := own.Addr()
	cn := startNode(t, "conn", "", nil)
	cn.sessions.add(testUAID, "c1")
	if err := cn.Attach(ctx5(t), addr, testUAID, "c1"); err != nil {
		t.Fatal(err)
	}
	recv(t, own.owner.attachedCh, "attach")
	drain(cn.sessions.changed)

	own.stop() // the owner's node goes away
	if !slices.Contains(own.owner.detachedIDs(), "c1") {
		t.Fatalf("owner did not detach the session: %v", own.owner.detachedIDs())
	}
	if got := recv(t, cn.sessions.changed, "peer changed"); got != addr {
		t.Fatalf("PeerChanged(%q), want %q", got, addr)
	}

	// It comes back on the same address: the connection node reconnects.
	own2 := startNode(t, "owner", addr, func(c *Config) { c.Addr = addr })
	waitFor(t, "re-attach over a new link", func() bool {
		return cn.Attach(ctx5(t), addr, testUAID, "c1") == nil
	})
	recv(t, own2.owner.attachedCh, "attach on the new link")
}

// TestReattachNewGeneration: attaching a connection again (over a new
// link) detaches the old proxy first, and the old link's loss never
// detaches the new one.
func TestReattachNewGeneration(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	cn := startNode(t, "conn", "", nil)
	cn.sessions.add(testUAID, "c1")
	if err := cn.Attach(ctx5(t), own.Addr(), testUAID, "c1"); err != nil {
		t.Fatal(err)
	}
	first := recv(t, own.owner.attachedCh, "attach")
	// Another connection node attaches the same connection id (as a new
	// link would): the first proxy is detached, the second attached.
	cn2 := startNode(t, "conn2", "", nil)
	if err := cn2.Attach(ctx5(t), own.Addr(), testUAID, "c1"); err != nil {
		t.Fatal(err)
	}
	second := recv(t, own.owner.attachedCh, "second attach")
	if first == second || own.owner.session(testUAID) != second {
		t.Fatal("second attach did not replace the first")
	}
	cn.stop() // the first link breaks
	time.Sleep(200 * time.Millisecond)
	if own.owner.session(testUAID) != second {
		t.Fatal("the old link's loss detached the newer attach")
	}
}

// TestPresenceSession: the owner delivers to a connection it learned from
// presence over a link it dials; the first delivery waits for the dial and
// is redelivered when the link is up.
func TestPresenceSession(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	cn := startNode(t, "conn", "", nil)
	client := cn.sessions.add(testUAID, "c1")
	s := own.Session(cn.Addr(), uaidOf(testUAID), "c1")
	if p, ok := s.(interface{ FromPresence() bool }); !ok || !p.FromPresence() {
		t.Fatal("presence session not marked")
	}
	own.owner.set(testUAID, s)
	// Either the dial is done (delivered) or it is redelivered later.
	if err := s.Deliver(testNote(testUAID, 1)); err != nil {
		if recv(t, own.owner.redelivered, "redeliver") != s {
			t.Fatal("redelivered another session")
		}
		if err := s.Deliver(testNote(testUAID, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := recv(t, client.got, "delivery"); got.Ref.GetOffset() != 1 {
		t.Fatalf("got %+v", got)
	}

	// A presence session for this node itself uses the local registry.
	local := cn.Session(cn.Addr(), uaidOf(testUAID), "c1")
	if err := local.Deliver(testNote(testUAID, 2)); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, client.got, "local delivery"); got.Ref.GetOffset() != 2 {
		t.Fatalf("got %+v", got)
	}
	// One for a connection that is gone detaches itself.
	gone := cn.Session(cn.Addr(), uaidOf(testUAID), "nope")
	cn.owner.set(testUAID, gone)
	if err := gone.Deliver(testNote(testUAID, 3)); err == nil {
		t.Fatal("delivered to a missing connection")
	}
	waitFor(t, "local presence session detached", func() bool { return cn.owner.session(testUAID) == nil })
}

// TestPresenceSessionUnreachable: a presence session for a node that
// cannot be reached is detached; the messages stay with the owner.
func TestPresenceSessionUnreachable(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := own.Session(addr, uaidOf(testUAID), "c1")
	own.owner.set(testUAID, s)
	_ = s.Deliver(testNote(testUAID, 1))
	waitFor(t, "unreachable presence session detached", func() bool { return own.owner.session(testUAID) == nil })
}

// TestHeartbeatTimeout: a peer that authenticates and then goes silent is
// dropped after three heartbeats.
func TestHeartbeatTimeout(t *testing.T) {
	own := startNode(t, "owner", "", nil)
	nc, err := net.Dial("tcp", own.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	if _, err := dialHandshake(nc, br, testSecret, identity{node: "mute", addr: "mute:1"}, time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := readFrame(br, nil); err != nil {
			break // the node closed the link
		}
	}
	if time.Since(start) >= 10*time.Second {
		t.Fatal("silent peer not dropped")
	}
}

func drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestCheckChannels: the owner's channel list crosses the link, a partial
// one stays partial, and one longer than the link carries arrives
// truncated and marked partial.
func TestCheckChannels(t *testing.T) {
	// A 512 KiB answer must be written within 3 heartbeats: the tests'
	// 50ms heartbeat is too short for that on a loaded machine.
	slow := func(c *Config) { c.Heartbeat = time.Second }
	own := startNode(t, "owner", "", slow)
	cn := startNode(t, "conn", "", slow)
	many := make([][16]byte, maxLinkChannels+5)
	for i := range many {
		many[i] = [16]byte{byte(i), byte(i >> 8), byte(i >> 16), 0xaa}
	}
	tests := []struct {
		name        string
		info        link.UAIDInfo
		wantN       int
		wantPartial bool
	}{
		{"none", link.UAIDInfo{}, 0, false},
		{"three", link.UAIDInfo{Channels: many[:3]}, 3, false},
		{"partial at the owner", link.UAIDInfo{Channels: many[:2], Partial: true}, 2, true},
		{"more than the link carries", link.UAIDInfo{Channels: many}, maxLinkChannels, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			uaid := fmt.Sprintf("%032x", i+1)
			own.owner.mu.Lock()
			own.owner.valid[uaid] = true
			own.owner.chans[uaid] = tc.info
			own.owner.mu.Unlock()
			got, err := cn.CheckUAID(ctx5(t), own.Addr(), uaid)
			if err != nil || !got.Valid || got.Partial != tc.wantPartial || len(got.Channels) != tc.wantN {
				t.Fatalf("CheckUAID = valid %v, %d channels, partial %v, %v; want %d, partial %v",
					got.Valid, len(got.Channels), got.Partial, err, tc.wantN, tc.wantPartial)
			}
			if !slices.Equal(got.Channels, many[:tc.wantN]) {
				t.Fatal("channels differ")
			}
		})
	}
}
