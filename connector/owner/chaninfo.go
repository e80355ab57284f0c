package owner

import (
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// channelInfo returns what CheckUAID answers for id: whether it is a known,
// not reset UAID and its registered channels. ps.mu is held.
func (ps *partState) channelInfo(id [16]byte) link.UAIDInfo {
	u := ps.uaids[id]
	if u == nil || u.chans == nil || u.chans.GetUaidReset() {
		return link.UAIDInfo{}
	}
	info := link.UAIDInfo{Valid: true}
	for _, ch := range u.chans.GetChannels() {
		if ch.GetUnregistered() {
			continue // schema.ChannelActive: registered, not unregistered
		}
		chid, err := schema.ParseChannelID(ch.GetChannelId())
		if err != nil {
			continue // the connector only registers canonical ids
		}
		info.Channels = append(info.Channels, chid)
	}
	return info
}
