package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Local connects the serving process's own Kafka clients to the embedded
// broker through in-memory pipes instead of loopback TCP. Every Kafka
// request and response over loopback costs a write and a read system call
// on each side and a network-poller wake-up; at low push rates those were
// the largest single share of the server's CPU per push. The broker still
// listens on its TCP address for operator commands run from other
// processes; Local only adds a second way in, so what the broker sees and
// answers is unchanged.
//
// Pass Local to Start (Config.Local) and Local.Dial to kgo.Dialer. A
// Local serves one broker listener once: closing it ends its dials.
type Local struct {
	log    *slog.Logger
	mu     sync.Mutex
	addr   string // the broker's TCP address; dials to it become pipes
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewLocal returns a Local that is not yet attached to a broker; log
// (nil: none) gets the TCP listener's accept failures.
func NewLocal(log *slog.Logger) *Local {
	return &Local{log: log, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// errLocalClosed is returned by dials after the broker's listener closed.
var errLocalClosed = errors.New("embedded kafka: broker is closed")

// Dial is a kgo dialer: the broker's own address gets an in-memory pipe,
// any other address (none in a single-broker embedded cluster) a TCP
// connection.
func (l *Local) Dial(ctx context.Context, network, host string) (net.Conn, error) {
	l.mu.Lock()
	addr := l.addr
	l.mu.Unlock()
	if addr == "" || host != addr {
		var d net.Dialer
		return d.DialContext(ctx, network, host)
	}
	server, client := newPipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
	case <-ctx.Done():
	}
	server.Close()
	client.Close()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial embedded kafka: %w", err)
	}
	return nil, errLocalClosed
}

// listen is the broker's listen function: its TCP listener merged with
// the pipes handed over by Dial.
func (l *Local) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.addr = ln.Addr().String()
	l.mu.Unlock()
	m := &mergedListener{Listener: ln, local: l, tcp: make(chan accepted)}
	go m.acceptTCP()
	return m, nil
}

type accepted struct {
	conn net.Conn
	err  error
}

// mergedListener accepts from the TCP listener and from Local's pipes.
type mergedListener struct {
	net.Listener
	local *Local
	tcp   chan accepted
}

// acceptTCP hands TCP connections to Accept. Only a closed listener ends
// it: any other Accept error (EMFILE when hostile clients use up the
// process's descriptors) is retried with a growing pause, as net/http
// does, because kfake's accept loop stops at the first error it sees and
// closing the listener would cut the process's own clients off their
// broker.
func (m *mergedListener) acceptTCP() {
	var pause time.Duration
	for {
		c, err := m.Listener.Accept()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			if m.local.log != nil {
				m.local.log.Warn("embedded kafka: accepting a TCP connection failed; retrying", "err", err, "pause", pause)
			}
			select {
			case <-time.After(pause):
				continue
			case <-m.local.closed:
				return
			}
		}
		pause = 0
		select {
		case m.tcp <- accepted{c, err}:
		case <-m.local.closed:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

func (m *mergedListener) Accept() (net.Conn, error) {
	select {
	case a := <-m.tcp:
		return a.conn, a.err
	case c := <-m.local.conns:
		return c, nil
	case <-m.local.closed:
		return nil, net.ErrClosed
	}
}

func (m *mergedListener) Close() error {
	m.local.once.Do(func() { close(m.local.closed) })
	return m.Listener.Close()
}
