package connector

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"
)

// frameConn is a conn on one end of a pipe whose other end is drained, so
// that the frames it writes (pongs, close frames) never block.
func frameConn(t testing.TB, maxMessage int64) *conn {
	srvEnd, peer := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	t.Cleanup(func() { srvEnd.Close(); peer.Close() })
	s := &Server{cfg: Config{MaxMessage: maxMessage, WriteTimeout: time.Second}, log: slog.New(slog.DiscardHandler)}
	return &conn{srv: s, nc: srvEnd}
}

// clientFrame is a masked client frame.
func clientFrame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	unmask(key, 0, b[start:])
	return b
}

func TestReadMessage(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	big := bytes.Repeat([]byte("x"), 300)
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	for _, tc := range []struct {
		name    string
		in      []byte
		wantOp  byte
		wantMsg string
		wantErr bool
	}{
		{"text", clientFrame(true, opText, []byte(`{"messageType":"hello"}`), key), opText, `{"messageType":"hello"}`, false},
		{"empty text", clientFrame(true, opText, nil, key), opText, "", false},
		{"16-bit length", clientFrame(true, opText, big, key), opText, string(big), false},
		{"fragments with a ping between", cat(clientFrame(false, opText, []byte("ab"), key), clientFrame(true, opPing, []byte("p"), key), clientFrame(true, opContinuation, []byte("cd"), key)), opText, "abcd", false},
		{"ping at a boundary", clientFrame(true, opPing, []byte("p"), key), 0, "", false},
		{"pong at a boundary", clientFrame(true, opPong, nil, key), 0, "", false},
		{"binary refused unread", clientFrame(true, opBinary, []byte("b"), key), opBinary, "", false},
		{"too big", clientFrame(true, opText, bytes.Repeat([]byte("x"), 1025), key), 0, "", true},
		{"too big across fragments", cat(clientFrame(false, opText, bytes.Repeat([]byte("x"), 600), key), clientFrame(true, opContinuation, bytes.Repeat([]byte("x"), 600), key)), 0, "", true},
		{"unmasked", []byte{0x81, 0x01, 'a'}, 0, "", true},
		{"RSV1", append([]byte{0xc1}, clientFrame(true, opText, []byte("a"), key)[1:]...), 0, "", true},
		{"bad opcode", clientFrame(true, 0x3, nil, key), 0, "", true},
		{"continuation first", clientFrame(true, opContinuation, []byte("a"), key), 0, "", true},
		{"text inside a message", cat(clientFrame(false, opText, []byte("a"), key), clientFrame(true, opText, []byte("b"), key)), 0, "", true},
		{"fragmented ping", clientFrame(false, opPing, nil, key), 0, "", true},
		{"close", clientFrame(true, opClose, []byte{0x03, 0xe8}, key), 0, "", true},
		{"close with a bad code", clientFrame(true, opClose, []byte{0x03, 0xed}, key), 0, "", true},
		{"truncated", clientFrame(true, opText, []byte("abc"), key)[:5], 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := frameConn(t, 1024)
			op, msg, err := c.readMessage(bufio.NewReader(bytes.NewReader(tc.in)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (op != tc.wantOp || string(msg) != tc.wantMsg) {
				t.Fatalf("got op %d %q, want op %d %q", op, msg, tc.wantOp, tc.wantMsg)
			}
		})
	}
}

func TestAppendFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		payload := bytes.Repeat([]byte{'a'}, n)
		f := appendFrame(nil, opText, payload)
		hdr := map[bool]int{true: 2, false: 0}[n <= 125] + map[bool]int{true: 4, false: 0}[n > 125 && n <= 0xffff] + map[bool]int{true: 10, false: 0}[n > 0xffff]
		if f[0] != 0x81 || len(f) != hdr+n || !bytes.Equal(f[hdr:], payload) {
			t.Fatalf("frame of %d bytes: header % x, length %d", n, f[:min(len(f), 10)], len(f))
		}
	}
}

// FuzzReadMessage: no client bytes make the frame reader panic, a message
// it accepts is within the bound, and a well-formed text frame made of the
// input comes back unchanged.
func FuzzReadMessage(f *testing.F) {
	key := [4]byte{9, 8, 7, 6}
	f.Add(clientFrame(true, opText, []byte(`{"messageType":"hello"}`), key), uint16(1024))
	f.Add(append(clientFrame(false, opText, []byte("a"), key), clientFrame(true, opContinuation, []byte("b"), key)...), uint16(16))
	f.Add(clientFrame(true, opClose, []byte{0x03, 0xe8, 'x'}, key), uint16(16))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint16(16))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		c := frameConn(t, int64(limit))
		br := bufio.NewReaderSize(bytes.NewReader(data), readerSize)
		for range 8 {
			op, msg, err := c.readMessage(br)
			if err != nil {
				break
			}
			if int64(len(msg)) > int64(limit) {
				t.Fatalf("accepted %d bytes past the limit %d", len(msg), limit)
			}
			if op == opBinary {
				break
			}
		}
		if len(data) <= int(limit) {
			c := frameConn(t, int64(limit))
			op, msg, err := c.readMessage(bufio.NewReader(bytes.NewReader(clientFrame(true, opText, data, key))))
			if err != nil || op != opText || !bytes.Equal(msg, data) {
				t.Fatalf("round trip of %d bytes: op %d, err %v", len(data), op, err)
			}
		}
	})
}

// A frame whose length is claimed but whose payload never comes costs
// the bytes that came, not the length claimed (a hostile client opening
// many sockets would otherwise pin MaxMessage on each).
func TestClaimedLengthNotAllocated(t *testing.T) {
	const claimed = 8 << 20
	c := frameConn(t, claimed)
	in := []byte{0x81, 0xff}
	in = binary.BigEndian.AppendUint64(in, claimed)
	in = append(in, 1, 2, 3, 4, 'x', 'y')
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := c.readMessage(bufio.NewReader(bytes.NewReader(in)))
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a truncated frame was accepted")
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > claimed/8 {
		t.Fatalf("allocated %d bytes for a frame claiming %d with 2 sent", got, claimed)
	}
}
