package connector

import "github.com/pushlog/pushlog/connector/protocol"

// The broadcast table ("megaphone") and the delta a client is answered
// with are protocol: connector/protocol/broadcast.go. The server keeps the
// one table every connection's machine reads (Env.Broadcasts).

type broadcasts = protocol.Broadcasts

// broadcastErrorsKey is reserved: unknown ids are reported under it.
const broadcastErrorsKey = protocol.BroadcastErrorsKey

func newBroadcasts(m map[string]string) *broadcasts { return protocol.NewBroadcasts(m) }
