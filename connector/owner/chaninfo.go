package owner

import (
	"github.com/pushlog/pushlog/connector/link"
)

// channelInfo returns what CheckUAID answers for id: whether it is a known,
// not reset UAID and its registered channels. ps.mu is held.
func (ps *partState) channelInfo(id [16]byte) link.UAIDInfo {
	r, ok := ps.recs.get(id)
	if !ok || r.reset() {
		return link.UAIDInfo{}
	}
	info := link.UAIDInfo{Valid: true}
	for i := range r.active() {
		info.Channels = append(info.Channels, r.id(i))
	}
	return info
}
