package remote

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// fakeOwner answers as a partition owner would and records the calls.
type fakeOwner struct {
	mu          sync.Mutex
	valid       map[string]bool
	chans       map[string]link.UAIDInfo // what CheckUAID answers beyond valid
	notOwner    bool
	sessions    map[string]link.Session // uaid -> attached session
	detached    []string                // conn ids
	acked       []*pb.MessageRef
	redelivered chan link.Session
	attachedCh  chan link.Session
}

func newFakeOwner() *fakeOwner {
	return &fakeOwner{valid: map[string]bool{}, chans: map[string]link.UAIDInfo{}, sessions: map[string]link.Session{},
		redelivered: make(chan link.Session, 16), attachedCh: make(chan link.Session, 16)}
}

// boomUAID is a UAID whose check fails at the owner.
const boomUAID = "b00b00b00b00b00b00b00b00b00b00b0"

func (o *fakeOwner) CheckUAID(_ context.Context, id schema.UAID) (link.UAIDInfo, error) {
	uaid := id.String()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.notOwner {
		return link.UAIDInfo{}, link.ErrNotOwner
	}
	if uaid == boomUAID {
		return link.UAIDInfo{}, errors.New("kafka is down")
	}
	info := o.chans[uaid]
	info.Valid = o.valid[uaid]
	return info, nil
}

func (o *fakeOwner) Attach(_ context.Context, id schema.UAID, s link.Session) error {
	uaid := id.String()
	o.mu.Lock()
	if o.notOwner {
		o.mu.Unlock()
		return link.ErrNotOwner
	}
	o.sessions[uaid] = s
	o.mu.Unlock()
	o.attachedCh <- s
	return nil
}

// Detach behaves like the owner: only the current session of that
// connection id goes (and a presence session only detaches itself).
func (o *fakeOwner) Detach(id schema.UAID, s link.Session) {
	uaid := id.String()
	o.mu.Lock()
	defer o.mu.Unlock()
	cur := o.sessions[uaid]
	if cur == nil || cur.ConnID() != s.ConnID() {
		return
	}
	if p, ok := s.(interface{ FromPresence() bool }); ok && p.FromPresence() && cur != s {
		return
	}
	delete(o.sessions, uaid)
	o.detached = append(o.detached, s.ConnID())
}

func (o *fakeOwner) Acked(_ schema.UAID, ref *pb.MessageRef) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.acked = append(o.acked, ref)
}

func (o *fakeOwner) Redeliver(_ schema.UAID, s link.Session) { o.redelivered <- s }

func (o *fakeOwner) session(uaid string) link.Session {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sessions[uaid]
}

func (o *fakeOwner) set(uaid string, s link.Session) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sessions[uaid] = s
}

func (o *fakeOwner) detachedIDs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.detached...)
}

// recSession is a client connection on a connection node.
type recSession struct {
	id   string
	got  chan link.Notification
	fail bool
}

func (s *recSession) ConnID() string { return s.id }
func (s *recSession) Deliver(n link.Notification) error {
	if s.fail {
		return link.ErrSessionClosed
	}
	select {
	case s.got <- n:
		return nil
	default:
		return link.ErrSessionClosed
	}
}

// fakeSessions is a connection node's registry.
type fakeSessions struct {
	mu      sync.Mutex
	byKey   map[proxyKey]*recSession
	changed chan string
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{byKey: map[proxyKey]*recSession{}, changed: make(chan string, 64)}
}

func (f *fakeSessions) add(uaid, conn string) *recSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &recSession{id: conn, got: make(chan link.Notification, 16)}
	f.byKey[proxyKey{uaid, conn}] = s
	return s
}

func (f *fakeSessions) FindSession(uaid schema.UAID, connID string) link.Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.byKey[proxyKey{uaid.String(), connID}]; s != nil {
		return s
	}
	return nil
}

func (f *fakeSessions) PeerChanged(addr string) {
	select {
	case f.changed <- addr:
	default:
	}
}

// testNode is a running Node with its fakes.
type testNode struct {
	*Node
	owner    *fakeOwner
	sessions *fakeSessions
	ln       net.Listener
	done     chan struct{}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startNode runs a Node on a fresh loopback port (or on addr).
func startNode(t testing.TB, name, addr string, mod func(*Config)) *testNode {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{owner: newFakeOwner(), sessions: newFakeSessions(), ln: ln, done: make(chan struct{})}
	cfg := Config{
		NodeID: name, Addr: ln.Addr().String(), Secret: testSecret,
		Heartbeat: 50 * time.Millisecond, DialTimeout: time.Second,
		BreakerOpen: 100 * time.Millisecond, Logger: quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	h := Handlers{Owner: tn.owner, Sessions: tn.sessions}
	go func() { _ = n.Serve(context.Background(), ln, h); close(tn.done) }()
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	_ = tn.Close()
	<-tn.done
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func ctx5(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testNote(uaid string, off int64) link.Notification {
	return link.Notification{
		UAID: uaid, ChannelID: "01234567-89ab-cdef-0123-456789abcdef", Version: "v1",
		Data: []byte{1, 2, 3}, Encoding: "aes128gcm",
		Ref: &pb.MessageRef{Partition: 2, Offset: off, ChannelId: "01234567-89ab-cdef-0123-456789abcdef", AcceptedMs: 7},
	}
}

var testUAID = schema.NewUAID()

// uaidOf parses a UAID the test made.
func uaidOf(s string) schema.UAID {
	id, err := schema.ParseUAID(s)
	if err != nil {
		panic(err)
	}
	return id
}
