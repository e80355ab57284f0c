package connector

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
)

// handshakeWriterSize holds the 101 response; the writers are pooled.
const handshakeWriterSize = 512

var handshakeWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, handshakeWriterSize) }}

// hijackResponse wraps the upgrade's ResponseWriter so that the Hijack
// gorilla calls returns a pooled reader instead of net/http's 4 KiB one
// (gorilla keeps a hijacked reader larger than 256 bytes when
// Upgrader.ReadBufferSize is 0, instead of allocating its own). The
// handshake reads nothing after the request, and gorilla's Conn is dropped
// after the upgrade (wsframe.go), so both buffers go back to their pools.
type hijackResponse struct {
	http.ResponseWriter
	br *bufio.Reader
	bw *bufio.Writer
}

var errEarlyData = errors.New("client sent data before the handshake completed")

func (h *hijackResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer does not support hijacking")
	}
	nc, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if rw.Reader.Buffered() > 0 {
		_ = nc.Close()
		return nil, nil, errEarlyData
	}
	h.br = getReader(nc)
	h.bw = handshakeWriters.Get().(*bufio.Writer)
	h.bw.Reset(nc)
	return nc, bufio.NewReadWriter(h.br, h.bw), nil
}

// release returns the handshake buffers to their pools once the upgrade
// is done.
func (h *hijackResponse) release() {
	if h.br != nil {
		putReader(h.br)
		h.br = nil
	}
	if h.bw != nil {
		h.bw.Reset(nil)
		handshakeWriters.Put(h.bw)
		h.bw = nil
	}
}
