// Package remote is the node link of a pushlog cluster: authenticated,
// persistent TCP connections between connector nodes. A connection node
// asks the owner of a UAID's partition over it (CheckUAID, Attach, Detach,
// Acked), and the owner delivers notifications back over it to the client's
// session. A link is authenticated with a shared secret (auth.go), kept
// alive by heartbeats, and each peer sits behind a gobreaker circuit
// breaker. When a link breaks, the owner detaches every session that
// delivered through it: their messages stay pending (never dropped) until
// the connection node attaches them again.
package remote

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// ErrUnavailable means the peer cannot be reached now (dial failed, breaker
// open, link broke during the call). Routers refresh and retry.
var ErrUnavailable = errors.New("node link unavailable")

// MinSecret is the shortest accepted shared secret.
const MinSecret = 16

// Defaults of Config.
const (
	DefaultDialTimeout     = 2 * time.Second
	DefaultCallTimeout     = 5 * time.Second
	DefaultHeartbeat       = time.Second
	DefaultQueueSize       = 16384
	DefaultBreakerFailures = 3
	DefaultBreakerOpen     = 2 * time.Second
)

// Owner is the local partition owner, which answers the peers' calls.
type Owner interface {
	link.Link
	// Redeliver sends uaid's pending messages to s again if s is still its
	// session (a link that was being dialed came up).
	Redeliver(uaid schema.UAID, s link.Session)
}

// Sessions is the connection node's side: its local client sessions.
type Sessions interface {
	// FindSession returns the local session of uaid with connection id
	// connID, or nil. Its Deliver must not block.
	FindSession(uaid schema.UAID, connID string) link.Session
	// PeerChanged says a link with the node at addr came up or broke: the
	// sessions that node owns should be attached again.
	PeerChanged(addr string)
}

// Handlers are the local components the node link serves and tells,
// given to Serve: the owner and the router are built with the Node (they
// dial through it), so they reach it only once it serves.
type Handlers struct {
	Owner    Owner    // answers the peers' calls; required
	Sessions Sessions // this node's client sessions; nil: none
}

// Config configures a Node.
type Config struct {
	NodeID string // this node's id
	Addr   string // this node's link address as peers dial it
	Secret []byte // shared by every node; at least MinSecret bytes

	DialTimeout time.Duration // default 2s, handshake included
	CallTimeout time.Duration // bound on answering a peer's CheckUAID/Attach; default 5s
	Heartbeat   time.Duration // ping interval; a peer silent 3 heartbeats is dead. Default 1s
	QueueSize   int           // frames queued per link; default 16384
	// BreakerFailures consecutive failures to reach a peer open its
	// breaker for BreakerOpen: calls and deliveries fail fast meanwhile.
	BreakerFailures uint32
	BreakerOpen     time.Duration
	Logger          *slog.Logger
}

func (c *Config) normalize() error {
	var errs []error
	if len(c.Secret) < MinSecret {
		errs = append(errs, fmt.Errorf("the link secret must be at least %d bytes", MinSecret))
	}
	if c.NodeID == "" || c.Addr == "" {
		errs = append(errs, errors.New("NodeID and Addr are required"))
	}
	if len(c.NodeID) > maxIdentity || len(c.Addr) > maxIdentity {
		errs = append(errs, fmt.Errorf("NodeID and Addr must be at most %d bytes", maxIdentity))
	}
	if len(errs) > 0 {
		return fmt.Errorf("node link config: %w", errors.Join(errs...))
	}
	// A zero or negative setting means its default.
	c.DialTimeout = cmp.Or(max(c.DialTimeout, 0), DefaultDialTimeout)
	c.CallTimeout = cmp.Or(max(c.CallTimeout, 0), DefaultCallTimeout)
	c.Heartbeat = cmp.Or(max(c.Heartbeat, 0), DefaultHeartbeat)
	c.BreakerOpen = cmp.Or(max(c.BreakerOpen, 0), DefaultBreakerOpen)
	c.QueueSize = cmp.Or(max(c.QueueSize, 0), DefaultQueueSize)
	c.BreakerFailures = cmp.Or(c.BreakerFailures, DefaultBreakerFailures)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return nil
}

// Node is this process's end of every node link.
type Node struct {
	cfg  Config
	log  *slog.Logger
	self identity
	wg   sync.WaitGroup

	// serving is closed once Serve has set life.
	serving chan struct{}
	closing chan struct{} // closed by Close

	mu       sync.Mutex
	life     *life // nil before Serve
	stop     context.CancelFunc
	peers    map[string]*peer
	conns    map[*conn]struct{}
	attached map[proxyKey]*attachProxy // the current attach of each remote connection
	closed   bool

	// stripes serialize the owner calls for one connection (attach,
	// detach, link loss), so an old link's cleanup never detaches the
	// session a newer link attached.
	seed    maphash.Seed
	stripes [64]sync.Mutex
}

// life is what Serve begins: the links' lifetime, which comes from
// Serve's ctx and ends with it or with Close, and the handlers every link
// serves. A link exists only within a life, so none sees a handler unset.
type life struct {
	ctx context.Context
	Handlers
}

// New validates cfg and returns a Node; Serve accepts links, calls dial.
func New(cfg Config) (*Node, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "link"),
		self:     identity{node: cfg.NodeID, addr: cfg.Addr},
		serving:  make(chan struct{}),
		closing:  make(chan struct{}),
		peers:    make(map[string]*peer),
		conns:    make(map[*conn]struct{}),
		attached: make(map[proxyKey]*attachProxy),
		seed:     maphash.MakeSeed(),
	}
	return n, nil
}

// Addr is this node's link address.
func (n *Node) Addr() string { return n.cfg.Addr }

// Serve accepts links on ln until ctx ends or Close; it then closes ln.
// ctx is the lifetime of every link, accepted or dialed: its end cancels
// the peers' requests in flight; Close closes the links. h serves the
// peers' calls on every link.
func (n *Node) Serve(ctx context.Context, ln net.Listener, h Handlers) error {
	l, err := n.begin(ctx, h)
	if err != nil {
		_ = ln.Close()
		return err
	}
	if l == nil { // closed before it served
		_ = ln.Close()
		return nil
	}
	stop := context.AfterFunc(l.ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			n.log.Warn("link accept", "err", err)
			select {
			case <-time.After(50 * time.Millisecond):
			case <-l.ctx.Done():
				return nil
			}
			continue
		}
		n.goHandle(func() { n.accept(l, nc) })
	}
}

// begin sets the links' life from Serve's ctx and handlers; nil after
// Close.
func (n *Node) begin(ctx context.Context, h Handlers) (*life, error) {
	if h.Owner == nil {
		return nil, errors.New("node link: Serve: Owner is required")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return nil, nil
	case n.life != nil:
		return nil, errors.New("node link: Serve called twice")
	}
	lctx, stop := context.WithCancel(ctx)
	n.life, n.stop = &life{ctx: lctx, Handlers: h}, stop
	close(n.serving)
	return n.life, nil
}

// handlers returns what Serve was given; false before Serve.
func (n *Node) handlers() (Handlers, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.life == nil {
		return Handlers{}, false
	}
	return n.life.Handlers, true
}

// servedHandlers waits for Serve to begin and returns what it was given;
// false if the node closed without serving (there is no owner to tell).
// Only goroutines Close waits for may call it: Close ends the wait.
func (n *Node) servedHandlers() (Handlers, bool) {
	select {
	case <-n.serving:
	case <-n.closing:
	}
	return n.handlers()
}

// lifetime is the links' life for a dial. A dial may be asked for while
// the components start (a presence session of the owner): it waits for
// Serve up to the dial timeout.
func (n *Node) lifetime() (*life, error) {
	t := time.NewTimer(n.cfg.DialTimeout)
	defer t.Stop()
	select {
	case <-n.serving:
	case <-n.closing:
		return nil, errLinkDown
	case <-t.C:
		return nil, fmt.Errorf("%w: not serving yet", errLinkDown)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.life, nil
}

func (n *Node) accept(l *life, nc net.Conn) {
	br := bufio.NewReaderSize(nc, 16<<10)
	peer, err := acceptHandshake(nc, br, n.cfg.Secret, n.self, n.cfg.DialTimeout)
	if err != nil {
		lvl := slog.LevelDebug
		if errors.Is(err, ErrAuth) {
			lvl = slog.LevelWarn
		}
		n.log.Log(l.ctx, lvl, "link handshake refused", "remote", nc.RemoteAddr().String(), "err", err)
		_ = nc.Close()
		return
	}
	c := newConn(l, n, nc, br, peer, false)
	if !n.register(c) {
		return
	}
	n.log.Debug("node link accepted", "peer", peer.addr, "node", peer.node)
	if l.Sessions != nil {
		l.Sessions.PeerChanged(peer.addr)
	}
	c.run()
}

// register adds a live link; false (and the link closed) after Close.
func (n *Node) register(c *conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		_ = c.nc.Close()
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

// dial opens and authenticates a link to addr.
func (n *Node) dial(addr string) (*conn, error) {
	l, err := n.lifetime()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: n.cfg.DialTimeout, KeepAlive: 15 * time.Second}
	ctx, cancel := context.WithTimeout(l.ctx, n.cfg.DialTimeout)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	br := bufio.NewReaderSize(nc, 16<<10)
	peer, err := dialHandshake(nc, br, n.cfg.Secret, n.self, n.cfg.DialTimeout)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("link to %s: %w", addr, err)
	}
	c := newConn(l, n, nc, br, peer, true)
	if !n.register(c) {
		return nil, errLinkDown
	}
	n.log.Debug("node link dialed", "peer", addr, "node", peer.node)
	return c, nil
}

// linkClosed runs when a link ended: sessions that delivered through it are
// detached (their messages stay pending), and the sessions side is told.
func (n *Node) linkClosed(c *conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	for k, s := range c.takeProxies() {
		if ap, ok := s.(*attachProxy); ok {
			n.detachAttached(c.h.Owner, k, ap)
			continue
		}
		detachText(c.h.Owner, k.uaid, s) // a presence proxy detaches only itself
	}
	if c.dialed {
		if p := n.peerIfAny(c.peer.addr); p != nil {
			p.dropConn(c)
		}
	}
	if c.h.Sessions != nil {
		c.h.Sessions.PeerChanged(c.peer.addr)
	}
}

// Close stops accepting, closes every link and waits for the handlers.
func (n *Node) Close() error {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.closing)
		if n.stop != nil {
			n.stop()
		}
	}
	conns := make([]*conn, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	for _, c := range conns {
		c.closeWith(nil)
	}
	n.wg.Wait()
	return nil
}

// goHandle runs fn in a goroutine that Close waits for.
func (n *Node) goHandle(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// detachLater detaches s from the owner in a goroutine, once Serve gave
// the owner (a presence session may fail while the components start).
func (n *Node) detachLater(uaid schema.UAID, s link.Session) {
	n.goHandle(func() {
		if h, ok := n.servedHandlers(); ok {
			h.Owner.Detach(uaid, s)
		}
	})
}

// detachText detaches s of a UAID as the link carries it (text); a
// malformed one was never attached.
func detachText(own Owner, uaid string, s link.Session) {
	if id, err := schema.ParseUAID(uaid); err == nil {
		own.Detach(id, s)
	}
}

// checkUAID asks the owner about a UAID as the link carries it (text); a
// malformed one is simply not valid.
func checkUAID(ctx context.Context, own Owner, uaid string) (link.UAIDInfo, error) {
	id, err := schema.ParseUAID(uaid)
	if err != nil {
		return link.UAIDInfo{}, nil
	}
	return own.CheckUAID(ctx, id)
}

func (n *Node) stripe(k proxyKey) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(n.seed)
	h.WriteString(k.uaid)
	h.WriteString(k.conn)
	return &n.stripes[h.Sum64()%uint64(len(n.stripes))]
}

// --- owner side: the peers' requests ---------------------------------------

func (n *Node) handleCheck(c *conn, f *frame) {
	ctx, cancel := context.WithTimeout(c.ctx, n.cfg.CallTimeout)
	defer cancel()
	info, err := checkUAID(ctx, c.h.Owner, f.uaid)
	r := &frame{typ: tCheckResp, id: f.id, valid: info.Valid, chans: info.Channels, listed: !info.Partial}
	if len(r.chans) > maxLinkChannels {
		n.log.Warn("uaid has more channels than the node link carries; answering a partial list",
			"uaid", f.uaid, "channels", len(r.chans), "max", maxLinkChannels)
		r.chans, r.listed = r.chans[:maxLinkChannels], false
	}
	setError(r, err)
	c.sendFrame(r)
}

// handleAttach attaches a remote connection through the link it came on.
// It always starts a new delivery generation (detach, then attach): what an
// earlier link carried for this connection may have been lost with it, and
// the connection node drops what its client already has.
func (n *Node) handleAttach(c *conn, f *frame) {
	id, err := schema.ParseUAID(f.uaid)
	k := proxyKey{f.uaid, f.conn}
	px := &attachProxy{c: c, id: id, uaid: f.uaid, connID: f.conn}
	st := n.stripe(k)
	st.Lock()
	n.mu.Lock()
	old := n.attached[k]
	n.attached[k] = px
	n.mu.Unlock()
	if old != nil {
		old.c.untrack(k, old)
	}
	if err != nil || f.conn == "" {
		err = errors.New("attach without uaid or connection id")
	} else if !c.track(k, px) {
		err = errLinkDown
	} else {
		c.h.Owner.Detach(id, connRef(f.conn))
		ctx, cancel := context.WithTimeout(c.ctx, n.cfg.CallTimeout)
		err = c.h.Owner.Attach(ctx, id, px)
		cancel()
	}
	if err != nil {
		n.mu.Lock()
		if n.attached[k] == px {
			delete(n.attached, k)
		}
		n.mu.Unlock()
		c.untrack(k, px)
	}
	st.Unlock()
	r := &frame{typ: tAttachResp, id: f.id}
	setError(r, err)
	c.sendFrame(r)
}

// detachAttached detaches px from own unless a newer attach replaced it.
func (n *Node) detachAttached(own Owner, k proxyKey, px *attachProxy) {
	st := n.stripe(k)
	st.Lock()
	defer st.Unlock()
	n.mu.Lock()
	current := n.attached[k] == px
	if current {
		delete(n.attached, k)
	}
	n.mu.Unlock()
	if current {
		own.Detach(px.id, px)
	}
}

func (n *Node) handleDetach(c *conn, f *frame) {
	k := proxyKey{f.uaid, f.conn}
	n.mu.Lock()
	px := n.attached[k]
	n.mu.Unlock()
	switch {
	case px == nil:
		// Never attached here (or attached before a takeover): forget a
		// session presence made for it.
		detachText(c.h.Owner, f.uaid, connRef(f.conn))
	case px.c == c:
		c.untrack(k, px)
		n.detachAttached(c.h.Owner, k, px)
	}
}

func (n *Node) handleAcked(c *conn, f *frame) {
	if id, err := schema.ParseUAID(f.uaid); err == nil && f.ref != nil {
		c.h.Owner.Acked(id, f.ref)
	}
}

// handleGone detaches a connection the connection node does not have.
func (n *Node) handleGone(c *conn, f *frame) {
	k := proxyKey{f.uaid, f.conn}
	st := n.stripe(k)
	st.Lock()
	defer st.Unlock()
	n.mu.Lock()
	px := n.attached[k]
	delete(n.attached, k)
	n.mu.Unlock()
	if px != nil {
		px.c.untrack(k, px)
	}
	detachText(c.h.Owner, f.uaid, connRef(f.conn))
}

func setError(r *frame, err error) {
	switch {
	case err == nil:
	case errors.Is(err, link.ErrNotOwner):
		r.code = codeNotOwner
	default:
		r.code, r.text = codeFailed, err.Error()
	}
}

// --- connection node side: deliveries from owners -------------------------

func (n *Node) handleDeliver(c *conn, f *frame) {
	var s link.Session
	if c.h.Sessions != nil && f.note != nil {
		if id, err := schema.ParseUAID(f.uaid); err == nil { // else: no such session
			s = c.h.Sessions.FindSession(id, f.conn)
		}
	}
	if s != nil && s.Deliver(*f.note) == nil {
		return
	}
	c.sendFrame(&frame{typ: tGone, uaid: f.uaid, conn: f.conn})
}

// --- connection node side: calls to owners ---------------------------------

// CheckUAID asks the node at addr (the owner of uaid's partition).
func (n *Node) CheckUAID(ctx context.Context, addr, uaid string) (link.UAIDInfo, error) {
	r, err := n.call(ctx, addr, &frame{typ: tCheck, uaid: uaid})
	if err != nil {
		return link.UAIDInfo{}, err
	}
	if err := responseError(addr, r); err != nil {
		return link.UAIDInfo{}, err
	}
	return link.UAIDInfo{Valid: r.valid, Channels: r.chans, Partial: !r.listed}, nil
}

// Attach attaches connection connID of uaid, a session of this node, at
// the owner at addr; deliveries come back over the same link, to the
// session Handlers.Sessions.FindSession returns.
func (n *Node) Attach(ctx context.Context, addr, uaid, connID string) error {
	r, err := n.call(ctx, addr, &frame{typ: tAttach, uaid: uaid, conn: connID})
	if err != nil {
		return err
	}
	return responseError(addr, r)
}

// Detach tells the owner at addr that the connection ended. Best effort:
// without a live link the owner learns it from the link loss or presence.
func (n *Node) Detach(addr, uaid, connID string) {
	if c := n.liveConn(addr); c != nil {
		c.sendFrame(&frame{typ: tDetach, uaid: uaid, conn: connID})
	}
}

// Acked tells the owner at addr at once that the client acked ref. Best
// effort: the Acked event in Kafka is the durable fact.
func (n *Node) Acked(addr, uaid string, ref *pb.MessageRef) {
	if c := n.liveConn(addr); c != nil {
		c.sendFrame(&frame{typ: tAcked, uaid: uaid, ref: ref})
	}
}

func responseError(addr string, r *frame) error {
	switch r.code {
	case codeOK:
		return nil
	case codeNotOwner:
		return fmt.Errorf("%s: %w", addr, link.ErrNotOwner)
	default:
		return fmt.Errorf("owner at %s: %s", addr, r.text)
	}
}

// call sends a request to addr through its breaker.
func (n *Node) call(ctx context.Context, addr string, f *frame) (*frame, error) {
	p := n.peer(addr)
	c, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	r, err := p.cb.Execute(func() (*frame, error) { return c.call(ctx, f) })
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, addr, err)
	}
	return r, nil
}

// --- owner side: sessions from presence ------------------------------------

// Session returns a session that delivers to connection connID of uaid on
// the node at addr (owner.SessionDialer). It starts dialing that node.
func (n *Node) Session(addr string, uaid schema.UAID, connID string) link.Session {
	if addr == n.cfg.Addr {
		return &localProxy{n: n, id: uaid, connID: connID}
	}
	p := n.peer(addr)
	p.ensureDial()
	return &presenceProxy{p: p, id: uaid, uaid: uaid.String(), connID: connID}
}

// --- peers -----------------------------------------------------------------

func (n *Node) peer(addr string) *peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[addr]
	if p == nil {
		p = newPeer(n, addr)
		n.peers[addr] = p
	}
	return p
}

func (n *Node) peerIfAny(addr string) *peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peers[addr]
}

func (n *Node) liveConn(addr string) *conn {
	if p := n.peerIfAny(addr); p != nil {
		return p.live()
	}
	return nil
}
