package connector

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Register/unregister reply statuses (autopush's).
const (
	statusOK         = 200
	statusBadKey     = 400 // the application server key is not a P-256 point
	statusBadChannel = 401 // the channelID is not a lowercase dashed UUID
	statusError      = 500 // the registration could not be written; retry
)

// Ack and nack codes Firefox sends.
const (
	ackDelivered = 100
	ackLast      = 102 // 101 decryption failed, 102 not delivered
	nackFirst    = 301
	nackLast     = 303
)

// handle dispatches one text message from the client.
func (c *conn) handle(data []byte) {
	if !utf8.Valid(data) {
		c.close(closeInvalidData, "text messages must be UTF-8")
		return
	}
	m, err := parseClientMessage(data)
	if err != nil {
		c.srv.log.Debug("bad client message", "conn", c.ConnID(), "err", err)
		c.close(closeProtocol, "invalid message")
		return
	}
	switch c.state.Load() {
	case stateAwaitHello:
		if m.MessageType != typeHello {
			c.close(closeProtocol, "the first message must be a hello")
			return
		}
		c.hello(&m)
		return
	case stateReady:
	default:
		return
	}
	// Pings have their own bound (MinClientPing); acks pay per update.
	if m.MessageType != typePing && m.MessageType != typeAck && !c.spend(1) {
		return
	}
	switch m.MessageType {
	case typeHello:
		c.close(closeProtocol, "second hello")
	case typeRegister:
		c.register(&m)
	case typeUnregister:
		c.unregister(&m)
	case typeAck:
		c.ack(&m)
	case typeNack:
		c.nack(&m)
	case typePing:
		c.clientPing()
	case typeBroadcastSubscribe:
		c.broadcastSubscribe(&m)
	}
}

// hello identifies the client. A well-formed UAID is kept when the owner
// knows it; an unknown one is reset (UserReset, so its endpoints answer
// 410) and replaced; a missing or malformed one is replaced.
func (c *conn) hello(m *clientMessage) {
	s := c.srv
	if !c.state.CompareAndSwap(stateAwaitHello, stateHello) {
		return
	}
	if broadcastsTooBig(m.Broadcasts) {
		s.met.refused(limitBroadcasts)
		c.close(closePolicy, "too many or too long broadcasts")
		return
	}
	uaid, info, err := c.resolveUAID(m.uaid())
	if err != nil {
		s.log.Warn("hello failed; client should retry", "conn", c.ConnID(), "err", err)
		c.close(closeTryAgain, "try again later")
		return
	}
	reply, subs := s.bcast.delta(m.Broadcasts)
	msg, err := marshal(helloReply{MessageType: typeHello, UAID: uaid, Status: statusOK, UseWebpush: true, Broadcasts: reply})
	if err != nil {
		s.log.Error("encode hello", "err", err)
		c.close(closeGoingAway, "internal error")
		return
	}
	if !s.claim(c, uaid) {
		return
	}
	c.mu.Lock()
	c.bcast = subs
	c.mu.Unlock()
	c.chans = newChanSet(info)
	s.produceConnected(c) // before Ready: a Disconnected can only follow it
	c.ua = ""
	if err := c.send(msg, true); err != nil || !c.state.CompareAndSwap(stateHello, stateReady) {
		s.produceDisconnected(c) // closed while answering: close skipped it
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LinkTimeout)
	defer cancel()
	if err := s.cfg.Link.Attach(ctx, uaid, c); err != nil {
		s.log.Warn("attach failed; client should retry", "uaid", uaid, "err", err)
		c.close(closeTryAgain, "try again later")
		return
	}
	if c.state.Load() == stateClosed {
		s.cfg.Link.Detach(uaid, c) // closed during Attach: close's Detach came first
	}
}

// resolveUAID returns the UAID the client will use and what the owner
// knows of it (nothing for a new one).
func (c *conn) resolveUAID(raw string) (string, link.UAIDInfo, error) {
	s := c.srv
	if raw == "" {
		s.met.hello(helloNew)
		return schema.NewUAID(), link.UAIDInfo{}, nil
	}
	uaid, err := schema.NormalizeUAID(raw)
	if err != nil {
		s.log.Debug("malformed uaid at hello; issuing a new one", "conn", c.ConnID())
		s.met.hello(helloNew)
		return schema.NewUAID(), link.UAIDInfo{}, nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LinkTimeout)
	defer cancel()
	info, err := s.cfg.Link.CheckUAID(ctx, uaid)
	if err != nil {
		return "", link.UAIDInfo{}, fmt.Errorf("check uaid: %w", err) // never reset on an error
	}
	if info.Valid {
		s.met.hello(helloKnown)
		return uaid, info, nil
	}
	ev := s.newEvent(uaid)
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "unknown uaid at hello"}}
	if err := s.produceSync(ev); err != nil {
		return "", link.UAIDInfo{}, fmt.Errorf("reset uaid: %w", err)
	}
	s.log.Debug("unknown uaid reset", "uaid", uaid)
	s.met.hello(helloReset)
	return schema.NewUAID(), link.UAIDInfo{}, nil
}

// spend takes cost tokens of the socket's message rate; past it the
// socket is closed with 4774 (autopush's "back off") and spend reports
// false.
func (c *conn) spend(cost int) bool {
	if c.msgRate.allow(time.Now().UnixNano(), c.srv.cfg.MaxMessagesPerMinute, time.Minute, cost) {
		return true
	}
	c.srv.met.refused(limitMessages)
	c.srv.log.Info("client message rate exceeded; closing", "uaid", c.uaid, "conn", c.ConnID())
	c.close(closeBackoff, "too many messages")
	return false
}

// allowRegistration takes one token of the socket's registration rate.
func (c *conn) allowRegistration() bool {
	if c.regRate.allow(time.Now().UnixNano(), c.srv.cfg.MaxRegistrationsPerMinute, time.Minute, 1) {
		return true
	}
	c.srv.met.refused(limitRegistrations)
	return false
}

func (c *conn) register(m *clientMessage) {
	s := c.srv
	id, err := schema.ParseChannelID(m.ChannelID)
	chid := m.ChannelID
	if err != nil || schema.FormatChannelID(id[:]) != chid {
		// Notifications name the channel in canonical form, so a client
		// using another form could not match them: refuse it (autopush too).
		c.reply(registerReply{MessageType: typeRegister, ChannelID: m.ChannelID, Status: statusBadChannel,
			Reason: "channelID must be a lowercase dashed UUID"})
		return
	}
	if !c.chans.has(id) && len(c.chans.ids) >= s.cfg.MaxChannels {
		s.met.refused(limitChannels)
		c.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: statusTooManyChannels,
			Reason: fmt.Sprintf("too many channels (at most %d); unregister some first", s.cfg.MaxChannels)})
		return
	}
	var keyHash []byte
	if m.Key != nil {
		raw, err := parseAppServerKey(*m.Key)
		if err != nil {
			c.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: statusBadKey, Reason: err.Error()})
			return
		}
		sum := sha256.Sum256(raw)
		keyHash = sum[:]
	}
	if !c.allowRegistration() {
		c.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: statusTooManyRequests, Reason: "too many registrations; retry later"})
		return
	}
	token, err := s.cfg.Sealer.SealEndpoint(schema.Endpoint{UAID: c.uaid, ChannelID: chid, KeyHash: keyHash})
	if err != nil {
		s.log.Error("seal endpoint", "err", err)
		c.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: statusError})
		return
	}
	ev := s.newEvent(c.uaid)
	ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: chid, KeyHash: keyHash}}
	if err := s.produceSync(ev); err != nil {
		s.log.Warn("register not written", "uaid", c.uaid, "err", err)
		c.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: statusError, Reason: "try again later"})
		return
	}
	c.chans.add(id)
	version := "/wpush/v1/"
	if keyHash != nil {
		version = "/wpush/v2/"
	}
	c.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: statusOK, PushEndpoint: s.cfg.PublicURL + version + token})
}

var errBadKey = errors.New("key must be an uncompressed P-256 public key (65 bytes, base64url)")

// parseAppServerKey decodes a register key: base64url (or standard base64,
// padded or not) of a valid uncompressed P-256 point.
func parseAppServerKey(key string) ([]byte, error) {
	raw, err := schema.DecodeBase64(key)
	if err != nil || len(raw) != 65 || raw[0] != 0x04 {
		return nil, errBadKey
	}
	if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
		return nil, errBadKey
	}
	return raw, nil
}

func (c *conn) unregister(m *clientMessage) {
	s := c.srv
	id, err := schema.ParseChannelID(m.ChannelID)
	if err != nil {
		c.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: statusBadChannel, Reason: "invalid channelID"})
		return
	}
	if !c.chans.has(id) && !c.chans.partial {
		// Not a channel of this UAID: nothing to undo, so nothing is
		// written (an unregister flood leaves no trace in the log).
		s.met.unknownUnregister()
		c.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: statusOK})
		return
	}
	if !c.allowRegistration() {
		c.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: statusTooManyRequests, Reason: "too many registrations; retry later"})
		return
	}
	chid := schema.FormatChannelID(id[:])
	ev := s.newEvent(c.uaid)
	ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: chid, Code: intCode(m.Code, 0)}}
	if err := s.produceSync(ev); err != nil {
		s.log.Warn("unregister not written", "uaid", c.uaid, "err", err)
		c.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: statusError, Reason: "try again later"})
		return
	}
	c.chans.remove(id)
	c.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: statusOK})
}

// ack records each acknowledged message: the Acked event (the durable fact)
// and Link.Acked (so the owner stops redelivering at once).
//
// Cost against the message rate: acks of notifications this socket
// delivered are free (they are bounded by the deliveries); every other
// update that writes an Acked event costs a token, and so does an ack
// message acking nothing delivered here.
func (c *conn) ack(m *clientMessage) {
	s := c.srv
	if len(m.Updates) > maxAckUpdates {
		s.met.refused(limitAckUpdates)
		c.close(closePolicy, "too many ack updates")
		return
	}
	matched := false
	defer func() {
		if !matched && c.state.Load() == stateReady {
			c.spend(1)
		}
	}()
	for _, u := range m.Updates {
		ref, delivered, ok := c.messageRef(u.Version, true)
		if !ok {
			continue
		}
		if delivered {
			matched = true
		} else if !c.spend(1) {
			return
		}
		code := intCode(u.Code, ackDelivered)
		if code < ackDelivered || code > ackLast {
			code = ackDelivered // as autopush: anything else counts as delivered
		}
		ev := s.newEvent(c.uaid)
		ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: code}}
		s.produceAsync(ev)
		s.met.acked(code)
		s.cfg.Link.Acked(c.uaid, ref)
	}
}

// nack records a client-side delivery error; the message stays unacked.
func (c *conn) nack(m *clientMessage) {
	s := c.srv
	ref, _, ok := c.messageRef(m.Version, false)
	if !ok {
		return
	}
	code := intCode(m.Code, 0)
	if code < nackFirst || code > nackLast {
		code = 0 // as autopush: unexpected codes are recorded as 0
	}
	ev := s.newEvent(c.uaid)
	ev.Body = &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: ref, Code: code}}
	s.produceAsync(ev)
	s.met.nacked(code)
}

// messageRef finds the ref of a version delivered on this connection
// (delivered), or decodes the version (a message delivered on an earlier
// connection). A version of another UAID, or one that does not open, is
// ignored (not ok).
func (c *conn) messageRef(version string, take bool) (ref *pb.MessageRef, delivered, ok bool) {
	if version == "" {
		return nil, false, false
	}
	c.mu.Lock()
	ref = c.unacked[version]
	if ref != nil && take {
		delete(c.unacked, version)
		if len(c.unacked) == 0 {
			c.unacked = nil // maps never shrink: drop it
		}
	}
	c.mu.Unlock()
	if ref != nil {
		return ref, true, true
	}
	id, err := c.srv.cfg.Sealer.OpenMessageID(version)
	if err != nil {
		c.srv.log.Debug("ignoring undecodable version", "conn", c.ConnID(), "err", err)
		return nil, false, false
	}
	if id.UAID != c.uaid {
		c.srv.log.Debug("ignoring version of another uaid", "conn", c.ConnID())
		return nil, false, false
	}
	return &pb.MessageRef{Partition: id.Partition, Offset: id.Offset, ChannelId: id.ChannelID}, false, true
}

// clientPing answers `{}`; a client pinging more often than MinClientPing
// is told to back off (4774), as autopush does.
func (c *conn) clientPing() {
	now := time.Now().UnixNano()
	if c.lastPing != 0 && now-c.lastPing < int64(c.srv.cfg.MinClientPing) {
		c.close(closeBackoff, "too many pings")
		return
	}
	c.lastPing = now
	_ = c.send(pingReply, true)
}

// broadcastSubscribe adds subscriptions. Only ids the server knows are
// kept (shared strings), so a socket's subscriptions are bounded by the
// configured broadcasts.
func (c *conn) broadcastSubscribe(m *clientMessage) {
	if broadcastsTooBig(m.Broadcasts) {
		c.srv.met.refused(limitBroadcasts)
		c.close(closePolicy, "too many or too long broadcasts")
		return
	}
	reply, subs := c.srv.bcast.delta(m.Broadcasts)
	c.mu.Lock()
	c.bcast = mergeSubscriptions(c.bcast, subs)
	c.mu.Unlock()
	if len(reply) > 0 {
		c.reply(broadcastReply{MessageType: "broadcast", Broadcasts: reply})
	}
}

// notifyBroadcasts sends the changed versions this client subscribed to.
func (c *conn) notifyBroadcasts(changed map[string]string) {
	if c.state.Load() != stateReady {
		return
	}
	var out map[string]any
	c.mu.Lock()
	for _, id := range c.bcast {
		if v, ok := changed[id]; ok {
			if out == nil {
				out = map[string]any{}
			}
			out[id] = v
		}
	}
	c.mu.Unlock()
	if out == nil {
		return
	}
	msg, err := marshal(broadcastReply{MessageType: "broadcast", Broadcasts: out})
	if err != nil {
		c.srv.log.Error("encode broadcast", "err", err)
		return
	}
	_ = c.send(msg, false)
}
