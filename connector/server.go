// Package connector is the WebSocket connection node: it speaks the push
// protocol of Firefox's push client (PROTOCOL.md section 3) over WebSocket
// (gorilla/websocket's handshake, its own frames: wsframe.go), writes the
// client's facts (registrations, acks, presence) to Kafka, and talks to the
// owner of each UAID's partition only through link.Link.
//
// Idle connections are cheap: on Linux a socket with nothing to read has no
// goroutine, no buffer and no timer; an epoll instance starts a goroutine
// when bytes arrive (poller_linux.go), and one timer wheel holds every
// connection's timeouts (wheel.go). Connections without a pollable
// descriptor (TLS) use one blocking reader goroutine each.
package connector

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/connector/protocol"
	"github.com/pushlog/pushlog/schema"
)

// Subprotocol is the WebSocket subprotocol Firefox asks for.
const Subprotocol = "push-notification"

const (
	writeBufferSize = 4096 // pooled: held only while the 101 response is written
	shutdownGrace   = 10 * time.Second
	maxUserAgent    = 256
)

// Server is a connection node.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	bcast    *broadcasts
	ipLimit  *ipLimiter

	// The server's lifetime begins with Run's ctx (or, for a Handler
	// mounted elsewhere, the first request's) and ends after Shutdown:
	// owner calls and produces of a connection outlive the request that
	// opened it, and Run's ctx while Shutdown closes the sockets.
	lifeOnce sync.Once
	ctx      context.Context    // owner calls and synchronous produces; ends after Shutdown
	cancel   context.CancelFunc // ends ctx
	detached context.Context    // never ends: async produces of closed connections still go out; Shutdown flushes them

	mu      sync.RWMutex
	conns   map[*conn]struct{}
	byUAID  map[schema.UAID]*conn
	closing bool
	wg      sync.WaitGroup // one per open conn
	count   atomic.Int64

	startOnce sync.Once
	startErr  error
	poll      *poller
	sweepStop chan struct{}
	sweepDone chan struct{}
	wheel     *wheel // the open connections by when their timeouts are next checked
	stopOnce  sync.Once
	met       *connMetrics // nil without Config.Metrics
	env       protocol.Env // what every connection's protocol machine shares
}

// New validates cfg and returns a server; nothing runs until the first
// connection or Run.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "connector"),
		bcast:   newBroadcasts(cfg.Broadcasts),
		ipLimit: newIPLimiter(cfg.MaxConnectionsPerIPPerMinute),
		conns:   map[*conn]struct{}{},
		byUAID:  map[schema.UAID]*conn{},
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.WriteTimeout,
		ReadBufferSize:   0, // reuse the small hijacked reader (hijack.go)
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  &sync.Pool{},
		Subprotocols:     []string{Subprotocol},
		// Push clients are not web pages and carry no ambient credentials:
		// any origin may connect.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, reason.Error(), status)
		},
	}
	met, err := newConnMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, fmt.Errorf("connector: %w", err)
	}
	s.met = met
	s.env = newProtocolEnv(cfg, s.bcast, s.log)
	return s, nil
}

// Handler serves the WebSocket endpoint: GET / upgrades; GET /metrics
// serves Config.MetricsHandler and /__*__ Config.HealthHandler when set.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Connections is the number of open WebSocket connections.
func (s *Server) Connections() int { return int(s.count.Load()) }

// SetBroadcasts replaces the broadcast table and tells subscribed clients
// about the versions that changed; it returns how many clients were sent
// a broadcast frame.
func (s *Server) SetBroadcasts(m map[string]string) int {
	change := s.bcast.Replace(m)
	if len(change.Versions) == 0 {
		return 0
	}
	s.mu.RLock()
	conns := make([]*conn, 0, len(s.byUAID))
	for _, c := range s.byUAID {
		conns = append(conns, c)
	}
	s.mu.RUnlock()
	sent := 0
	for _, c := range conns {
		if c.notifyBroadcasts(change) {
			sent++
		}
	}
	return sent
}

// Run serves ln until ctx ends, then closes every socket gracefully (close
// frame 1001), waits for their Disconnected events and flushes the producer.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	s.begin(ctx)
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
	}
	err := s.Shutdown(sctx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("connector serve: %w", serveErr)
	}
	return err
}

// Shutdown refuses new connections, closes the open ones (1001), waits for
// them, stops the poller and flushes the producer. Use it when the Handler
// is mounted on another server; Run calls it itself.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		go c.close(closeGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("connector shutdown: %d connections still closing: %w", s.Connections(), ctx.Err())
	}
	s.stop()
	if ferr := s.cfg.Producer.Flush(ctx); ferr != nil && err == nil {
		err = fmt.Errorf("connector shutdown: flush producer: %w", ferr)
	}
	s.lifeOnce.Do(func() {}) // a server that never began has nothing to end
	if s.cancel != nil {
		s.cancel()
	}
	return err
}

// begin starts the server's lifetime from parent, once: Run's ctx, or the
// first request's for a Handler mounted on another server. Its values are
// kept, its cancellation is not: Shutdown ends the lifetime.
func (s *Server) begin(parent context.Context) {
	s.lifeOnce.Do(func() {
		s.detached = context.WithoutCancel(parent)
		s.ctx, s.cancel = context.WithCancel(s.detached)
	})
}

// start creates the poller and the sweeper on first use.
func (s *Server) start() error {
	s.startOnce.Do(func() {
		p, err := newPoller(s.log)
		if err != nil && !errors.Is(err, errNoFD) {
			s.startErr = err
			return
		}
		s.poll = p
		s.wheel = newWheel(s.sweepTick(), time.Now())
		s.sweepStop = make(chan struct{})
		s.sweepDone = make(chan struct{})
		go s.sweep()
	})
	return s.startErr
}

func (s *Server) stop() {
	s.stopOnce.Do(func() {
		s.startOnce.Do(func() {}) // a server that never started stays stopped
		if s.sweepStop != nil {
			close(s.sweepStop)
			<-s.sweepDone
		}
		if s.poll != nil {
			s.poll.close()
		}
	})
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" && s.cfg.MetricsHandler != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.cfg.MetricsHandler.ServeHTTP(w, r)
		return
	}
	switch r.URL.Path {
	case "/__heartbeat__", "/__lbheartbeat__", "/__version__":
		if s.cfg.HealthHandler != nil {
			s.cfg.HealthHandler.ServeHTTP(w, r)
			return
		}
	}
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	s.begin(r.Context())
	if err := s.start(); err != nil {
		s.log.Error("connector start", "err", err)
		http.Error(w, "connector unavailable", http.StatusServiceUnavailable)
		return
	}
	s.mu.RLock()
	closing := s.closing
	s.mu.RUnlock()
	if closing {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if !s.admitAddr(w, r) {
		return
	}
	hw := &hijackResponse{ResponseWriter: w}
	ws, err := s.upgrader.Upgrade(hw, r, nil)
	hw.release()
	if err != nil {
		s.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	ua := r.UserAgent()
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
	}
	now := time.Now()
	// From here on frames are read and written by the conn (wsframe.go);
	// gorilla's Conn is dropped.
	nc := ws.NetConn()
	if s.poll != nil { // the connector's epoll watches it; the runtime's need not
		var err error
		if nc, err = detachSock(nc); err != nil {
			s.met.keptPolled()
			s.log.Debug("socket stays in the runtime's poller", "remote", r.RemoteAddr, "err", err)
		}
	}
	c := &conn{srv: s, nc: nc, id: newConnID(), since: now.UnixNano(), opened: s.wheel.at(now), ua: ua}
	c.lastRecv.Store(c.opened)
	if !s.admit(c) {
		_ = c.writeControl(opClose, websocket.FormatCloseMessage(closeGoingAway, "server shutting down"), now.Add(closeWriteWait))
		_ = nc.Close()
		return
	}
	s.watch(c)
}

// admitAddr applies the per-address connection rate; a refused upgrade is
// answered 429 before any WebSocket state exists.
func (s *Server) admitAddr(w http.ResponseWriter, r *http.Request) bool {
	ok, untracked := s.ipLimit.allow(r.RemoteAddr, time.Now())
	if untracked {
		s.met.refused(limitIPTable)
	}
	if !ok {
		s.met.refused(limitConnectRate)
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many connections from this address", http.StatusTooManyRequests)
	}
	return ok
}

// admit registers a new connection unless the server is shutting down.
func (s *Server) admit(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.count.Add(1)
	s.wheel.schedule(c, nextCheck(&s.env, c))
	return true
}

// watch hands the socket to the poller, or to a blocking reader goroutine
// when it cannot be polled.
func (s *Server) watch(c *conn) {
	if s.poll != nil {
		err := s.poll.add(c)
		if err == nil || errors.Is(err, errConnClosed) {
			return
		}
		if !errors.Is(err, errNoFD) {
			s.log.Warn("poller add failed; using a reader goroutine", "err", err)
		}
	}
	go func() {
		br := bufio.NewReaderSize(c.nc, readerSize)
		for c.serveReady(br) {
		}
	}()
}

// claim makes c the local connection of its UAID (set by the hello) and
// closes an older one. It fails when c was closed meanwhile.
func (s *Server) claim(c *conn, uaid schema.UAID) bool {
	s.mu.Lock()
	if c.proto.Phase() == stateClosed {
		s.mu.Unlock()
		return false
	}
	c.proto.Bind(uaid)
	old := s.byUAID[uaid]
	s.byUAID[uaid] = c
	s.mu.Unlock()
	if old != nil && old != c {
		s.log.Debug("newer connection replaces older", "uaid", uaid, "old", old.ConnID(), "new", c.ConnID())
		go old.close(closeNormal, "replaced by a newer connection")
	}
	return true
}

// forget removes a closing connection from the registries.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	s.wheel.remove(c)
	if uaid := c.proto.UAID(); uaid != (schema.UAID{}) && s.byUAID[uaid] == c {
		delete(s.byUAID, uaid)
	}
	s.count.Add(-1)
}

// sweepTick is how often the sweeper checks timeouts: a quarter of the
// shortest one, between 5ms and 1s.
func (s *Server) sweepTick() time.Duration {
	d := min(s.cfg.HelloTimeout, s.cfg.PingInterval, s.cfg.PongTimeout) / 4
	return max(5*time.Millisecond, min(d, time.Second))
}

// sweep enforces the hello timeout and the idle Ping/Pong from one
// goroutine, so idle connections need no timers of their own; each tick it
// checks only the connections whose slot of the wheel passed.
func (s *Server) sweep() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.sweepTick())
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case now := <-t.C:
			s.sweepOnce(now)
		}
	}
}

func (s *Server) sweepOnce(now time.Time) {
	n := s.wheel.at(now) // the monotonic clock: a wall-clock step fires nothing
	for _, c := range s.wheel.expired(n) {
		if out := c.proto.Tick(&s.env, n, c.liveness()); len(out.Effects) > 0 {
			c.due(n, out) // a Ping is marked sent before the next check is computed
		}
		s.wheel.schedule(c, nextCheck(&s.env, c))
	}
}
