package owner

import (
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// channelInfo returns what CheckUAID answers for id: whether it is a known,
// not reset UAID and its registered channels. A UAID whose idle reset is
// produced but not read back yet is not valid either: the reset will land,
// so the client must take a new UAID rather than connect to a doomed one.
// ps.mu is held.
func (ps *partState) channelInfo(id schema.UAID) link.UAIDInfo {
	r, ok := ps.recs.get(id)
	if !ok || r.reset() || r.flags&rExpiring != 0 {
		return link.UAIDInfo{}
	}
	info := link.UAIDInfo{Valid: true}
	for i := range r.active() {
		info.Channels = append(info.Channels, r.id(i))
	}
	return info
}

// helloInfo answers CheckUAID. A valid UAID counts as seen from now: the
// idle expiry cannot decide to reset it between the hello and the Attach
// that follows (seconds later, well within the shortest --uaid-expiry).
// ps.mu is held.
func (ps *partState) helloInfo(id schema.UAID) link.UAIDInfo {
	info := ps.channelInfo(id)
	if info.Valid {
		ps.seenNow(id)
	}
	return info
}
