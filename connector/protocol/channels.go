package protocol

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// allowRegistration takes one token of the client's registration rate.
func (c *Client) allowRegistration(env *Env, now time.Time, out *Output) bool {
	if c.regRate.Allow(env.Clock.Nanos(now), env.MaxRegistrationsPerMinute, time.Minute, 1) {
		return true
	}
	out.refused(LimitRegistrations)
	return false
}

// register answers a register once its ChannelRegistered event is durable
// (a ProduceSync request); bad ids, bad keys and limits are answered at once
// and write nothing.
func (c *Client) register(env *Env, m *Message, now time.Time, out *Output) {
	id, err := schema.ParseChannelID(m.ChannelID)
	chid := m.ChannelID
	if err != nil || schema.FormatChannelID(id[:]) != chid {
		// Notifications name the channel in canonical form, so a client
		// using another form could not match them: refuse it (autopush too).
		out.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: StatusBadChannel,
			Reason: "channelID must be a lowercase dashed UUID"})
		return
	}
	if !c.chans.has(id) && len(c.chans.ids) >= env.MaxChannels {
		out.refused(LimitChannels)
		out.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: StatusTooManyChannels,
			Reason: fmt.Sprintf("too many channels (at most %d); unregister some first", env.MaxChannels)})
		return
	}
	var keyHash []byte
	if m.Key != nil {
		raw, err := parseAppServerKey(*m.Key)
		if err != nil {
			out.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: StatusBadKey, Reason: err.Error()})
			return
		}
		sum := sha256.Sum256(raw)
		keyHash = sum[:]
	}
	if !c.allowRegistration(env, now, out) {
		out.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: StatusTooManyRequests, Reason: "too many registrations; retry later"})
		return
	}
	uaid := c.uaid.String()
	token, err := env.Sealer.SealEndpoint(schema.Endpoint{UAID: uaid, ChannelID: chid, KeyHash: keyHash})
	if err != nil {
		env.log().Error("seal endpoint", "err", err)
		out.reply(registerReply{MessageType: typeRegister, ChannelID: chid, Status: StatusError})
		return
	}
	version := "/wpush/v1/"
	if keyHash != nil {
		version = "/wpush/v2/"
	}
	ev := schema.NewEvent(uaid, now)
	ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: chid, KeyHash: keyHash}}
	// The reply waits until the registration is durable.
	out.Await = &Request{Kind: ProduceSync, UAID: c.uaid, Event: ev, chid: chid, id: id,
		endpoint: env.PublicURL + version + token, then: stepRegistered}
}

// registered answers the register whose event was (or was not) written.
func (c *Client) registered(env *Env, req *Request, res Result) Output {
	var out Output
	if res.Err != nil {
		env.log().Warn("register not written", "uaid", c.uaid, "err", res.Err)
		out.reply(registerReply{MessageType: typeRegister, ChannelID: req.chid, Status: StatusError, Reason: "try again later"})
		return out
	}
	c.chans.add(req.id)
	out.reply(registerReply{MessageType: typeRegister, ChannelID: req.chid, Status: StatusOK, PushEndpoint: req.endpoint})
	return out
}

// unregister answers an unregister once its ChannelUnregistered event is
// durable; the unregister of a channel the UAID does not have writes
// nothing.
func (c *Client) unregister(env *Env, m *Message, now time.Time, out *Output) {
	id, err := schema.ParseChannelID(m.ChannelID)
	if err != nil {
		out.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: StatusBadChannel, Reason: "invalid channelID"})
		return
	}
	if !c.chans.has(id) && !c.chans.partial {
		// Not a channel of this UAID: nothing to undo, so nothing is
		// written (an unregister flood leaves no trace in the log).
		out.add(Effect{Kind: CountUnknownUnregister})
		out.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: StatusOK})
		return
	}
	if !c.allowRegistration(env, now, out) {
		out.reply(unregisterReply{MessageType: typeUnregister, ChannelID: m.ChannelID, Status: StatusTooManyRequests, Reason: "too many registrations; retry later"})
		return
	}
	ev := schema.NewEvent(c.uaid.String(), now)
	ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{
		ChannelId: schema.FormatChannelID(id[:]), Code: intCode(m.Code, 0)}}
	out.Await = &Request{Kind: ProduceSync, UAID: c.uaid, Event: ev, chid: m.ChannelID, id: id, then: stepUnregistered}
}

// unregistered answers the unregister whose event was (or was not) written.
func (c *Client) unregistered(env *Env, req *Request, res Result) Output {
	var out Output
	if res.Err != nil {
		env.log().Warn("unregister not written", "uaid", c.uaid, "err", res.Err)
		out.reply(unregisterReply{MessageType: typeUnregister, ChannelID: req.chid, Status: StatusError, Reason: "try again later"})
		return out
	}
	c.chans.remove(req.id)
	out.reply(unregisterReply{MessageType: typeUnregister, ChannelID: req.chid, Status: StatusOK})
	return out
}
