package remote

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The handshake authenticates both ends with the shared secret, without
// ever sending it: each side sends a fresh random nonce and proves it knows
// the secret with an HMAC-SHA256 over both nonces and both identities.
//
//	acceptor → dialer:   challenge {nonce_a, node_a, addr_a}
//	dialer   → acceptor: auth      {nonce_d, node_d, addr_d, mac_d}
//	acceptor → dialer:   welcome   {mac_a}   (or reject, then close)
//
// mac_d = HMAC(secret, "pushlog-link/1 dialer"   ‖ nonce_a ‖ nonce_d ‖ node_d ‖ addr_d ‖ node_a ‖ addr_a)
// mac_a = HMAC(secret, "pushlog-link/1 acceptor" ‖ nonce_a ‖ nonce_d ‖ node_a ‖ addr_a ‖ node_d ‖ addr_d)
// (‖ joins length-prefixed fields). Nonces make every proof single-use; the
// role labels keep one side's proof from being replayed as the other's.
// Frames after the handshake are not encrypted: run the link on a private
// network (push payloads are end-to-end encrypted by the application
// server anyway).

const (
	handshakeLabel = "pushlog-link/1 "
	nonceSize      = 32
	maxIdentity    = 256 // bytes of a node id or link address
)

// ErrAuth means the peer failed the handshake (wrong secret or not a
// pushlog link at all).
var ErrAuth = errors.New("node link authentication failed")

// identity is who one end of a link says it is.
type identity struct {
	node string
	addr string // where its link listens (what owners dial)
}

func handshakeMAC(secret []byte, role string, nonceA, nonceD []byte, first, second identity) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(handshakeLabel + role))
	for _, p := range [][]byte{nonceA, nonceD, []byte(first.node), []byte(first.addr), []byte(second.node), []byte(second.addr)} {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(p)))
		h.Write(l[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

func newNonce() ([]byte, error) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return b, nil
}

func writeFrame(w io.Writer, f *frame) error {
	b, err := appendFrame(nil, f)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// readTyped reads one frame and checks its type.
func readTyped(r io.Reader, want uint64) (*frame, error) {
	f, _, err := readFrame(r, nil)
	if err != nil {
		return nil, err
	}
	if f.typ == tReject && want != tReject {
		return nil, fmt.Errorf("%w: peer refused: %s", ErrAuth, f.text)
	}
	if f.typ != want {
		return nil, fmt.Errorf("%w: frame type %d during the handshake, want %d", errFrame, f.typ, want)
	}
	return f, nil
}

func validIdentity(id identity) error {
	if id.node == "" || id.addr == "" || len(id.node) > maxIdentity || len(id.addr) > maxIdentity {
		return fmt.Errorf("%w: bad peer identity", errFrame)
	}
	return nil
}

// acceptHandshake authenticates the dialer of nc and returns its identity.
func acceptHandshake(nc net.Conn, br *bufio.Reader, secret []byte, self identity, timeout time.Duration) (identity, error) {
	_ = nc.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = nc.SetDeadline(time.Time{}) }()
	nonceA, err := newNonce()
	if err != nil {
		return identity{}, err
	}
	if err := writeFrame(nc, &frame{typ: tChallenge, nonce: nonceA, node: self.node, addr: self.addr}); err != nil {
		return identity{}, fmt.Errorf("send challenge: %w", err)
	}
	f, err := readTyped(br, tAuth)
	if err != nil {
		return identity{}, fmt.Errorf("read auth: %w", err)
	}
	peer := identity{node: f.node, addr: f.addr}
	if err := validIdentity(peer); err != nil {
		return identity{}, err
	}
	want := handshakeMAC(secret, "dialer", nonceA, f.nonce, peer, self)
	if len(f.nonce) != nonceSize || !hmac.Equal(f.mac, want) {
		_ = writeFrame(nc, &frame{typ: tReject, text: "authentication failed"})
		return identity{}, ErrAuth
	}
	proof := handshakeMAC(secret, "acceptor", nonceA, f.nonce, self, peer)
	if err := writeFrame(nc, &frame{typ: tWelcome, mac: proof}); err != nil {
		return identity{}, fmt.Errorf("send welcome: %w", err)
	}
	return peer, nil
}

// dialHandshake authenticates the acceptor of nc (and itself to it) and
// returns the acceptor's identity.
func dialHandshake(nc net.Conn, br *bufio.Reader, secret []byte, self identity, timeout time.Duration) (identity, error) {
	_ = nc.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = nc.SetDeadline(time.Time{}) }()
	ch, err := readTyped(br, tChallenge)
	if err != nil {
		return identity{}, fmt.Errorf("read challenge: %w", err)
	}
	peer := identity{node: ch.node, addr: ch.addr}
	if err := validIdentity(peer); err != nil {
		return identity{}, err
	}
	if len(ch.nonce) != nonceSize {
		return identity{}, fmt.Errorf("%w: bad challenge nonce", errFrame)
	}
	nonceD, err := newNonce()
	if err != nil {
		return identity{}, err
	}
	proof := handshakeMAC(secret, "dialer", ch.nonce, nonceD, self, peer)
	if err := writeFrame(nc, &frame{typ: tAuth, nonce: nonceD, node: self.node, addr: self.addr, mac: proof}); err != nil {
		return identity{}, fmt.Errorf("send auth: %w", err)
	}
	w, err := readTyped(br, tWelcome)
	if err != nil {
		return identity{}, fmt.Errorf("read welcome: %w", err)
	}
	if !hmac.Equal(w.mac, handshakeMAC(secret, "acceptor", ch.nonce, nonceD, peer, self)) {
		return identity{}, fmt.Errorf("%w: the acceptor's proof does not verify", ErrAuth)
	}
	return peer, nil
}
