//go:build !linux

package connector

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
)

// Without epoll every connection is served by a blocking goroutine.
type poller struct{}

var errNoFD = errors.New("no poller on this platform")

func newPoller(*slog.Logger) (*poller, error) { return nil, errNoFD }

func (p *poller) add(*conn) error { return errNoFD }
func (p *poller) remove(*conn)    {}
func (p *poller) close()          {}

// tryWrite writes nothing without blocking here: the blocking write does it all.
func tryWrite(syscall.Conn, []byte) (int, error) { return 0, nil }

// detachSock keeps nc: without the connector's own poller the runtime's
// watches every socket.
func detachSock(nc net.Conn) (net.Conn, error) { return nc, nil }
