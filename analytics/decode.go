package analytics

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// acceptedRow maps a MessageAccepted record to its row without building
// the message (schema.DecodeAccepted: proto.Unmarshal copies the payload,
// up to 4 KB, only for the row to keep its length, and accepted events
// are the bulk of the log). It is a fast path only: ok is false for
// anything schema.DecodeAccepted leaves to the full decode, and the
// caller then decodes the record in full.
func acceptedRow(rec *kgo.Record) (Row, bool) {
	a, ok := schema.DecodeAccepted(rec)
	if !ok {
		return Row{}, false
	}
	return Row{
		Table:     TableAccepted,
		TimeMs:    a.TimeMs,
		EventID:   append([]byte(nil), a.EventID...), // not the whole record value
		UAID:      string(a.UAIDText),
		Partition: rec.Partition,
		Offset:    rec.Offset,
		Values: acceptedValues(string(a.ChannelID), string(a.VapidSub), a.VapidKeyHash, a.KeyBound,
			len(a.Payload), string(a.Encoding), a.TTLS, a.Urgency, len(a.Topic) > 0),
	}, true
}
