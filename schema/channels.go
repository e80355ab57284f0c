package schema

import (
	"bytes"

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
		ch := findChannel(st, b.ChannelUnregistered.GetChannelId())
		if ch == nil {
			st.Channels = append(st.Channels, &pb.Channel{
				ChannelId:    b.ChannelUnregistered.GetChannelId(),
				Unregistered: true,
				ChangedMs:    ev.GetTimeMs(),
			})
			changed = true
		} else if !ch.GetUnregistered() {
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
