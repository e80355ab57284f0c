// Package link is the node-link interface between a connection node (which
// holds a client's WebSocket) and the owner of the client's UAID partition
// (which decides what to deliver). Single-node pushlog uses the owner
// directly as the Link (every partition is local); the cluster adds a remote
// implementation that carries the same calls between processes.
package link

import (
	"context"
	"errors"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// ErrNotOwner means this node does not own the UAID's partition (right now:
// a rebalance may be in progress). Callers retry or route elsewhere.
var ErrNotOwner = errors.New("not the owner of this uaid's partition")

// ErrSessionClosed is returned by Session.Deliver when the socket is gone.
var ErrSessionClosed = errors.New("session closed")

// Notification is one message to write to a client socket.
type Notification struct {
	UAID      string
	ChannelID string
	Version   string // the sealed message id
	Data      []byte // nil for an empty push (no data/headers sent)
	// Encoding is "aes128gcm" or "aesgcm" ("" when Data is nil);
	// Encryption and CryptoKey are set for aesgcm only.
	Encoding   string
	Encryption string
	CryptoKey  string
	// Ref places the message in pushlog.messages; the connection node puts
	// it into the Acked/Nacked events it writes.
	Ref *pb.MessageRef
}

// Session is a client's live connection as the owner sees it.
type Session interface {
	// ConnID is unique per connection (a reconnect has a new one).
	ConnID() string
	// Deliver queues n for the socket without blocking. It returns
	// ErrSessionClosed when the connection is gone or cannot keep up; the
	// message then stays pending at the owner.
	Deliver(n Notification) error
}

// UAIDInfo is what the owner knows of a UAID at hello.
type UAIDInfo struct {
	// Valid: a known, not reset UAID.
	Valid bool
	// Channels are the UAID's registered (not unregistered) channel ids,
	// in no particular order; empty when not Valid. The connection node
	// keeps them to bound channels per UAID and to answer the unregister
	// of an unknown channel without writing anything.
	Channels [][16]byte
	// Partial: Channels may miss some (an older owner that does not list
	// them, or more than the node link carries). The connection node then
	// writes every unregister and counts only the channels it knows.
	Partial bool
}

// Link is what a connection node asks of the owner of a UAID. UAIDs are
// typed: a connection node parses the client's text once (a malformed one
// never gets here), and the owner takes the partition from the value.
type Link interface {
	// CheckUAID reports whether uaid is a known, not reset UAID, and its
	// registered channels. The owner is the authority: it first catches up
	// with every registration already durable, so a client that registered
	// a moment ago is never reset and its channels are all listed.
	CheckUAID(ctx context.Context, uaid schema.UAID) (UAIDInfo, error)
	// Attach records that uaid is connected through s and delivers the
	// stored messages to it. A newer Attach for the same UAID replaces the
	// older session.
	Attach(ctx context.Context, uaid schema.UAID, s Session) error
	// Detach forgets s (only if it is still the current session of uaid).
	Detach(uaid schema.UAID, s Session)
	// Acked tells the owner at once that the client acked the message, so
	// it is never delivered again even before the Acked event is folded.
	Acked(uaid schema.UAID, ref *pb.MessageRef)
}
