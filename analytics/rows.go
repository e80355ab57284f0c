package analytics

import (
	"encoding/hex"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema/pb"
)

// EventRow maps an event read from rec to its raw-table row; false for
// events without one (channel-state snapshots, unknown bodies).
func EventRow(rec *kgo.Record, ev *pb.Event) (Row, bool) {
	row := Row{
		TimeMs:    ev.GetTimeMs(),
		EventID:   ev.GetId(),
		UAID:      ev.GetUaid(),
		Partition: rec.Partition,
		Offset:    rec.Offset,
	}
	switch b := ev.GetBody().(type) {
	case *pb.Event_MessageAccepted:
		m := b.MessageAccepted
		row.Table = TableAccepted
		row.Values = acceptedValues(m.GetChannelId(), m.GetVapidSub(), m.GetVapidKeyHash(), m.GetKeyBound(),
			len(m.GetPayload()), m.GetEncoding(), m.GetTtlS(), m.GetUrgency(), m.GetTopic() != "")
	case *pb.Event_MessageDeleted:
		row.Table = TableDeleted
		row.Values = refValues(ev, b.MessageDeleted.GetMsg())
	case *pb.Event_Delivered:
		d := b.Delivered
		row.Table = TableDelivered
		row.Values = append(refValues(ev, d.GetMsg()), d.GetNode(), d.GetConnId(), d.GetAttempt())
	case *pb.Event_Acked:
		row.Table = TableAcked
		row.Values = append(refValues(ev, b.Acked.GetMsg()), b.Acked.GetCode())
	case *pb.Event_Nacked:
		row.Table = TableNacked
		row.Values = append(refValues(ev, b.Nacked.GetMsg()), b.Nacked.GetCode())
	case *pb.Event_Expired:
		row.Table = TableExpired
		row.Values = refValues(ev, b.Expired.GetMsg())
	case *pb.Event_Dropped:
		d := b.Dropped
		row.Table = TableDropped
		row.Values = append(refValues(ev, d.GetMsg()), DropReason(d.GetReason()), int32(d.GetReason()))
	case *pb.Event_ChannelRegistered:
		r := b.ChannelRegistered
		row.Table = TableRegistrations
		row.Values = []any{"registered", r.GetChannelId(), hex.EncodeToString(r.GetKeyHash()), int32(0), ""}
	case *pb.Event_ChannelUnregistered:
		u := b.ChannelUnregistered
		row.Table = TableRegistrations
		row.Values = []any{"unregistered", u.GetChannelId(), "", u.GetCode(), ""}
	case *pb.Event_UserReset:
		row.Table = TableRegistrations
		row.Values = []any{"reset", "", "", int32(0), b.UserReset.GetReason()}
	case *pb.Event_Connected:
		c := b.Connected
		row.Table = TableConnections
		row.Values = []any{"connected", c.GetNode(), c.GetConnId(), c.GetLinkAddr(), c.GetSinceMs(), c.GetUserAgent(), int64(0)}
	case *pb.Event_Disconnected:
		d := b.Disconnected
		row.Table = TableConnections
		row.Values = []any{"disconnected", d.GetNode(), d.GetConnId(), "", int64(0), "", d.GetDurationMs()}
	default:
		return Row{}, false
	}
	return row, true
}

// acceptedValues are the accepted table's own columns (the full decode
// and the fast path, acceptedRow, share them).
func acceptedValues(channelID, vapidSub string, keyHash []byte, keyBound bool, payloadLen int,
	encoding string, ttlS int64, urgency pb.Urgency, hasTopic bool) []any {
	return []any{
		channelID, vapidSub, hex.EncodeToString(keyHash), boolByte(keyBound), uint32(payloadLen),
		encoding, ttlS, Urgency(urgency), boolByte(hasTopic),
	}
}

// memSize estimates the memory a row holds (its struct, the boxed values
// and their strings), for the batch's byte bound.
func (r *Row) memSize() int {
	const rowStruct, boxed = 112, 16
	n := rowStruct + len(r.EventID) + len(r.UAID) + len(r.Values)*boxed
	for _, v := range r.Values {
		switch v := v.(type) {
		case string:
			n += boxed + len(v)
		case []byte:
			n += 24 + len(v)
		default:
			n += 8
		}
	}
	return n
}

// refValues renders a MessageRef as the ref columns; latency is the time
// from acceptance to this event, 0 when the accept time is unknown.
func refValues(ev *pb.Event, m *pb.MessageRef) []any {
	var latency int64
	if m.GetAcceptedMs() > 0 {
		latency = ev.GetTimeMs() - m.GetAcceptedMs()
	}
	return []any{m.GetChannelId(), m.GetPartition(), m.GetOffset(), m.GetAcceptedMs(), m.GetVapidSub(), latency}
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Urgency names an urgency as the Urgency header spells it.
func Urgency(u pb.Urgency) string {
	name := u.String() // URGENCY_VERY_LOW, or the number when unknown
	if s, ok := strings.CutPrefix(name, "URGENCY_"); ok {
		return strings.ReplaceAll(strings.ToLower(s), "_", "-")
	}
	return name
}

// DropReason names a drop reason ("pending_limit", ...).
func DropReason(r pb.DropReason) string {
	name := r.String()
	if s, ok := strings.CutPrefix(name, "DROP_REASON_"); ok {
		return strings.ToLower(s)
	}
	return name
}
