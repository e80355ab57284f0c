package protocol

import "sync"

// Broadcasts ("megaphone") piggyback on the push socket: a client names the
// broadcast ids it follows with the versions it has, and the server answers
// with the ids whose version differs. Unknown ids are reported under
// "errors", as autopush does.

const (
	BroadcastErrorsKey = "errors"
	broadcastNotFound  = "Broadcast not found"
)

// Broadcasts is the server's current id -> version table, shared by every
// client (safe for concurrent use).
type Broadcasts struct {
	mu sync.RWMutex
	// ids maps an id to its entry; the entry's id string is shared by
	// every subscribed connection (no per-connection copy).
	ids map[string]*broadcastEntry
}

type broadcastEntry struct {
	id      string
	version string
}

func NewBroadcasts(m map[string]string) *Broadcasts {
	b := &Broadcasts{ids: make(map[string]*broadcastEntry, len(m))}
	for id, v := range m {
		b.ids[id] = &broadcastEntry{id: id, version: v}
	}
	return b
}

// delta compares a client's versions with the server's. reply holds the ids
// whose version differs (with the server's version) and an "errors" map for
// unknown ids; subscribed holds the known ids, as shared strings.
func (b *Broadcasts) delta(client map[string]string) (reply map[string]any, subscribed []string) {
	reply = map[string]any{}
	if len(client) == 0 {
		return reply, nil
	}
	var missing map[string]string
	b.mu.RLock()
	defer b.mu.RUnlock()
	for id, v := range client {
		e, ok := b.ids[id]
		if !ok {
			if missing == nil {
				missing = map[string]string{}
			}
			missing[id] = broadcastNotFound
			continue
		}
		subscribed = append(subscribed, e.id)
		if e.version != v {
			reply[id] = e.version
		}
	}
	if missing != nil {
		reply[BroadcastErrorsKey] = missing
	}
	return reply, subscribed
}

// Set replaces the table and returns the ids whose version changed or that
// are new.
func (b *Broadcasts) Set(m map[string]string) map[string]string {
	changed := map[string]string{}
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[string]*broadcastEntry, len(m))
	for id, v := range m {
		e, ok := b.ids[id]
		if !ok || e.version != v {
			changed[id] = v
		}
		if ok {
			next[id] = &broadcastEntry{id: e.id, version: v}
		} else {
			next[id] = &broadcastEntry{id: id, version: v}
		}
	}
	b.ids = next
	return changed
}

// mergeSubscriptions adds ids to a subscription list without duplicates.
func mergeSubscriptions(have, add []string) []string {
	for _, id := range add {
		found := false
		for _, h := range have {
			if h == id {
				found = true
				break
			}
		}
		if !found {
			have = append(have, id)
		}
	}
	return have
}

// broadcastSubscribe adds subscriptions. Only ids the server knows are
// kept (the table's shared strings), so a client's subscriptions are
// bounded by the configured broadcasts.
func (c *Client) broadcastSubscribe(env *Env, m *Message, out *Output) {
	if broadcastsTooBig(m.Broadcasts) {
		out.refused(LimitBroadcasts)
		out.close(ClosePolicy, "too many or too long broadcasts")
		return
	}
	reply, subs := env.Broadcasts.delta(m.Broadcasts)
	c.bcast = mergeSubscriptions(c.bcast, subs)
	if len(reply) > 0 {
		out.reply(broadcastReply{MessageType: "broadcast", Broadcasts: reply})
	}
}

// BroadcastsChanged answers a change of broadcast versions: a Ready client
// subscribed to a changed id is sent the new versions.
func (c *Client) BroadcastsChanged(env *Env, changed map[string]string) Output {
	if c.Phase() != Ready {
		return Output{}
	}
	var out map[string]any
	for _, id := range c.bcast {
		if v, ok := changed[id]; ok {
			if out == nil {
				out = map[string]any{}
			}
			out[id] = v
		}
	}
	if out == nil {
		return Output{}
	}
	msg, err := marshal(broadcastReply{MessageType: "broadcast", Broadcasts: out})
	if err != nil {
		env.log().Error("encode broadcast", "err", err)
		return Output{}
	}
	return Output{Effects: []Effect{{Kind: Send, Frame: msg}}}
}
