package connector

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pushlog/pushlog/connector/protocol"
)

// The protocol itself (what a message means, which reply, which close
// code, which limit) is decided by connector/protocol, which does no I/O.
// This file is the thin layer that runs it on a socket: it feeds the
// machine what the client sent, performs the effects it returns (frames,
// events, owner calls, counters, a close) and the requests it waits on
// (owner calls and durable writes), and hands their results back.

// Ack and nack codes (the acks and nacks metrics' labels).
const (
	ackDelivered = protocol.AckDelivered
	ackLast      = protocol.AckLast
	nackFirst    = protocol.NackFirst
	nackLast     = protocol.NackLast
)

// newProtocolEnv is what every connection's machine shares.
func newProtocolEnv(cfg Config, bcast *broadcasts, log *slog.Logger) protocol.Env {
	return protocol.Env{
		PublicURL:                 cfg.PublicURL,
		MaxChannels:               cfg.MaxChannels,
		MaxRegistrationsPerMinute: cfg.MaxRegistrationsPerMinute,
		MaxMessagesPerMinute:      cfg.MaxMessagesPerMinute,
		MinClientPing:             cfg.MinClientPing,
		HelloTimeout:              cfg.HelloTimeout,
		PingInterval:              cfg.PingInterval,
		PongTimeout:               cfg.PongTimeout,
		Sealer:                    cfg.Sealer,
		Broadcasts:                bcast,
		Log:                       log,
		Clock:                     protocol.Clock{Epoch: time.Now()},
	}
}

// receive hands one text message from the client to the machine and
// carries out what it asks.
func (c *conn) receive(data []byte) {
	c.mu.Lock()
	out := c.proto.Receive(&c.srv.env, time.Now(), data)
	c.mu.Unlock()
	c.run(out)
}

// run performs an output's effects and, while the machine waits on a
// request, performs it and resumes the machine with its result. It runs on
// the reading goroutine: a register's reply waits for its durable write,
// and the next message is read after it.
func (c *conn) run(out protocol.Output) {
	for {
		c.perform(out.Effects, true)
		req := out.Await
		if req == nil {
			return
		}
		res := c.do(req)
		c.mu.Lock()
		out = c.proto.Resume(&c.srv.env, time.Now(), req, res)
		c.mu.Unlock()
	}
}

// perform carries out effects in order. inline writes frames from the
// calling goroutine (the reader) when no writer is running; frames the
// server originates (broadcast changes) are never written inline.
func (c *conn) perform(effects []protocol.Effect, inline bool) {
	s := c.srv
	for i := range effects {
		e := &effects[i]
		switch e.Kind {
		case protocol.Send:
			_ = c.send(e.Frame, inline)
		case protocol.Produce:
			s.produceAsync(e.Event)
		case protocol.OwnerAcked:
			s.cfg.Link.Acked(c.proto.UAID(), e.Ref)
		case protocol.Connected:
			s.produceConnected(c)
			c.ua = ""
		case protocol.Disconnected:
			s.produceDisconnected(c)
		case protocol.Detach:
			s.cfg.Link.Detach(c.proto.UAID(), c)
		case protocol.Close:
			c.close(e.Code, e.Reason)
		case protocol.Ping:
			c.ping()
		case protocol.Refused:
			s.met.refused(e.Limit)
		case protocol.CountHello:
			s.met.hello(helloMetricKind(protocol.HelloKind(e.Code)))
		case protocol.CountUnknownUnregister:
			s.met.unknownUnregister()
		case protocol.CountAck:
			s.met.acked(int32(e.Code))
		case protocol.CountNack:
			s.met.nacked(int32(e.Code))
		}
	}
}

// do performs a request of the machine: owner calls are bounded by
// LinkTimeout, durable writes by ProduceTimeout.
func (c *conn) do(req *protocol.Request) protocol.Result {
	s := c.srv
	switch req.Kind {
	case protocol.CheckUAID:
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LinkTimeout)
		defer cancel()
		info, err := s.cfg.Link.CheckUAID(ctx, req.UAID)
		return protocol.Result{Info: info, Err: err}
	case protocol.ProduceSync:
		return protocol.Result{Err: s.produceSync(req.Event)}
	case protocol.Claim:
		return protocol.Result{Claimed: s.claim(c, req.UAID)}
	case protocol.Greet:
		return protocol.Result{Err: c.send(req.Frame, true)}
	case protocol.Attach:
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LinkTimeout)
		defer cancel()
		return protocol.Result{Err: s.cfg.Link.Attach(ctx, req.UAID, c)}
	}
	return protocol.Result{Err: fmt.Errorf("unknown protocol request %d", req.Kind)}
}

// helloMetricKind maps the machine's hello outcome to the metric's label.
func helloMetricKind(k protocol.HelloKind) int {
	switch k {
	case protocol.HelloKnown:
		return helloKnown
	case protocol.HelloReset:
		return helloReset
	}
	return helloNew
}

// notifyBroadcasts sends the changed versions this client subscribed to;
// it reports whether a frame was sent.
func (c *conn) notifyBroadcasts(change protocol.Change) bool {
	c.mu.Lock()
	out := c.proto.BroadcastsChangedAt(&c.srv.env, change)
	c.mu.Unlock()
	c.perform(out.Effects, false)
	return len(out.Effects) > 0
}

// due carries out what the sweeper's Tick decided for c at now (the
// wheel's clock) without blocking the sweeper. A Ping is marked sent at once,
// so the next sweep waits for its Pong instead of pinging again.
func (c *conn) due(now int64, out protocol.Output) {
	for _, e := range out.Effects {
		if e.Kind == protocol.Ping {
			c.pingSent.Store(now)
		}
	}
	go c.perform(out.Effects, false)
}
