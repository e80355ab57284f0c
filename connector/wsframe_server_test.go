package connector

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/connector/link"
)

// The frame layer on a served socket: the poller's path (plain TCP) and
// the blocking reader's (TLS) apply the same rules.

// dialPath dials h's server over plain TCP (the poller) or TLS (a reader
// goroutine).
func dialPath(t *testing.T, h *harness, tls bool) *websocket.Conn {
	t.Helper()
	if !tls {
		return h.dial()
	}
	ts := httptest.NewTLSServer(h.srv.Handler())
	t.Cleanup(ts.Close)
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testTimeout,
		TLSClientConfig: ts.Client().Transport.(*http.Transport).TLSClientConfig}
	c, resp, err := d.Dial("wss"+strings.TrimPrefix(ts.URL, "https")+"/", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return c
}

var paths = []struct {
	name string
	tls  bool
}{{"poller", false}, {"TLS", true}}

// Frames arriving a byte at a time over many reads are put together: the
// reader waits for the rest of a started frame.
func TestTrickledFrames(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, nil)
			c := dialPath(t, h, p.tls)
			pong := make(chan string, 1)
			c.SetPongHandler(func(s string) error { pong <- s; return nil })
			in := append(maskedFrame(opText, []byte(`{"messageType":"hello"}`)), maskedFrame(opPing, []byte("trickle"))...)
			for i := range in {
				if _, err := c.NetConn().Write(in[i : i+1]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Millisecond)
			}
			if m := recv(t, c); m["messageType"] != "hello" {
				t.Fatalf("got %v", m)
			}
			send(t, c, `{}`)
			recvRaw(t, c)
			select {
			case got := <-pong:
				if got != "trickle" {
					t.Fatalf("pong %q", got)
				}
			default:
				t.Fatal("no pong")
			}
		})
	}
}

// A frame trickled forever (slowloris) is cut off by ReadTimeout: the
// socket is closed, not held.
func TestTrickledFrameTimesOut(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.ReadTimeout = 200 * time.Millisecond })
			c := dialPath(t, h, p.tls)
			frame := maskedFrame(opText, bytes.Repeat([]byte("x"), 125))
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for i := range frame {
					select {
					case <-stop:
						return
					case <-time.After(30 * time.Millisecond):
					}
					if _, err := c.NetConn().Write(frame[i : i+1]); err != nil {
						return
					}
				}
			}()
			_ = c.SetReadDeadline(time.Now().Add(testTimeout))
			if _, _, err := c.ReadMessage(); err == nil {
				t.Fatal("got a message, want the socket closed")
			} else if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatalf("socket still open after %v: %v", testTimeout, err)
			}
		})
	}
}

// Malformed frames from a hostile client close the socket with gorilla's
// codes on both paths.
func TestHostileFramesClose(t *testing.T) {
	key := [4]byte{5, 6, 7, 8}
	f := func(fin bool, op byte, p []byte) []byte { return clientFrame(fin, op, p, key) }
	closeFrame := func(code uint16, reason string) []byte {
		return f(true, opClose, append(binary.BigEndian.AppendUint16(nil, code), reason...))
	}
	tests := []struct {
		name string
		in   []byte
		code int
	}{
		{"unmasked", []byte{0x81, 0x02, '{', '}'}, closeProtocol},
		{"RSV1", append([]byte{0xc1}, f(true, opText, []byte("{}"))[1:]...), closeProtocol},
		{"opcode 3", f(true, 0x3, nil), closeProtocol},
		{"ping of 126 bytes", f(true, opPing, bytes.Repeat([]byte("p"), 126)), closeProtocol},
		{"fragmented ping", f(false, opPing, nil), closeProtocol},
		{"continuation first", f(true, opContinuation, []byte("{}")), closeProtocol},
		{"text inside a message", append(f(false, opText, []byte("{")), f(true, opText, []byte("}"))...), closeProtocol},
		{"binary past the limit", f(true, opBinary, bytes.Repeat([]byte("b"), 2000)), websocket.CloseMessageTooBig},
		{"text past the limit across fragments", append(f(false, opText, bytes.Repeat([]byte(" "), 600)), f(true, opContinuation, bytes.Repeat([]byte(" "), 600))...), websocket.CloseMessageTooBig},
		{"bad close code", closeFrame(1005, ""), closeProtocol},
		{"close body of 1 byte", f(true, opClose, []byte{0x03}), closeProtocol}, // RFC 6455 5.5.1; gorilla echoed 1005
		{"close reason not UTF-8", closeFrame(1000, "\xff"), closeProtocol},
		{"close echoed", closeFrame(4000, "bye"), 4000},
		{"fragmented binary", append(f(false, opBinary, []byte("a")), f(true, opContinuation, []byte("b"))...), closeUnsupported},
	}
	for _, p := range paths {
		h := newHarness(t, func(c *Config) { c.MaxMessage = 1024 })
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				c := dialPath(t, h, p.tls)
				send(t, c, `{"messageType":"hello","use_webpush":true}`)
				recv(t, c)
				if _, err := c.NetConn().Write(tt.in); err != nil {
					t.Fatal(err)
				}
				expectClose(t, c, tt.code)
			})
		}
	}
}

// Interleaved control frames inside a fragmented message are answered and
// the message is delivered whole.
func TestFragmentedMessageWithControlFrames(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, nil)
			c := dialPath(t, h, p.tls)
			pong := make(chan string, 2)
			c.SetPongHandler(func(s string) error { pong <- s; return nil })
			key := [4]byte{9, 9, 9, 9}
			var in []byte
			in = append(in, clientFrame(false, opText, []byte(`{"messageType"`), key)...)
			in = append(in, clientFrame(true, opPing, []byte("1"), key)...)
			in = append(in, clientFrame(false, opContinuation, []byte(`:"hel`), key)...)
			in = append(in, clientFrame(true, opPong, nil, key)...)
			in = append(in, clientFrame(true, opPing, []byte("2"), key)...)
			in = append(in, clientFrame(true, opContinuation, []byte(`lo"}`), key)...)
			if _, err := c.NetConn().Write(in); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, c); m["messageType"] != "hello" {
				t.Fatalf("got %v", m)
			}
			for _, want := range []string{"1", "2"} {
				if got := <-pong; got != want {
					t.Fatalf("pong %q, want %q", got, want)
				}
			}
		})
	}
}

// A client that stops reading: the writer goroutine waits for its full
// socket at most WriteTimeout, then the connection is closed (the queue
// is far from its bound, so it is the timeout that closes it).
func TestStuckWriterClosedAfterWriteTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.WriteTimeout = 300 * time.Millisecond; c.SendQueue = 100000 })
	c, reply := h.hello("")
	if tc, ok := c.NetConn().(interface{ SetReadBuffer(int) error }); ok {
		_ = tc.SetReadBuffer(4096)
	}
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	body := make([]byte, 32<<10)
	for i := 0; i < 400; i++ {
		if err := s.Deliver(link.Notification{UAID: uaid, ChannelID: newChannelID(), Version: "v", Data: body, Encoding: "aes128gcm"}); err != nil {
			break
		}
	}
	waitFor(t, "detach", func() bool { return h.link.detachCount() == 1 })
	waitFor(t, "no connections", func() bool { return h.srv.Connections() == 0 })
}

// The owner's Deliver never waits for a client's socket: while another
// write holds it (a pong or Ping waiting on a full socket, up to
// WriteTimeout) the notification goes to a writer goroutine.
func TestDeliverDoesNotWaitForABusySocket(t *testing.T) {
	h := newHarness(t, nil)
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	sc := s.(*conn)
	sc.wmu.Lock() // a control frame's write in progress
	done := make(chan error, 1)
	go func() {
		done <- s.Deliver(link.Notification{UAID: uaid, ChannelID: newChannelID(), Version: "v"})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("deliver: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Deliver waited for the socket's write lock")
	}
	sc.wmu.Unlock()
	if m := recv(t, c); m["messageType"] != "notification" {
		t.Fatalf("got %v", m)
	}
}

// TestDeliverWriteFailureDoesNotDetachInline: a write that fails inside
// Deliver closes the connection without calling back into the link from
// the delivering goroutine. The owner holds its partition lock while it
// delivers and Detach takes that lock: an inline close deadlocked the
// partition (here the fake link's lock stands for it).
func TestDeliverWriteFailureDoesNotDetachInline(t *testing.T) {
	h := newHarness(t, nil)
	_, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	sc := s.(*conn)
	if err := sc.nc.(interface{ CloseWrite() error }).CloseWrite(); err != nil { // every write now fails
		t.Fatal(err)
	}
	h.link.mu.Lock() // the owner's partition lock, held while delivering
	done := make(chan error, 1)
	go func() {
		done <- s.Deliver(link.Notification{UAID: uaid, ChannelID: newChannelID(), Version: "v"})
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Deliver called back into the link (Detach) while the caller held its lock")
	}
	h.link.mu.Unlock()
	deadline := time.Now().Add(testTimeout)
	for {
		h.link.mu.Lock()
		n := len(h.link.detached)
		h.link.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection whose write failed was never detached")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
