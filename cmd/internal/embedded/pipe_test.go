package embedded

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestPipeConn holds the in-memory pipe to x/net's conformance suite for
// net.Conn (reads and writes in both directions, deadlines, closing,
// concurrent use).
func TestPipeConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2 = newPipe()
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}
