package connector

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// WebSocket frames after the upgrade (RFC 6455 section 5, server side).
//
// gorilla/websocket does the handshake; the frames are read and written
// here. gorilla's Conn (about 500 bytes with its write lock, handler
// closures and reader) plus a read buffer per socket were most of what an
// idle connection kept alive (issue 17). Now an idle connection holds its
// socket (a bare fd, sock_linux.go) and its protocol state only: it borrows a read buffer from a
// pool while bytes arrive, and its writer sends every queued frame in one
// write. The reading rules and close codes are gorilla's (v1.5.3), so
// clients see the same behaviour, with one exception: a close frame whose
// body is 1 byte is a protocol error (RFC 6455 5.5.1: a body starts with a
// 2-byte code), answered 1002; gorilla read it as no code (1005).

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	maxControlPayload = 125
	maxFrameHeader    = 10 // a server frame: 2 bytes + a 64-bit length, no mask

	// readerSize is the pooled read buffer: a hello or a register fits.
	readerSize = 1024
	// readStep is how far a message's buffer grows ahead of the bytes
	// that arrived.
	readStep = 512
	// controlWriteWait bounds the close frame sent on a protocol error
	// (gorilla's writeWait).
	controlWriteWait = time.Second
	// reasonCloseOneByte is the 1002 reason for a 1-byte close body.
	reasonCloseOneByte = "close frame body of 1 byte"
)

var (
	readers    = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}
	writeBufs  = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
	errLimit   = errors.New("websocket: read limit exceeded")
	errClosing = errors.New("websocket: close frame sent")
	// errWriteTimeout: a control frame waited its deadline for a data write.
	errWriteTimeout = errors.New("websocket: write timeout")
)

// getReader borrows a read buffer for nc; putReader returns it (its
// caller has consumed every buffered byte).
func getReader(nc io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(nc)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// frameHeader is one client frame's header.
type frameHeader struct {
	fin  bool
	op   byte
	n    int64 // payload length
	mask [4]byte
}

// readHeader reads a frame header. inMessage says whether a fragmented data
// message is in progress. Protocol errors are answered with close 1002
// carrying gorilla's reason text.
func (c *conn) readHeader(br *bufio.Reader, inMessage bool) (frameHeader, error) {
	var h frameHeader
	var p [8]byte
	if _, err := io.ReadFull(br, p[:2]); err != nil {
		return h, err
	}
	h.fin = p[0]&0x80 != 0
	h.op = p[0] & 0x0f
	masked := p[1]&0x80 != 0
	h.n = int64(p[1] & 0x7f)
	var errs []string
	if p[0]&0x40 != 0 {
		errs = append(errs, "RSV1 set") // no extension was negotiated
	}
	if p[0]&0x20 != 0 {
		errs = append(errs, "RSV2 set")
	}
	if p[0]&0x10 != 0 {
		errs = append(errs, "RSV3 set")
	}
	switch h.op {
	case opClose, opPing, opPong:
		if h.n > maxControlPayload {
			errs = append(errs, "len > 125 for control")
		}
		if !h.fin {
			errs = append(errs, "FIN not set on control")
		}
	case opText, opBinary:
		if inMessage {
			errs = append(errs, "data before FIN")
		}
	case opContinuation:
		if !inMessage {
			errs = append(errs, "continuation after FIN")
		}
	default:
		errs = append(errs, "bad opcode "+strconv.Itoa(int(h.op)))
	}
	if !masked {
		errs = append(errs, "bad MASK")
	}
	if len(errs) > 0 {
		return h, c.protocolError(strings.Join(errs, ", "))
	}
	switch h.n {
	case 126:
		if _, err := io.ReadFull(br, p[:2]); err != nil {
			return h, err
		}
		h.n = int64(binary.BigEndian.Uint16(p[:2]))
	case 127:
		if _, err := io.ReadFull(br, p[:8]); err != nil {
			return h, err
		}
		h.n = int64(binary.BigEndian.Uint64(p[:8]))
		if h.n < 0 {
			return h, errLimit
		}
	}
	if _, err := io.ReadFull(br, h.mask[:]); err != nil {
		return h, err
	}
	return h, nil
}

// unmask undoes the client's masking of a frame payload starting at
// offset pos of the frame.
func unmask(key [4]byte, pos int, b []byte) {
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
}

// readOne reads one control frame at a message boundary, or one whole data
// message (with the control frames between its fragments), and handles it.
// It reports whether the connection is still open.
func (c *conn) readOne(br *bufio.Reader) bool {
	op, msg, err := c.readMessage(br)
	switch {
	case err != nil:
		c.readFailed(err)
		return false
	case op == opBinary:
		c.perform(c.proto.Binary().Effects, true)
		return false
	case op == opText:
		c.receive(msg)
	}
	return true
}

// readMessage reads one control frame at a message boundary (op 0), or one
// data message: a binary one only up to its first header (op opBinary: it
// is refused unread), a text one whole (op opText), with the control frames
// between its fragments. A text message past MaxMessage is answered with
// close 1009 before its payload is read.
func (c *conn) readMessage(br *bufio.Reader) (byte, []byte, error) {
	var (
		msg       []byte
		inMessage bool
	)
	for {
		h, err := c.readHeader(br, inMessage)
		if err != nil {
			return 0, nil, err
		}
		switch h.op {
		case opClose, opPing, opPong:
			if err := c.readControl(br, h); err != nil {
				return 0, nil, err
			}
			if !inMessage {
				return 0, nil, nil
			}
			continue
		}
		// The bound comes first, for a binary frame too: gorilla answered
		// a binary frame past it with 1009, not 1003.
		if total := int64(len(msg)) + h.n; total < 0 || total > c.srv.cfg.MaxMessage {
			_ = c.writeControl(opClose, websocket.FormatCloseMessage(websocket.CloseMessageTooBig, ""), time.Now().Add(controlWriteWait))
			return 0, nil, errLimit
		}
		if h.op == opBinary {
			return opBinary, nil, nil
		}
		inMessage = true
		start := len(msg)
		for rem := h.n; rem > 0; {
			// The buffer grows with the bytes that arrive, not with the
			// length a client claims and may never send (as gorilla's
			// io.ReadAll did).
			step := min(rem, int64(max(br.Buffered(), readStep)))
			at := len(msg)
			msg = append(msg, make([]byte, step)...)
			if _, err := io.ReadFull(br, msg[at:]); err != nil {
				return 0, nil, err
			}
			rem -= step
		}
		unmask(h.mask, 0, msg[start:])
		if h.fin {
			if msg == nil {
				msg = []byte{}
			}
			return opText, msg, nil
		}
	}
}

// readControl reads a control frame's payload and acts on it: a Ping is
// answered with a Pong, a Pong proves the peer alive (serveReady noted
// it), a Close is answered with the same code and ends the connection
// (the returned *websocket.CloseError).
func (c *conn) readControl(br *bufio.Reader, h frameHeader) error {
	var buf [maxControlPayload]byte
	payload := buf[:h.n]
	if _, err := io.ReadFull(br, payload); err != nil {
		return err
	}
	unmask(h.mask, 0, payload)
	switch h.op {
	case opPing:
		if err := c.writeControl(opPong, payload, time.Now().Add(c.srv.cfg.WriteTimeout)); err != nil {
			return fmt.Errorf("write pong: %w", err)
		}
	case opClose:
		code, text := websocket.CloseNoStatusReceived, ""
		if len(payload) == 1 {
			return c.protocolError(reasonCloseOneByte)
		}
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
			if !validCloseCode(code) {
				return c.protocolError("bad close code " + strconv.Itoa(code))
			}
			text = string(payload[2:])
			if !utf8.ValidString(text) {
				return c.protocolError("invalid utf8 payload in close frame")
			}
		}
		_ = c.writeControl(opClose, websocket.FormatCloseMessage(code, ""), time.Now().Add(controlWriteWait))
		return &websocket.CloseError{Code: code, Text: text}
	}
	return nil
}

// validCloseCode is a code a peer may send (RFC 6455 7.4, gorilla's list).
func validCloseCode(code int) bool {
	switch code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return code >= 3000 && code <= 4999
}

// protocolError answers a malformed frame with close 1002 and its reason.
func (c *conn) protocolError(reason string) error {
	data := websocket.FormatCloseMessage(websocket.CloseProtocolError, reason)
	if len(data) > maxControlPayload {
		data = data[:maxControlPayload]
	}
	_ = c.writeControl(opClose, data, time.Now().Add(controlWriteWait))
	return errors.New("websocket: " + reason)
}

// appendFrame appends one unmasked, final server frame.
func appendFrame(b []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n <= 125:
		b = append(b, 0x80|op, byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|op, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// writeControl writes one control frame. After a Close frame nothing more
// is written. Like gorilla's WriteControl it waits for a data write in
// progress (a slow client's full socket) only until the deadline.
func (c *conn) writeControl(op byte, payload []byte, deadline time.Time) error {
	for !c.wmu.TryLock() {
		if time.Now().After(deadline) {
			return errWriteTimeout
		}
		time.Sleep(time.Millisecond)
	}
	defer c.wmu.Unlock()
	var buf [maxFrameHeader + maxControlPayload]byte
	return c.writeLocked(appendFrame(buf[:0], op, payload), deadline, op == opClose)
}

// writeRaw writes whole frames in one piece under the write lock.
func (c *conn) writeRaw(b []byte, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b, deadline, false)
}

// writeLocked writes frames, first without waiting, then with the
// deadline; the caller holds wmu.
func (c *conn) writeLocked(b []byte, deadline time.Time, closing bool) error {
	if c.wclosed {
		return errClosing
	}
	c.wclosed = closing
	rest, err := c.tryWriteLocked(b)
	if err != nil || len(rest) == 0 {
		return err
	}
	return c.writeWait(rest, deadline)
}

// writeNow writes what the socket takes at once, without waiting. When
// some is left it returns it, and locked says whether it holds the write
// lock: then the caller hands both to a goroutine that finishes with
// writeRest, so no other frame can slip into the middle of this one. When
// another write holds the lock (a pong or Ping waiting on a full socket,
// up to WriteTimeout) nothing is written and all of b is left: the caller
// (the owner) must not wait for a client's socket.
func (c *conn) writeNow(b []byte) (rest []byte, locked bool, err error) {
	if !c.wmu.TryLock() {
		return b, false, nil
	}
	if c.wclosed {
		c.wmu.Unlock()
		return nil, false, errClosing
	}
	rest, err = c.tryWriteLocked(b)
	if err != nil || len(rest) == 0 {
		c.wmu.Unlock()
		return nil, false, err
	}
	return rest, true, nil
}

// writeRest finishes what writeNow left and releases the write lock.
func (c *conn) writeRest(b []byte, deadline time.Time) error {
	defer c.wmu.Unlock()
	return c.writeWait(b, deadline)
}

// tryWriteLocked tries once without waiting (no deadline timer: usually
// all of it fits in the socket buffer) and returns what is left.
func (c *conn) tryWriteLocked(b []byte) ([]byte, error) {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return b, nil
	}
	n, err := tryWrite(sc, b)
	return b[n:], err
}

// writeWait writes b with the deadline; the caller holds wmu.
func (c *conn) writeWait(b []byte, deadline time.Time) error {
	if err := c.nc.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	_, err := c.nc.Write(b)
	_ = c.nc.SetWriteDeadline(time.Time{}) // no timer left behind on an idle socket
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
