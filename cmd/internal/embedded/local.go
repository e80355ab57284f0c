package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
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
// Pass Local to Start (Config.Local) and Local.Dial to kgo.Dialer.
type Local struct {
	mu     sync.Mutex
	addr   string // the broker's TCP address; dials to it become pipes
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewLocal returns a Local that is not yet attached to a broker.
func NewLocal() *Local {
	return &Local{conns: make(chan net.Conn), closed: make(chan struct{})}
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

func (m *mergedListener) acceptTCP() {
	for {
		c, err := m.Listener.Accept()
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
