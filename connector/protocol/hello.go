package protocol

import (
	"fmt"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// hello identifies the client. A well-formed UAID is kept when the owner
// knows it; an unknown one is reset (UserReset, so its endpoints answer
// 410) and replaced; a missing or malformed one is replaced.
func (c *Client) hello(env *Env, m *Message) Output {
	if !c.phase.CompareAndSwap(int32(AwaitHello), int32(Identifying)) {
		return Output{}
	}
	var out Output
	if broadcastsTooBig(m.Broadcasts) {
		out.refused(LimitBroadcasts)
		out.close(ClosePolicy, "too many or too long broadcasts")
		return out
	}
	raw := m.uaid()
	if raw == "" {
		out.add(Effect{Kind: CountHello, Code: int(HelloNew)})
		return c.identify(env, out, env.newUAID(), link.UAIDInfo{}, m.Broadcasts)
	}
	uaid, err := schema.ParseUAID(raw)
	if err != nil {
		env.log().Debug("malformed uaid at hello; issuing a new one")
		out.add(Effect{Kind: CountHello, Code: int(HelloNew)})
		return c.identify(env, out, env.newUAID(), link.UAIDInfo{}, m.Broadcasts)
	}
	out.Await = &Request{Kind: CheckUAID, UAID: uaid, broadcasts: m.Broadcasts, then: stepChecked}
	return out
}

// checked goes on with the owner's answer about the hello's UAID.
func (c *Client) checked(env *Env, now time.Time, req *Request, res Result) Output {
	if res.Err != nil {
		return c.helloFailed(env, fmt.Errorf("check uaid: %w", res.Err)) // never reset on an error
	}
	if res.Info.Valid {
		out := Output{Effects: []Effect{{Kind: CountHello, Code: int(HelloKnown)}}}
		return c.identify(env, out, req.UAID, res.Info, req.broadcasts)
	}
	ev := schema.NewEvent(req.UAID.String(), now)
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "unknown uaid at hello"}}
	return Output{Await: &Request{Kind: ProduceSync, UAID: req.UAID, Event: ev, broadcasts: req.broadcasts, then: stepReset}}
}

func (c *Client) helloFailed(env *Env, err error) Output {
	env.log().Warn("hello failed; client should retry", "err", err)
	return closeWith(CloseTryAgain, "try again later")
}

// identify answers the hello with uaid: the socket claims the UAID, then
// the reply is written, then the client is Ready and attaches.
func (c *Client) identify(env *Env, out Output, uaid schema.UAID, info link.UAIDInfo, broadcasts map[string]string) Output {
	reply, subs, bgen := env.Broadcasts.deltaSince(broadcasts, nil, 0)
	msg, err := marshal(helloReply{MessageType: typeHello, UAID: uaid.String(), Status: StatusOK, UseWebpush: true, Broadcasts: reply})
	if err != nil {
		env.log().Error("encode hello", "err", err)
		out.close(CloseGoingAway, "internal error")
		return out
	}
	out.Await = &Request{Kind: Claim, UAID: uaid, Frame: msg, info: info, subs: subs, bgen: bgen, then: stepClaimed}
	return out
}

// reset goes on once the unknown UAID's reset is durable: a new UAID.
func (c *Client) reset(env *Env, req *Request, res Result) Output {
	if res.Err != nil {
		return c.helloFailed(env, fmt.Errorf("reset uaid: %w", res.Err))
	}
	env.log().Debug("unknown uaid reset", "uaid", req.UAID)
	var out Output
	out.add(Effect{Kind: CountHello, Code: int(HelloReset)})
	return c.identify(env, out, env.newUAID(), link.UAIDInfo{}, req.broadcasts)
}

// claimed goes on once the socket is the UAID's: the client takes its
// channels and subscriptions, its presence is recorded, the reply written.
func (c *Client) claimed(req *Request, res Result) Output {
	if !res.Claimed {
		return Output{} // closed meanwhile
	}
	c.bcast, c.bgen = req.subs, req.bgen
	c.chans = newChanSet(req.info)
	// Connected before Ready: a Disconnected can only follow it.
	return Output{
		Effects: []Effect{{Kind: Connected}},
		Await:   &Request{Kind: Greet, UAID: req.UAID, Frame: req.Frame, then: stepGreeted},
	}
}

// greeted goes on once the reply is written: the client is Ready and
// attaches to the owner, which then sends the stored messages. Broadcast
// changes since the reply's versions were read are sent first: they were
// not announced to a client that was not Ready.
func (c *Client) greeted(env *Env, req *Request, res Result) Output {
	if res.Err != nil || !c.phase.CompareAndSwap(int32(Identifying), int32(Ready)) {
		// Closed while answering: the close saw no Ready client and
		// recorded nothing.
		return Output{Effects: []Effect{{Kind: Disconnected}}}
	}
	out := c.catchUp(env)
	out.Await = &Request{Kind: Attach, UAID: req.UAID, then: stepAttached}
	return out
}

func (c *Client) attached(env *Env, req *Request, res Result) Output {
	if res.Err != nil {
		env.log().Warn("attach failed; client should retry", "uaid", req.UAID, "err", res.Err)
		return closeWith(CloseTryAgain, "try again later")
	}
	if c.Phase() == Closed {
		// Closed during Attach: the close's Detach came first.
		return Output{Effects: []Effect{{Kind: Detach}}}
	}
	return Output{}
}
