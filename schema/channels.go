package schema

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema/pb"
)

// ApplyRegistration folds one pushlog.registrations event into the channel
// state of its UAID and reports whether the state changed. It is the single
// definition of channel-state semantics shared by the channel-state
// projector, the owners and the ingest gone set. Applying an event twice has
// the same effect as once. offset is the event's registrations offset, or
// -1 when unknown.
func ApplyRegistration(st *pb.ChannelState, ev *pb.Event, offset int64) bool {
	if offset >= 0 && offset < st.GetRegistrationsOffset() {
		return false // already folded into this snapshot
	}
	changed := false
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		ch := findChannel(st, b.ChannelRegistered.GetChannelId())
		if st.GetUaidReset() {
			// A registration after a reset revives the UAID: Firefox keeps
			// using it after re-subscribing.
			st.UaidReset = false
			changed = true
		}
		if ch == nil {
			st.Channels = append(st.Channels, &pb.Channel{
				ChannelId: b.ChannelRegistered.GetChannelId(),
				KeyHash:   b.ChannelRegistered.GetKeyHash(),
				ChangedMs: ev.GetTimeMs(),
			})
			changed = true
		} else if ch.GetUnregistered() || !bytes.Equal(ch.GetKeyHash(), b.ChannelRegistered.GetKeyHash()) {
			// Re-registering with another key rebinds the channel: the
			// newest registration is what the user agent holds.
			ch.Unregistered = false
			ch.KeyHash = b.ChannelRegistered.GetKeyHash()
			ch.ChangedMs = ev.GetTimeMs()
			changed = true
		}
	case *pb.Event_ChannelUnregistered:
		// Unregistering a channel never registered changes nothing: it
		// would otherwise cost a lasting fact per request (an anonymous
		// client could flood them), and no endpoint of it was ever given.
		ch := findChannel(st, b.ChannelUnregistered.GetChannelId())
		if ch != nil && !ch.GetUnregistered() {
			ch.Unregistered = true
			ch.ChangedMs = ev.GetTimeMs()
			changed = true
		}
	case *pb.Event_UserReset:
		if !st.GetUaidReset() {
			st.UaidReset = true
			st.ResetMs = ev.GetTimeMs()
			for _, ch := range st.Channels {
				ch.Unregistered = true
				ch.ChangedMs = ev.GetTimeMs()
			}
			changed = true
		}
	}
	if offset >= 0 && offset+1 > st.GetRegistrationsOffset() {
		st.RegistrationsOffset = offset + 1
	}
	return changed
}

func findChannel(st *pb.ChannelState, id string) *pb.Channel {
	for _, ch := range st.GetChannels() {
		if ch.GetChannelId() == id {
			return ch
		}
	}
	return nil
}

// ChannelActive reports whether the channel is registered and not gone.
func ChannelActive(st *pb.ChannelState, id string) bool {
	ch := findChannel(st, id)
	return ch != nil && !ch.GetUnregistered() && !st.GetUaidReset()
}

// ChannelGone reports whether the channel was explicitly unregistered or its
// UAID reset (the 410 cases). A channel never seen is not gone: its
// registration may simply not have been folded yet.
func ChannelGone(st *pb.ChannelState, id string) bool {
	if st.GetUaidReset() {
		return true
	}
	ch := findChannel(st, id)
	return ch != nil && ch.GetUnregistered()
}

// Format 2 of pushlog.channels (see events.proto): one compacted record per
// registered or unregistered channel keyed "<uaid>:<channel id>" (an
// unregistered one until the UAID expiry, then a forget tombstone), one
// per UAID keyed by the bare UAID (UaidState; it supersedes a format-1
// ChannelState snapshot of the same key), and "<uaid>:seen" (UaidSeen, written by the owner). Every
// record is produced to the partition of its UAID, PartitionOf(uaid), not of
// its key: tools must take the UAID from the key's first 32 characters (or
// the value) and never re-partition by the whole key.

// HeaderRegOffset carries, on every format-2 channels record including
// tombstones, the next registrations offset after the event that wrote it
// (decimal). Owners read it to know how far the channel state covers the
// registrations log.
const HeaderRegOffset = "pushlog-roff"

// HeaderChangedMs carries, on channel tombstones, when the channel was
// unregistered (unix milliseconds, decimal).
const HeaderChangedMs = "pushlog-ms"

// HeaderForget marks a channel tombstone that forgets an unregistered
// channel (past the UAID expiry or the per-UAID bound of unregistered
// records) instead of unregistering it: its endpoint stops answering 410.
// A channel tombstone without it (written before unregistered channels had
// a value record) means unregistered.
const HeaderForget = "pushlog-forget"

// ChannelsKind tells what a pushlog.channels record is about.
type ChannelsKind uint8

// Kinds of pushlog.channels records.
const (
	ChannelsUAID    ChannelsKind = iota + 1 // key = uaid: UaidState, or a format-1 ChannelState
	ChannelsChannel                         // key = uaid:channel: ChannelEntry
	ChannelsSeen                            // key = uaid:seen: UaidSeen
)

// seenSuffix ends the key of a UaidSeen record.
const seenSuffix = ":seen"

// ChannelKey is the key of a channel's record.
func ChannelKey(uaid string, ch [16]byte) []byte {
	return []byte(uaid + ":" + FormatChannelID(ch[:]))
}

// SeenKey is the key of a UAID's last-seen record.
func SeenKey(uaid string) []byte { return []byte(uaid + seenSuffix) }

// ParseChannelsKey splits a pushlog.channels key into the UAID, the kind
// and (for ChannelsChannel) the channel id.
func ParseChannelsKey(key []byte) (uaid [16]byte, kind ChannelsKind, ch [16]byte, err error) {
	if len(key) < 32 {
		return uaid, 0, ch, fmt.Errorf("%w: channels key of %d bytes", ErrCorrupt, len(key))
	}
	if uaid, err = ParseUAID(string(key[:32])); err != nil {
		return uaid, 0, ch, fmt.Errorf("%w: channels key: %v", ErrCorrupt, err)
	}
	rest := string(key[32:])
	switch {
	case rest == "":
		return uaid, ChannelsUAID, ch, nil
	case rest == seenSuffix:
		return uaid, ChannelsSeen, ch, nil
	case len(rest) > 1 && rest[0] == ':':
		if ch, err = ParseChannelID(rest[1:]); err != nil {
			return uaid, 0, ch, fmt.Errorf("%w: channels key: %v", ErrCorrupt, err)
		}
		return uaid, ChannelsChannel, ch, nil
	}
	return uaid, 0, ch, fmt.Errorf("%w: channels key %q", ErrCorrupt, key)
}

// ChannelsFact is one decoded pushlog.channels record.
type ChannelsFact struct {
	UAID    [16]byte
	Kind    ChannelsKind
	Channel [16]byte // ChannelsChannel only
	Deleted bool     // a tombstone
	// Forget: a channel tombstone that forgets an unregistered channel
	// (HeaderForget); a channel tombstone without it means unregistered.
	Forget bool
	// RegOffset is the next registrations offset the record covers; -1
	// when unknown (a tombstone of a format-1 key).
	RegOffset int64
	ChangedMs int64            // channel tombstones: when unregistered
	Entry     *pb.ChannelEntry // ChannelsChannel value
	State     *pb.UaidState    // ChannelsUAID value (format 2)
	Snapshot  *pb.ChannelState // ChannelsUAID value (format 1)
	Seen      *pb.UaidSeen     // ChannelsSeen value
	Event     *pb.Event        // the decoded value, nil for tombstones
}

// DecodeChannels decodes a pushlog.channels record of either format. A value
// whose body does not match its key, or that does not decode, is ErrCorrupt;
// a body from a newer writer is ErrUnknownType.
func DecodeChannels(r *kgo.Record) (ChannelsFact, error) {
	uaid, kind, ch, err := ParseChannelsKey(r.Key)
	f := ChannelsFact{UAID: uaid, Kind: kind, Channel: ch, RegOffset: -1}
	if err != nil {
		return f, err
	}
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderRegOffset:
			if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil && n >= 0 {
				f.RegOffset = n
			}
		case HeaderChangedMs:
			if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				f.ChangedMs = n
			}
		case HeaderForget:
			f.Forget = kind == ChannelsChannel
		}
	}
	if r.Value == nil {
		f.Deleted = true
		return f, nil
	}
	f.Forget = false // only tombstones forget
	ev, err := Decode(r)
	if err != nil {
		return f, err
	}
	if got, _ := ParseUAID(ev.GetUaid()); got != uaid {
		return f, fmt.Errorf("%w: key and value name different UAIDs", ErrCorrupt)
	}
	f.Event = ev
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelState:
		f.Snapshot = b.ChannelState
		f.RegOffset = max(f.RegOffset, b.ChannelState.GetRegistrationsOffset())
	case *pb.Event_UaidState:
		f.State = b.UaidState
		f.RegOffset = max(f.RegOffset, b.UaidState.GetRegistrationsOffset())
	case *pb.Event_ChannelEntry:
		f.Entry = b.ChannelEntry
		f.RegOffset = max(f.RegOffset, b.ChannelEntry.GetRegistrationsOffset())
		f.ChangedMs = b.ChannelEntry.GetChangedMs()
		if c := b.ChannelEntry.GetChannelId(); c != "" { // written empty: the key names it
			if id, err := ParseChannelID(c); err != nil || id != ch {
				return f, fmt.Errorf("%w: channel entry does not match its key", ErrCorrupt)
			}
		}
	case *pb.Event_UaidSeen:
		f.Seen = b.UaidSeen
	default:
		return f, fmt.Errorf("%w: %s on the channels topic", ErrCorrupt, TypeName(ev))
	}
	want := map[ChannelsKind]bool{ChannelsUAID: f.Snapshot != nil || f.State != nil, ChannelsChannel: f.Entry != nil, ChannelsSeen: f.Seen != nil}
	if !want[kind] {
		return f, fmt.Errorf("%w: %s under a key of another kind", ErrCorrupt, TypeName(ev))
	}
	return f, nil
}

// channelsRecord builds a record of the channels topic on partition p.
func channelsRecord(topic string, key []byte, ev *pb.Event, p int32, regOffset int64) (*kgo.Record, error) {
	r := &kgo.Record{Topic: topic, Key: key, Partition: p}
	if ev != nil {
		enc, err := Record(ev)
		if err != nil {
			return nil, err
		}
		r.Value, r.Headers = enc.Value, enc.Headers
	}
	if regOffset >= 0 {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderRegOffset, Value: []byte(strconv.FormatInt(regOffset, 10))})
	}
	return r, nil
}

// Unregistered reports whether the record says the channel is unregistered
// (or its UAID reset): a value with unregistered set, or a tombstone of an
// older writer. A forget tombstone is not: the channel is no longer known.
func (f ChannelsFact) Unregistered() bool {
	if f.Kind != ChannelsChannel {
		return false
	}
	if f.Deleted {
		return !f.Forget
	}
	return f.Entry.GetUnregistered()
}

// ChannelEntryRecord is the record of a channel of uaid (registered, or
// unregistered when e says so), for partition p (the UAID's partition).
func (n Names) ChannelEntryRecord(uaid string, e *pb.ChannelEntry, p int32) (*kgo.Record, error) {
	id, err := ParseChannelID(e.GetChannelId())
	if err != nil {
		return nil, fmt.Errorf("channel entry of %s: %w", uaid, err)
	}
	// The smallest value that decodes: no event id or time (the entry has
	// its own), no channel id (the key names it). Bootstrap reads one
	// record per channel, so every byte counts.
	ev := &pb.Event{Uaid: uaid, Body: &pb.Event_ChannelEntry{ChannelEntry: &pb.ChannelEntry{
		KeyHash: e.GetKeyHash(), RegistrationsOffset: e.GetRegistrationsOffset(), ChangedMs: e.GetChangedMs(),
		Unregistered: e.GetUnregistered(),
	}}}
	return channelsRecord(n.Channels, ChannelKey(uaid, id), ev, p, e.GetRegistrationsOffset())
}

// UnregisteredRecord marks a channel of uaid unregistered (or its UAID
// reset) at changedMs by the registration before regOffset: a small value,
// kept until the projector forgets it (ChannelForget), so the endpoint
// answers 410 for as long as compaction keeps the topic, unlike a
// tombstone, which compaction removes after delete.retention.ms.
func (n Names) UnregisteredRecord(uaid string, ch [16]byte, regOffset, changedMs int64, p int32) (*kgo.Record, error) {
	return n.ChannelEntryRecord(uaid, &pb.ChannelEntry{
		ChannelId: FormatChannelID(ch[:]), RegistrationsOffset: regOffset, ChangedMs: changedMs, Unregistered: true,
	}, p)
}

// ChannelTombstone removes a channel's record the way writers before
// UnregisteredRecord did: it was unregistered (or its UAID reset) at
// changedMs by the registration before regOffset. Kept for tests and tools
// that make old data; readers treat it as unregistered.
func (n Names) ChannelTombstone(uaid string, ch [16]byte, regOffset, changedMs int64, p int32) *kgo.Record {
	r, _ := channelsRecord(n.Channels, ChannelKey(uaid, ch), nil, p, regOffset) // no value: cannot fail
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderChangedMs, Value: []byte(strconv.FormatInt(changedMs, 10))})
	return r
}

// ChannelForget tombstones the record of an unregistered channel (past the
// UAID expiry or the per-UAID bound): the channel is no longer known.
// regOffset is the one of its unregistered record.
func (n Names) ChannelForget(uaid string, ch [16]byte, regOffset int64, p int32) *kgo.Record {
	r, _ := channelsRecord(n.Channels, ChannelKey(uaid, ch), nil, p, regOffset) // no value: cannot fail
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderForget, Value: []byte("1")})
	return r
}

// UaidStateRecord is the UAID-level record of uaid (key: the bare UAID).
func (n Names) UaidStateRecord(uaid string, st *pb.UaidState, p int32, now time.Time) (*kgo.Record, error) {
	ev := NewEvent(uaid, now)
	ev.Body = &pb.Event_UaidState{UaidState: st}
	return channelsRecord(n.Channels, []byte(uaid), ev, p, st.GetRegistrationsOffset())
}

// UaidTombstone removes the UAID-level record of uaid (and, under
// compaction, a format-1 snapshot of it).
func (n Names) UaidTombstone(uaid string, regOffset int64, p int32) *kgo.Record {
	r, _ := channelsRecord(n.Channels, []byte(uaid), nil, p, regOffset)
	return r
}

// SeenRecord is the last-seen record of uaid.
func (n Names) SeenRecord(uaid string, lastSeen time.Time, p int32, now time.Time) (*kgo.Record, error) {
	ev := NewEvent(uaid, now)
	ev.Body = &pb.Event_UaidSeen{UaidSeen: &pb.UaidSeen{LastSeenMs: lastSeen.UnixMilli()}}
	return channelsRecord(n.Channels, SeenKey(uaid), ev, p, -1)
}

// SeenTombstone removes the last-seen record of uaid.
func (n Names) SeenTombstone(uaid string, p int32) *kgo.Record {
	r, _ := channelsRecord(n.Channels, SeenKey(uaid), nil, p, -1)
	return r
}

// FoldChannelsFact applies one decoded channels record of either format to
// the format-1 view of its UAID's state (states by UAID string), the view
// tools and tests compare with ApplyRegistration. An unregistered channel
// (value or older writers' tombstone) is shown unregistered, a forgotten
// one is removed; a tombstoned UAID record removes the UAID.
func FoldChannelsFact(states map[string]*pb.ChannelState, f ChannelsFact) {
	uaid := hex.EncodeToString(f.UAID[:])
	st := states[uaid]
	if f.Kind == ChannelsUAID && f.Snapshot != nil {
		states[uaid] = proto.Clone(f.Snapshot).(*pb.ChannelState)
		return
	}
	if f.Kind == ChannelsUAID && f.Deleted {
		delete(states, uaid)
		return
	}
	if f.Kind == ChannelsSeen || f.Forget && st == nil {
		return
	}
	if st == nil {
		st = &pb.ChannelState{}
		states[uaid] = st
	}
	st.RegistrationsOffset = max(st.RegistrationsOffset, f.RegOffset)
	switch f.Kind {
	case ChannelsUAID:
		st.UaidReset = f.State.GetUaidReset()
		st.ResetMs = f.State.GetResetMs()
	case ChannelsChannel:
		id := FormatChannelID(f.Channel[:])
		ch := findChannel(st, id)
		if ch == nil {
			ch = &pb.Channel{ChannelId: id}
			st.Channels = append(st.Channels, ch)
		}
		switch {
		case f.Deleted && f.Forget:
			st.Channels = slices.DeleteFunc(st.Channels, func(c *pb.Channel) bool { return c == ch })
		case f.Unregistered():
			ch.Unregistered, ch.ChangedMs = true, f.ChangedMs
		default:
			ch.Unregistered, ch.KeyHash, ch.ChangedMs = false, f.Entry.GetKeyHash(), f.Entry.GetChangedMs()
		}
	}
}
