package connector

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
)

// readBufferSize is the per-connection read buffer. gorilla/websocket keeps
// the hijacked bufio.Reader as its connection reader when it is larger than
// 256 bytes and Upgrader.ReadBufferSize is 0, so we hand it one of exactly
// this size (a whole allocation size class). Owning the reader also lets the
// server see whether bytes are still buffered, which is what allows an idle
// socket to go back to the poller with no goroutine.
const readBufferSize = 288

// handshakeWriterSize holds the 101 response; the writers are pooled.
const handshakeWriterSize = 512

var handshakeWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, handshakeWriterSize) }}

// hijackResponse wraps the upgrade's ResponseWriter so that the Hijack
// gorilla calls returns our small reader instead of net/http's 4 KiB one.
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
	h.br = bufio.NewReaderSize(nc, readBufferSize)
	h.bw = handshakeWriters.Get().(*bufio.Writer)
	h.bw.Reset(nc)
	return nc, bufio.NewReadWriter(h.br, h.bw), nil
}

// release returns the handshake writer to its pool once the upgrade is done.
func (h *hijackResponse) release() {
	if h.bw != nil {
		h.bw.Reset(nil)
		handshakeWriters.Put(h.bw)
		h.bw = nil
	}
}
