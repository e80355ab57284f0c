package protocol

import (
	"slices"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// ack records each acknowledged message: the Acked event (the durable
// fact) and OwnerAcked (so the owner stops redelivering at once).
//
// Cost against the message rate: acks of notifications this socket
// delivered are free (they are bounded by the deliveries); every other
// update that writes an Acked event costs a token, and so does an ack
// message acking nothing delivered here.
func (c *Client) ack(env *Env, m *Message, now time.Time, out *Output) {
	if len(m.Updates) > MaxAckUpdates {
		out.refused(LimitAckUpdates)
		out.close(ClosePolicy, "too many ack updates")
		return
	}
	// Three effects per update: one allocation instead of append's doublings.
	out.Effects = slices.Grow(out.Effects, 3*len(m.Updates))
	matched := false
	for _, u := range m.Updates {
		ref, delivered, ok := c.messageRef(env, u.Version, true)
		if !ok {
			continue
		}
		if delivered {
			matched = true
		} else if !c.spend(env, now, 1, out) {
			return
		}
		code := intCode(u.Code, AckDelivered)
		if code < AckDelivered || code > AckLast {
			code = AckDelivered // as autopush: anything else counts as delivered
		}
		ev := schema.NewEvent(c.uaid.String(), now)
		ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: code}}
		// The Acked is queued before the owner is told: a node's drain
		// waits for the count OwnerAcked lowers, then flushes, so the
		// Acked is in that flush. The owner then writes the message's held
		// Delivered event (owner.DeliveredHold) a moment later, while the
		// producer has yet to send the Acked: usually one request.
		out.add(Effect{Kind: Produce, Event: ev})
		out.add(Effect{Kind: CountAck, Code: int(code)})
		out.add(Effect{Kind: OwnerAcked, Ref: ref})
	}
	if !matched && c.Phase() == Ready {
		c.spend(env, now, 1, out)
	}
}

// nack records a client-side delivery error; the message stays unacked.
func (c *Client) nack(env *Env, m *Message, now time.Time, out *Output) {
	ref, _, ok := c.messageRef(env, m.Version, false)
	if !ok {
		return
	}
	code := intCode(m.Code, 0)
	if code < NackFirst || code > NackLast {
		code = 0 // as autopush: unexpected codes are recorded as 0
	}
	ev := schema.NewEvent(c.uaid.String(), now)
	ev.Body = &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: ref, Code: code}}
	out.add(Effect{Kind: Produce, Event: ev})
	out.add(Effect{Kind: CountNack, Code: int(code)})
}

// messageRef finds the ref of a version delivered on this connection
// (delivered; take forgets it), or decodes the version (a message
// delivered on an earlier connection). A version of another UAID, or one
// that does not open, is ignored (not ok).
func (c *Client) messageRef(env *Env, version string, take bool) (ref *pb.MessageRef, delivered, ok bool) {
	if version == "" {
		return nil, false, false
	}
	ref = c.unacked[version]
	if ref != nil {
		if take {
			delete(c.unacked, version)
			if len(c.unacked) == 0 {
				c.unacked = nil // maps never shrink: drop it
			}
		}
		return ref, true, true
	}
	id, err := env.Sealer.OpenMessageID(version)
	if err != nil {
		env.log().Debug("ignoring undecodable version", "uaid", c.uaid, "err", err)
		return nil, false, false
	}
	if id.UAID != c.uaid.String() {
		env.log().Debug("ignoring version of another uaid", "uaid", c.uaid)
		return nil, false, false
	}
	return &pb.MessageRef{Partition: id.Partition, Offset: id.Offset, ChannelId: id.ChannelID}, false, true
}

// Delivered records a notification the socket layer queued for the client,
// so that its ack is free and names the message without opening the
// version. At most MaxUnacked are remembered.
func (c *Client) Delivered(n link.Notification) {
	if n.Ref == nil || n.Version == "" || len(c.unacked) >= MaxUnacked {
		return
	}
	if c.unacked == nil {
		c.unacked = make(map[string]*pb.MessageRef, 1)
	}
	c.unacked[n.Version] = n.Ref
}
