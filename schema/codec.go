package schema

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema/pb"
)

// Record headers carried by every pushlog event. Tools can filter on the type
// without decoding the value.
const (
	HeaderType    = "pushlog-type"
	HeaderVersion = "pushlog-v"
	// EncodingVersion is the value of HeaderVersion this code writes and
	// the highest it reads.
	EncodingVersion = "1"
)

// ErrCorrupt marks a record that cannot be decoded; consumers log and skip
// it (it is still in Kafka for inspection) rather than stop the partition.
var ErrCorrupt = errors.New("corrupt event")

// ErrUnknownType marks an event from a newer writer that this reader does not
// understand; it is skipped, never treated as corrupt.
var ErrUnknownType = errors.New("unknown event type")

// TypeName returns the stable type name of an event body ("message_accepted",
// ...), used in the type header and in analytics.
func TypeName(ev *pb.Event) string {
	switch ev.GetBody().(type) {
	case *pb.Event_MessageAccepted:
		return "message_accepted"
	case *pb.Event_MessageDeleted:
		return "message_deleted"
	case *pb.Event_Delivered:
		return "delivered"
	case *pb.Event_Acked:
		return "acked"
	case *pb.Event_Nacked:
		return "nacked"
	case *pb.Event_Expired:
		return "expired"
	case *pb.Event_Dropped:
		return "dropped"
	case *pb.Event_ChannelRegistered:
		return "channel_registered"
	case *pb.Event_ChannelUnregistered:
		return "channel_unregistered"
	case *pb.Event_UserReset:
		return "user_reset"
	case *pb.Event_Connected:
		return "connected"
	case *pb.Event_Disconnected:
		return "disconnected"
	case *pb.Event_ChannelState:
		return "channel_state"
	case *pb.Event_ChannelEntry:
		return "channel_entry"
	case *pb.Event_UaidState:
		return "uaid_state"
	case *pb.Event_UaidSeen:
		return "uaid_seen"
	case *pb.Event_BridgeRegistered:
		return "bridge_registered"
	}
	return ""
}

// TopicOf returns the topic an event type belongs to.
func TopicOf(ev *pb.Event) string {
	switch ev.GetBody().(type) {
	case *pb.Event_MessageAccepted, *pb.Event_MessageDeleted:
		return TopicMessages
	case *pb.Event_Delivered, *pb.Event_Acked, *pb.Event_Nacked, *pb.Event_Expired, *pb.Event_Dropped:
		return TopicAcks
	case *pb.Event_ChannelRegistered, *pb.Event_ChannelUnregistered, *pb.Event_UserReset, *pb.Event_BridgeRegistered:
		return TopicRegistrations
	case *pb.Event_Connected, *pb.Event_Disconnected:
		return TopicPresence
	case *pb.Event_ChannelState, *pb.Event_ChannelEntry, *pb.Event_UaidState, *pb.Event_UaidSeen:
		return TopicChannels
	}
	return ""
}

// NewEvent fills id and time for a new event of uaid.
func NewEvent(uaid string, now time.Time) *pb.Event {
	return &pb.Event{Id: NewEventID(), TimeMs: now.UnixMilli(), Uaid: uaid}
}

// Record encodes an event as a Kafka record on its topic, keyed by UAID.
func Record(ev *pb.Event) (*kgo.Record, error) {
	name := TypeName(ev)
	if name == "" {
		return nil, errors.New("encode event: no body")
	}
	if _, err := ParseUAID(ev.GetUaid()); err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	val, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	return &kgo.Record{
		Topic: TopicOf(ev),
		Key:   []byte(ev.GetUaid()),
		Value: val,
		Headers: []kgo.RecordHeader{
			{Key: HeaderType, Value: []byte(name)},
			{Key: HeaderVersion, Value: []byte(EncodingVersion)},
		},
	}, nil
}

// Decode decodes a record value written by Record. Records from a newer
// encoding version or with an unknown body return ErrUnknownType; anything
// that does not parse returns ErrCorrupt.
func Decode(r *kgo.Record) (*pb.Event, error) {
	for _, h := range r.Headers {
		if h.Key == HeaderVersion && string(h.Value) != EncodingVersion {
			return nil, fmt.Errorf("%w: encoding version %q", ErrUnknownType, h.Value)
		}
	}
	return DecodeValue(r.Value)
}

// DecodeValue decodes an event from its encoded bytes.
func DecodeValue(b []byte) (*pb.Event, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: tombstone", ErrCorrupt)
	}
	ev := &pb.Event{}
	if err := proto.Unmarshal(b, ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if ev.GetBody() == nil {
		return nil, ErrUnknownType
	}
	if _, err := ParseUAID(ev.GetUaid()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return ev, nil
}
