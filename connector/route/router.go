// Package route is the connection node's link.Link in a cluster: it sends
// each call for a UAID to the owner of the UAID's partition, the local
// owner when this process owns it, another node over the node link
// otherwise. Ownership comes from the owners' consumer group (Table),
// refreshed periodically, on every ErrNotOwner and when a link goes up or
// down; when a partition moves, the sessions of its UAIDs are attached to
// the new owner.
package route

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/remote"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Local is this process's partition owner.
type Local interface {
	link.Link
	Owns(p int32) bool
}

// Remote reaches owners on other nodes (remote.Node). UAIDs are in their
// text form there: what the node link carries.
type Remote interface {
	CheckUAID(ctx context.Context, addr, uaid string) (link.UAIDInfo, error)
	Attach(ctx context.Context, addr, uaid, connID string) error
	Detach(addr, uaid, connID string)
	Acked(addr, uaid string, ref *pb.MessageRef)
}

// Owners says which node owns a partition (Table).
type Owners interface {
	Owner(p int32) (addr string, ok bool)
	Refresh(ctx context.Context) error
}

// Config configures a Router.
type Config struct {
	Partitions int32
	Self       string // this node's link address
	Local      Local
	Remote     Remote // the node link
	// Owners says which node owns each partition; nil: New builds a Table
	// from Table (Fetch required), which Run keeps fresh and which tells
	// the router when partitions move.
	Owners Owners
	Table  TableConfig // used when Owners is nil; its OnChange is the router's
	// RetryBackoff is the first pause before routing again after
	// ErrNotOwner or an unreachable owner (doubling up to 1s). Default 50ms.
	RetryBackoff time.Duration
	// ReattachTimeout bounds one attempt to attach a session to a new
	// owner; failed attempts are retried every ReattachRetry. Defaults
	// 5s, 1s.
	ReattachTimeout time.Duration
	ReattachRetry   time.Duration
	Logger          *slog.Logger
	// Metrics registers the router's series (sessions, unacked); nil: none.
	Metrics prometheus.Registerer
}

// Router implements link.Link for a connection node of a cluster and
// remote.Sessions for the node link.
type Router struct {
	cfg    Config
	log    *slog.Logger
	remote Remote
	table  *Table // the table New built (nil: Config.Owners), run by Run

	mu       sync.RWMutex
	sessions map[schema.UAID]*session // this node's attached connections

	draining   atomic.Bool
	unacked    atomic.Int64 // delivered and not acked, over all sessions
	suppressed atomic.Int64 // deliveries a connection already had

	rmu     sync.Mutex
	redo    map[schema.UAID]struct{} // UAIDs to attach again
	retry   map[schema.UAID]struct{} // UAIDs to attach again after ReattachRetry
	redoSig chan struct{}
}

var (
	_ link.Link       = (*Router)(nil)
	_ remote.Sessions = (*Router)(nil)
)

// New validates cfg and returns a Router. Run must run for sessions to
// follow their partitions when they move.
func New(cfg Config) (*Router, error) {
	if cfg.Partitions <= 0 || cfg.Local == nil || (cfg.Owners == nil && cfg.Table.Fetch == nil) || cfg.Self == "" {
		return nil, errors.New("route config: Partitions, Self, Local and Owners or Table.Fetch are required")
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 50 * time.Millisecond
	}
	if cfg.ReattachTimeout <= 0 {
		cfg.ReattachTimeout = 5 * time.Second
	}
	if cfg.ReattachRetry <= 0 {
		cfg.ReattachRetry = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Router{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "router"),
		remote:   cfg.Remote,
		sessions: make(map[schema.UAID]*session),
		redo:     make(map[schema.UAID]struct{}),
		retry:    make(map[schema.UAID]struct{}),
		redoSig:  make(chan struct{}, 1),
	}
	if cfg.Owners == nil {
		tcfg := cfg.Table
		tcfg.Logger = cmp.Or(tcfg.Logger, cfg.Logger)
		tcfg.OnChange = r.TableChanged
		r.table = NewTable(tcfg)
		r.cfg.Owners = r.table
	}
	if err := register(cfg.Metrics, r.collectors()...); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return r, nil
}

// TableChanged attaches the sessions of partitions whose owner changed to
// their new owner (the Table New builds calls it).
func (r *Router) TableChanged(changed map[int32]string) {
	var uaids []schema.UAID
	r.mu.RLock()
	for u, s := range r.sessions {
		if a, ok := changed[s.p]; ok && a != "" && a != s.routeAddr() {
			uaids = append(uaids, u)
		}
	}
	r.mu.RUnlock()
	r.schedule(uaids...)
}

// Run attaches sessions again whenever they need a new owner, and keeps
// the Table New built fresh, until ctx ends.
func (r *Router) Run(ctx context.Context) error {
	sem := make(chan struct{}, reattachWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	if r.table != nil {
		wg.Go(func() { r.table.Run(ctx) })
	}
	tick := time.NewTicker(r.cfg.ReattachRetry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.redoSig:
		case <-tick.C:
			r.rmu.Lock()
			for u := range r.retry {
				r.redo[u] = struct{}{}
			}
			clear(r.retry)
			r.rmu.Unlock()
		}
		r.rmu.Lock()
		batch := r.redo
		r.redo = make(map[schema.UAID]struct{})
		r.rmu.Unlock()
		for uaid := range batch {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				r.reattach(ctx, uaid)
			}()
		}
	}
}

// reattachWorkers bounds the attaches in flight after a partition moved.
const reattachWorkers = 32

func (r *Router) schedule(uaids ...schema.UAID) {
	if len(uaids) == 0 {
		return
	}
	r.rmu.Lock()
	for _, u := range uaids {
		r.redo[u] = struct{}{}
	}
	r.rmu.Unlock()
	select {
	case r.redoSig <- struct{}{}:
	default:
	}
}

// reattach makes one attempt to attach uaid's session at its partition's
// current owner; a failure is retried every ReattachRetry (one attempt
// each, so an unreachable owner never ties up the workers).
func (r *Router) reattach(ctx context.Context, uaid schema.UAID) {
	s := r.session(uaid)
	if s == nil || s.isClosed() {
		return
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.ReattachTimeout)
	addr, err := r.ownerOf(s.p)
	if err == nil {
		err = r.attachAt(actx, s, addr)
	}
	cancel()
	if s.isClosed() {
		// Closed or replaced by a newer connection while attaching: this
		// attach may have landed after the newer one's. Undo it, and
		// attach the current connection again.
		r.detachAt(s.routeAddr(), s)
		if cur := r.session(uaid); cur != nil && cur != s {
			r.schedule(uaid)
		}
		return
	}
	if err == nil || ctx.Err() != nil {
		return
	}
	if errors.Is(err, link.ErrNotOwner) {
		_ = r.cfg.Owners.Refresh(ctx)
	}
	r.log.Debug("re-attach failed; will retry", "uaid", uaid, "err", err)
	r.rmu.Lock()
	r.retry[uaid] = struct{}{}
	r.rmu.Unlock()
}

// Drain stops delivering to this node's connections (the owners keep the
// messages pending) and waits until the clients acked what they were sent,
// or ctx ends: a graceful shutdown then closes sockets whose clients have
// nothing unacked, and reconnecting elsewhere gives them no duplicates.
func (r *Router) Drain(ctx context.Context) {
	r.draining.Store(true)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for r.unacked.Load() > 0 {
		select {
		case <-ctx.Done():
			r.log.Info("drain ended with unacked deliveries", "unacked", r.unacked.Load())
			return
		case <-t.C:
		}
	}
}

// Stats are the router's counters.
type Stats struct {
	Sessions   int   // attached connections of this node
	Unacked    int64 // delivered, not acked
	Suppressed int64 // deliveries dropped because the connection had them
}

// Stats returns the router's counters.
func (r *Router) Stats() Stats {
	r.mu.RLock()
	n := len(r.sessions)
	r.mu.RUnlock()
	return Stats{Sessions: n, Unacked: r.unacked.Load(), Suppressed: r.suppressed.Load()}
}

// --- link.Link ----------------------------------------------------------

// partition returns the partition number of uaid.
func (r *Router) partition(uaid schema.UAID) int32 { return uaid.Partition(r.cfg.Partitions) }

// CheckUAID asks the owner of uaid's partition.
func (r *Router) CheckUAID(ctx context.Context, uaid schema.UAID) (link.UAIDInfo, error) {
	var info link.UAIDInfo
	err := r.route(ctx, r.partition(uaid), func(addr string) error {
		var err error
		if addr == r.cfg.Self {
			info, err = r.cfg.Local.CheckUAID(ctx, uaid)
		} else {
			info, err = r.remote.CheckUAID(ctx, addr, uaid.String())
		}
		return err
	})
	return info, err
}

// Attach attaches the connection s of uaid at the owner of its partition.
func (r *Router) Attach(ctx context.Context, uaid schema.UAID, s link.Session) error {
	if s == nil {
		return errors.New("route: attach: nil session")
	}
	w := &session{r: r, inner: s, uaid: uaid, p: r.partition(uaid)}
	r.mu.Lock()
	old := r.sessions[uaid]
	r.sessions[uaid] = w
	r.mu.Unlock()
	if old != nil && old.ConnID() != s.ConnID() {
		old.close() // replaced by a newer connection of the same UAID
	}
	if err := r.attachTo(ctx, w); err != nil {
		r.forget(w)
		return err
	}
	return nil
}

// attachTo attaches s at its partition's current owner, retrying.
func (r *Router) attachTo(ctx context.Context, s *session) error {
	return r.route(ctx, s.p, func(addr string) error { return r.attachAt(ctx, s, addr) })
}

// attachAt attaches s at the owner at addr (Self: the local one).
func (r *Router) attachAt(ctx context.Context, s *session, addr string) error {
	var err error
	if addr == r.cfg.Self {
		err = r.cfg.Local.Attach(ctx, s.uaid, s)
	} else {
		err = r.remote.Attach(ctx, addr, s.uaid.String(), s.ConnID())
	}
	if err != nil {
		return err
	}
	// Moved: the previous owner forgets the connection (it may still
	// hold it, e.g. carried over a revoke).
	if prev := s.swapRoute(addr); prev != "" && prev != addr {
		r.detachAt(prev, s)
	}
	return nil
}

// detachAt tells the owner at addr (Self: the local one) that s is gone.
func (r *Router) detachAt(addr string, s *session) {
	switch addr {
	case "":
	case r.cfg.Self:
		r.cfg.Local.Detach(s.uaid, s)
	default:
		r.remote.Detach(addr, s.uaid.String(), s.ConnID())
	}
}

// Detach forgets the connection s and tells the owner it attached to.
func (r *Router) Detach(uaid schema.UAID, s link.Session) {
	if s == nil {
		return
	}
	r.mu.Lock()
	w := r.sessions[uaid]
	if w != nil && w.ConnID() == s.ConnID() {
		delete(r.sessions, uaid)
	} else {
		w = nil
	}
	r.mu.Unlock()
	if w == nil {
		r.cfg.Local.Detach(uaid, s) // never attached here: harmless
		return
	}
	w.close()
	r.detachAt(w.routeAddr(), w)
}

// forget drops s from the registry if it is still there.
func (r *Router) forget(s *session) {
	r.mu.Lock()
	if r.sessions[s.uaid] == s {
		delete(r.sessions, s.uaid)
	}
	r.mu.Unlock()
	s.close()
}

// Acked tells the owner of the message's UAID at once.
func (r *Router) Acked(uaid schema.UAID, ref *pb.MessageRef) {
	if ref == nil {
		return
	}
	if s := r.session(uaid); s != nil {
		s.acked(ref)
	}
	p := r.partition(uaid)
	if r.cfg.Local.Owns(p) {
		r.cfg.Local.Acked(uaid, ref)
		return
	}
	if addr, ok := r.cfg.Owners.Owner(p); ok && addr != "" && addr != r.cfg.Self {
		r.remote.Acked(addr, uaid.String(), ref)
	}
}

// route calls fn with the link address of p's owner (Self when local),
// refreshing ownership and retrying while the owner is unknown, not the
// owner any more or unreachable, until ctx ends.
func (r *Router) route(ctx context.Context, p int32, fn func(addr string) error) error {
	backoff := r.cfg.RetryBackoff
	for {
		addr, err := r.ownerOf(p)
		if err == nil {
			err = fn(addr)
		}
		if err == nil || !retryable(err) {
			return err
		}
		_ = r.cfg.Owners.Refresh(ctx)
		select {
		case <-ctx.Done():
			return fmt.Errorf("route partition %d: %w (%v)", p, err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (r *Router) ownerOf(p int32) (string, error) {
	if r.cfg.Local.Owns(p) {
		return r.cfg.Self, nil
	}
	addr, ok := r.cfg.Owners.Owner(p)
	switch {
	case !ok:
		return "", fmt.Errorf("partition %d has no owner now: %w", p, link.ErrNotOwner)
	case addr == "":
		return "", fmt.Errorf("partition %d is owned by a node without a link address: %w", p, link.ErrNotOwner)
	}
	return addr, nil
}

func retryable(err error) bool {
	return errors.Is(err, link.ErrNotOwner) || errors.Is(err, remote.ErrUnavailable)
}

// --- remote.Sessions ----------------------------------------------------

func (r *Router) session(uaid schema.UAID) *session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sessions[uaid]
}

// FindSession returns the connection connID of uaid on this node.
func (r *Router) FindSession(uaid schema.UAID, connID string) link.Session {
	s := r.session(uaid)
	if s == nil || s.ConnID() != connID {
		return nil
	}
	return s
}

// PeerChanged attaches again the sessions attached through addr (its link
// broke: that owner detached them) and those whose partition addr owns
// (it may have just taken them over).
func (r *Router) PeerChanged(addr string) {
	var uaids []schema.UAID
	r.mu.RLock()
	for u, s := range r.sessions {
		if s.routeAddr() == addr {
			uaids = append(uaids, u)
			continue
		}
		if a, ok := r.cfg.Owners.Owner(s.p); ok && a == addr {
			uaids = append(uaids, u)
		}
	}
	r.mu.RUnlock()
	r.schedule(uaids...)
}
