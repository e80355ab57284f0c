package route

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/remote"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	testParts = 4
	self      = "10.0.0.1:7000"
	peerB     = "10.0.0.2:7000"
	peerC     = "10.0.0.3:7000"
)

// fakeLocal is the local owner: it owns some partitions.
type fakeLocal struct {
	mu       sync.Mutex
	owns     map[int32]bool
	sessions map[string]link.Session
	calls    []string
}

func (l *fakeLocal) Owns(p int32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.owns[p]
}

func (l *fakeLocal) record(c string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
}

func (l *fakeLocal) CheckUAID(_ context.Context, id schema.UAID) (link.UAIDInfo, error) {
	uaid := id.String()
	if !l.Owns(schema.PartitionOf(uaid, testParts)) {
		return link.UAIDInfo{}, link.ErrNotOwner
	}
	l.record("check " + uaid)
	return link.UAIDInfo{Valid: true, Channels: [][16]byte{{1}}}, nil
}

func (l *fakeLocal) Attach(_ context.Context, id schema.UAID, s link.Session) error {
	uaid := id.String()
	if !l.Owns(schema.PartitionOf(uaid, testParts)) {
		return link.ErrNotOwner
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sessions[uaid] = s
	l.calls = append(l.calls, "attach "+uaid)
	return nil
}

func (l *fakeLocal) Detach(uaid schema.UAID, _ link.Session)  { l.record("detach " + uaid.String()) }
func (l *fakeLocal) Acked(uaid schema.UAID, _ *pb.MessageRef) { l.record("acked " + uaid.String()) }

func (l *fakeLocal) callList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// fakeRemote reaches other nodes; each address may answer an error.
type fakeRemote struct {
	mu    sync.Mutex
	errs  map[string]error
	calls []string
}

func (r *fakeRemote) call(c, addr string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c+" "+addr)
	return r.errs[addr]
}

func (r *fakeRemote) CheckUAID(_ context.Context, addr, _ string) (link.UAIDInfo, error) {
	err := r.call("check", addr)
	if err != nil {
		return link.UAIDInfo{}, err
	}
	return link.UAIDInfo{Valid: true, Channels: [][16]byte{{2}}}, nil
}
func (r *fakeRemote) Attach(_ context.Context, addr, _, _ string) error {
	return r.call("attach", addr)
}
func (r *fakeRemote) Detach(addr, _, _ string)               { _ = r.call("detach", addr) }
func (r *fakeRemote) Acked(addr, _ string, _ *pb.MessageRef) { _ = r.call("acked", addr) }

func (r *fakeRemote) callList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *fakeRemote) setErr(addr string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[addr] = err
}

// fakeOwners is the ownership table; refresh may change it.
type fakeOwners struct {
	mu        sync.Mutex
	owners    map[int32]string
	onRefresh func(map[int32]string)
	refreshes atomic.Int32
}

func (o *fakeOwners) Owner(p int32) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a, ok := o.owners[p]
	return a, ok
}

func (o *fakeOwners) Refresh(context.Context) error {
	o.refreshes.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.onRefresh != nil {
		o.onRefresh(o.owners)
	}
	return nil
}

func (o *fakeOwners) set(p int32, addr string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.owners[p] = addr
}

// conn is a client connection of the connection node.
type conn struct {
	id  string
	mu  sync.Mutex
	got []int64
}

func (c *conn) ConnID() string { return c.id }
func (c *conn) Deliver(n link.Notification) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, n.Ref.GetOffset())
	return nil
}
func (c *conn) offsets() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

type rig struct {
	r      *Router
	local  *fakeLocal
	remote *fakeRemote
	owners *fakeOwners
}

// newRig: partition 0 is local, 1 on peerB, 2 on peerC, 3 unowned.
func newRig(t *testing.T) *rig {
	g := &rig{
		local:  &fakeLocal{owns: map[int32]bool{0: true}, sessions: map[string]link.Session{}},
		remote: &fakeRemote{errs: map[string]error{}},
		owners: &fakeOwners{owners: map[int32]string{0: self, 1: peerB, 2: peerC}},
	}
	r, err := New(Config{Partitions: testParts, Self: self, Local: g.local, Remote: g.remote, Owners: g.owners,
		RetryBackoff: time.Millisecond, ReattachRetry: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	g.r = r
	return g
}

// uaidOf parses a UAID the test made.
func uaidOf(s string) schema.UAID {
	id, err := schema.ParseUAID(s)
	if err != nil {
		panic(err)
	}
	return id
}

func uaidIn(p int32) string {
	for {
		if u := schema.NewUAID(); schema.PartitionOf(u, testParts) == p {
			return u
		}
	}
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func TestRoutesByPartition(t *testing.T) {
	g := newRig(t)
	tests := []struct {
		p          int32
		wantLocal  bool
		wantRemote string
		wantChan   byte // the channels the answering owner listed come back
	}{
		{0, true, "", 1},
		{1, false, "check " + peerB, 2},
		{2, false, "check " + peerC, 2},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.p), func(t *testing.T) {
			u := uaidIn(tc.p)
			info, err := g.r.CheckUAID(shortCtx(t), uaidOf(u))
			if err != nil || !info.Valid || len(info.Channels) != 1 || info.Channels[0][0] != tc.wantChan {
				t.Fatalf("CheckUAID = %+v, %v", info, err)
			}
			if got := slices.Contains(g.local.callList(), "check "+u); got != tc.wantLocal {
				t.Fatalf("local called: %v, want %v", got, tc.wantLocal)
			}
			if tc.wantRemote != "" && !slices.Contains(g.remote.callList(), tc.wantRemote) {
				t.Fatalf("remote calls %v, want %q", g.remote.callList(), tc.wantRemote)
			}
		})
	}
	// Unowned: retried until the context ends, as ErrNotOwner.
	_, err := g.r.CheckUAID(shortCtx(t), uaidOf(uaidIn(3)))
	if !errors.Is(err, link.ErrNotOwner) || g.owners.refreshes.Load() == 0 {
		t.Fatalf("err = %v (refreshes %d), want ErrNotOwner after refreshing", err, g.owners.refreshes.Load())
	}
}

// TestNotOwnerRefreshes: a stale table sends to a node that is not the
// owner any more; the router refreshes and goes to the new one.
func TestNotOwnerRefreshes(t *testing.T) {
	g := newRig(t)
	g.remote.setErr(peerB, fmt.Errorf("%s: %w", peerB, link.ErrNotOwner))
	g.owners.onRefresh = func(m map[int32]string) { m[1] = peerC }
	if err := g.r.Attach(shortCtx(t), uaidOf(uaidIn(1)), &conn{id: "c1"}); err != nil {
		t.Fatal(err)
	}
	if calls := g.remote.callList(); !slices.Equal(calls, []string{"attach " + peerB, "attach " + peerC}) {
		t.Fatalf("calls %v", calls)
	}
	// Unreachable is retried the same way.
	g.owners.onRefresh = func(m map[int32]string) { m[2] = peerB }
	g.remote.setErr(peerB, nil)
	g.remote.setErr(peerC, fmt.Errorf("%w: down", remote.ErrUnavailable))
	if _, err := g.r.CheckUAID(shortCtx(t), uaidOf(uaidIn(2))); err != nil {
		t.Fatal(err)
	}
}

func TestAttachDetach(t *testing.T) {
	g := newRig(t)
	ul, ur := uaidIn(0), uaidIn(1)
	cl, cr := &conn{id: "cl"}, &conn{id: "cr"}
	if err := g.r.Attach(shortCtx(t), uaidOf(ul), cl); err != nil {
		t.Fatal(err)
	}
	if err := g.r.Attach(shortCtx(t), uaidOf(ur), cr); err != nil {
		t.Fatal(err)
	}
	// The node link finds the remote one's session; its deliveries reach
	// the connection.
	s := g.r.FindSession(uaidOf(ur), "cr")
	if s == nil || g.r.FindSession(uaidOf(ur), "other") != nil {
		t.Fatal("FindSession")
	}
	if err := s.Deliver(link.Notification{Ref: &pb.MessageRef{Partition: 1, Offset: 5}}); err != nil {
		t.Fatal(err)
	}
	if got := cr.offsets(); !slices.Equal(got, []int64{5}) {
		t.Fatalf("delivered %v", got)
	}
	g.r.Detach(uaidOf(ul), cl)
	g.r.Detach(uaidOf(ur), cr)
	if !slices.Contains(g.local.callList(), "detach "+ul) || !slices.Contains(g.remote.callList(), "detach "+peerB) {
		t.Fatalf("detach not routed: local %v remote %v", g.local.callList(), g.remote.callList())
	}
	if g.r.FindSession(uaidOf(ur), "cr") != nil || g.r.Stats().Sessions != 0 {
		t.Fatal("session still registered after Detach")
	}
	// A failed attach leaves nothing behind.
	if err := g.r.Attach(shortCtx(t), uaidOf(uaidIn(3)), &conn{id: "x"}); err == nil {
		t.Fatal("attach to an unowned partition succeeded")
	}
	if g.r.Stats().Sessions != 0 {
		t.Fatal("failed attach registered")
	}
}

// TestNoDuplicatePerConnection: what a connection already carried is not
// passed again, whichever owner sends it; acked messages never.
func TestNoDuplicatePerConnection(t *testing.T) {
	g := newRig(t)
	u := uaidIn(1)
	c := &conn{id: "c"}
	if err := g.r.Attach(shortCtx(t), uaidOf(u), c); err != nil {
		t.Fatal(err)
	}
	s := g.r.FindSession(uaidOf(u), "c")
	ref := func(off int64) link.Notification {
		return link.Notification{Ref: &pb.MessageRef{Partition: 1, Offset: off}}
	}
	for _, off := range []int64{1, 2, 1, 2} { // a new owner resends 1 and 2
		if err := s.Deliver(ref(off)); err != nil {
			t.Fatal(err)
		}
	}
	g.r.Acked(uaidOf(u), &pb.MessageRef{Partition: 1, Offset: 3}) // acked before it arrives
	_ = s.Deliver(ref(3))
	if got := c.offsets(); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("connection got %v, want [1 2]", got)
	}
	st := g.r.Stats()
	if st.Suppressed != 3 || st.Unacked != 2 {
		t.Fatalf("stats %+v", st)
	}
	g.r.Acked(uaidOf(u), &pb.MessageRef{Partition: 1, Offset: 1})
	if !slices.Contains(g.remote.callList(), "acked "+peerB) {
		t.Fatalf("ack not sent to the owner: %v", g.remote.callList())
	}
	if st := g.r.Stats(); st.Unacked != 1 {
		t.Fatalf("unacked %d after an ack", st.Unacked)
	}
}

func TestSeenBounded(t *testing.T) {
	g := newRig(t)
	u := uaidIn(0)
	if err := g.r.Attach(shortCtx(t), uaidOf(u), &conn{id: "c"}); err != nil {
		t.Fatal(err)
	}
	s := g.r.FindSession(uaidOf(u), "c").(*session)
	for off := range int64(5 * maxSeen) {
		ref := &pb.MessageRef{Partition: 0, Offset: off}
		_ = s.Deliver(link.Notification{Ref: ref})
		g.r.Acked(uaidOf(u), ref)
	}
	s.mu.Lock()
	n := len(s.seen)
	s.mu.Unlock()
	if n > maxSeen+1 {
		t.Fatalf("seen holds %d entries", n)
	}
	if g.r.Stats().Unacked != 0 {
		t.Fatalf("unacked %d", g.r.Stats().Unacked)
	}
}

// TestDrain: no delivery once draining; Drain returns when the clients
// acked what they had.
func TestDrain(t *testing.T) {
	g := newRig(t)
	u := uaidIn(0)
	if err := g.r.Attach(shortCtx(t), uaidOf(u), &conn{id: "c"}); err != nil {
		t.Fatal(err)
	}
	s := g.r.FindSession(uaidOf(u), "c")
	ref := &pb.MessageRef{Partition: 0, Offset: 1}
	_ = s.Deliver(link.Notification{Ref: ref})
	done := make(chan struct{})
	go func() { g.r.Drain(context.Background()); close(done) }()
	time.Sleep(30 * time.Millisecond)
	if err := s.Deliver(link.Notification{Ref: &pb.MessageRef{Partition: 0, Offset: 2}}); !errors.Is(err, link.ErrSessionClosed) {
		t.Fatalf("delivery while draining: %v", err)
	}
	select {
	case <-done:
		t.Fatal("drain returned with an unacked delivery")
	default:
	}
	g.r.Acked(uaidOf(u), ref)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not return after the ack")
	}
	// Bounded by its context.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	g2 := newRig(t)
	u2 := uaidIn(0)
	_ = g2.r.Attach(shortCtx(t), uaidOf(u2), &conn{id: "c"})
	_ = g2.r.FindSession(uaidOf(u2), "c").Deliver(link.Notification{Ref: ref})
	g2.r.Drain(ctx)
}

// TestFollowsMovedPartitions: when the table says a partition moved, or a
// link broke, the sessions are attached at the (new) owner.
func TestFollowsMovedPartitions(t *testing.T) {
	g := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = g.r.Run(ctx) }()
	u := uaidIn(1)
	if err := g.r.Attach(shortCtx(t), uaidOf(u), &conn{id: "c"}); err != nil {
		t.Fatal(err)
	}
	g.owners.set(1, peerC)
	g.r.TableChanged(map[int32]string{1: peerC})
	waitFor(t, "re-attach at the new owner", func() bool { return slices.Contains(g.remote.callList(), "attach "+peerC) })
	if s := g.r.FindSession(uaidOf(u), "c").(*session); s.routeAddr() != peerC {
		t.Fatalf("route %q", s.routeAddr())
	}
	if !slices.Contains(g.remote.callList(), "detach "+peerB) {
		t.Fatalf("the previous owner was not told: %v", g.remote.callList())
	}

	// The link to peerC breaks, and it is unreachable for a while: the
	// router keeps trying until it works.
	g.remote.setErr(peerC, fmt.Errorf("%w: down", remote.ErrUnavailable))
	n := len(g.remote.callList())
	g.r.PeerChanged(peerC)
	waitFor(t, "retries", func() bool { return len(g.remote.callList()) > n+3 })
	g.remote.setErr(peerC, nil)
	// Once an attempt succeeds, the retries stop.
	waitFor(t, "attached again", func() bool {
		before := len(g.remote.callList())
		time.Sleep(50 * time.Millisecond) // five retry periods
		return len(g.remote.callList()) == before
	})

	// A partition moving here attaches to the local owner.
	g.local.mu.Lock()
	g.local.owns[1] = true
	g.local.mu.Unlock()
	g.owners.set(1, self)
	g.r.TableChanged(map[int32]string{1: self})
	waitFor(t, "local attach", func() bool { return slices.Contains(g.local.callList(), "attach "+u) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestOwnTable: without Config.Owners the router builds its table from
// Config.Table, Run refreshes it, and a partition that moved takes its
// sessions to the new owner.
func TestOwnTable(t *testing.T) {
	var mu sync.Mutex
	owners := map[int32]string{0: self, 1: peerB}
	local := &fakeLocal{owns: map[int32]bool{0: true}, sessions: map[string]link.Session{}}
	rem := &fakeRemote{errs: map[string]error{}}
	r, err := New(Config{Partitions: testParts, Self: self, Local: local, Remote: rem,
		Table: TableConfig{Every: 5 * time.Millisecond, MinGap: time.Millisecond,
			Fetch: func(context.Context) (map[int32]string, error) {
				mu.Lock()
				defer mu.Unlock()
				return maps.Clone(owners), nil
			}},
		RetryBackoff: time.Millisecond, ReattachRetry: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Partitions: testParts, Self: self, Local: local}); err == nil {
		t.Fatal("New without Owners or Table.Fetch: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	u := uaidIn(1)
	if err := r.Attach(shortCtx(t), uaidOf(u), &conn{id: "c"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rem.callList(), "attach "+peerB) {
		t.Fatalf("not attached at the table's owner: %v", rem.callList())
	}
	mu.Lock()
	owners = map[int32]string{0: self, 1: peerC}
	mu.Unlock()
	waitFor(t, "re-attach at the new owner", func() bool { return slices.Contains(rem.callList(), "attach "+peerC) })
}
