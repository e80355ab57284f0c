package remote

import (
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// The owner-side stand-ins for client connections on other nodes. All
// Deliver methods are called by the owner with a partition lock held: they
// never block and never call back into the owner synchronously.

// attachProxy is a connection that attached through a link: deliveries go
// back on the link the Attach came on.
type attachProxy struct {
	c            *conn
	id           schema.UAID // uaid parsed: what the owner takes
	uaid, connID string
}

func (p *attachProxy) ConnID() string { return p.connID }

func (p *attachProxy) Deliver(n link.Notification) error {
	return p.c.deliver(p.uaid, p.connID, n)
}

// presenceProxy is a connection the owner learned from pushlog.presence
// (a takeover): deliveries go over a link this node dials.
type presenceProxy struct {
	p            *peer
	id           schema.UAID
	uaid, connID string // uaid is id's text, as deliveries carry it
}

func (p *presenceProxy) ConnID() string     { return p.connID }
func (p *presenceProxy) FromPresence() bool { return true }

func (p *presenceProxy) Deliver(n link.Notification) error {
	c := p.p.connOrWait(p)
	if c == nil {
		return link.ErrSessionClosed
	}
	if !c.track(proxyKey{p.uaid, p.connID}, p) {
		return link.ErrSessionClosed
	}
	return c.deliver(p.uaid, p.connID, n)
}

// localProxy is a connection on this very node that presence names while
// it is attached to another owner (this node just took its partition over).
type localProxy struct {
	n      *Node
	id     schema.UAID
	connID string
}

func (p *localProxy) ConnID() string     { return p.connID }
func (p *localProxy) FromPresence() bool { return true }

func (p *localProxy) Deliver(n link.Notification) error {
	var s link.Session
	// Before Serve no connection of this node can have attached to
	// another owner (that takes the link): there is none to find.
	if h, ok := p.n.handlers(); ok && h.Sessions != nil {
		s = h.Sessions.FindSession(p.id, p.connID)
	}
	if s == nil {
		p.n.detachLater(p.id, p)
		return link.ErrSessionClosed
	}
	if err := s.Deliver(n); err != nil {
		p.n.detachLater(p.id, p)
		return err
	}
	return nil
}

// connRef names a connection for Detach (which compares connection ids).
type connRef string

func (c connRef) ConnID() string                { return string(c) }
func (connRef) Deliver(link.Notification) error { return link.ErrSessionClosed }
