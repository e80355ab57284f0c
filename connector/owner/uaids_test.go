package owner

import (
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// chanState shows a UAID's record as a format-1 ChannelState (nil when
// unknown), for assertions written against that view.
func (ps *partState) chanState(id [16]byte) *pb.ChannelState {
	r, ok := ps.recs.get(id)
	if !ok {
		return nil
	}
	st := &pb.ChannelState{UaidReset: r.reset(), RegistrationsOffset: r.next}
	for i := range r.count() {
		id := r.id(i)
		st.Channels = append(st.Channels, &pb.Channel{ChannelId: schema.FormatChannelID(id[:]), Unregistered: i >= r.active()})
	}
	return st
}
