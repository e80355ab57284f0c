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
// client (safe for concurrent use). Every change bumps a generation, and
// each entry remembers the generation it last changed at: a client keeps
// the generation it has seen, so one that became Ready while a change was
// being announced, or missed an announcement, is told what changed since
// (autopush's change count).
type Broadcasts struct {
	mu sync.RWMutex
	// ids maps an id to its entry; the entry's id string is shared by
	// every subscribed connection (no per-connection copy).
	ids map[string]*broadcastEntry
	gen uint64 // bumped by every Set that changed something
}

type broadcastEntry struct {
	id      string
	version string
	gen     uint64 // the generation of its last change
}

// Change is what one Set changed: the new or changed ids' versions, and
// the table's generation after it.
type Change struct {
	Versions map[string]string
	Gen      uint64
}

func NewBroadcasts(m map[string]string) *Broadcasts {
	b := &Broadcasts{ids: make(map[string]*broadcastEntry, len(m))}
	for id, v := range m {
		b.ids[id] = &broadcastEntry{id: id, version: v}
	}
	return b
}

// Gen is the table's generation.
func (b *Broadcasts) Gen() uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.gen
}

// delta compares a client's versions with the server's. reply holds the ids
// whose version differs (with the server's version) and an "errors" map for
// unknown ids; subscribed holds the known ids, as shared strings.
func (b *Broadcasts) delta(client map[string]string) (reply map[string]any, subscribed []string) {
	reply, subscribed, _ = b.deltaSince(client, nil, 0)
	return reply, subscribed
}

// deltaSince is delta plus, first, the versions of the ids in subs that
// changed after generation since (autopush's change-count delta), all
// read at once; it returns the generation read.
func (b *Broadcasts) deltaSince(client map[string]string, subs []string, since uint64) (reply map[string]any, subscribed []string, gen uint64) {
	reply = map[string]any{}
	b.mu.RLock()
	defer b.mu.RUnlock()
	b.changedSince(subs, since, reply)
	var missing map[string]string
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
	return reply, subscribed, b.gen
}

// since returns the versions of the ids in subs that changed after
// generation gen, and the table's generation.
func (b *Broadcasts) since(subs []string, gen uint64) (map[string]any, uint64) {
	out := map[string]any{}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if gen < b.gen {
		b.changedSince(subs, gen, out)
	}
	return out, b.gen
}

// changedSince adds to out the ids of subs changed after gen; b.mu held.
func (b *Broadcasts) changedSince(subs []string, gen uint64, out map[string]any) {
	for _, id := range subs {
		if e, ok := b.ids[id]; ok && e.gen > gen {
			out[id] = e.version
		}
	}
}

// Set replaces the table and returns the ids whose version changed or that
// are new.
func (b *Broadcasts) Set(m map[string]string) map[string]string {
	return b.Replace(m).Versions
}

// Replace replaces the table and returns what changed (ids removed are
// not announced: there is nothing to tell their subscribers).
func (b *Broadcasts) Replace(m map[string]string) Change {
	changed := map[string]string{}
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[string]*broadcastEntry, len(m))
	for id, v := range m {
		e, ok := b.ids[id]
		if !ok || e.version != v {
			changed[id] = v
		}
		switch {
		case ok && e.version == v:
			next[id] = e
		case ok:
			next[id] = &broadcastEntry{id: e.id, version: v, gen: b.gen + 1}
		default:
			next[id] = &broadcastEntry{id: id, version: v, gen: b.gen + 1}
		}
	}
	if len(changed) > 0 {
		b.gen++
	}
	b.ids = next
	return Change{Versions: changed, Gen: b.gen}
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
// bounded by the table. Like autopush, the reply also carries what changed
// since the client's generation among its earlier subscriptions.
func (c *Client) broadcastSubscribe(env *Env, m *Message, out *Output) {
	if broadcastsTooBig(m.Broadcasts) {
		out.refused(LimitBroadcasts)
		out.close(ClosePolicy, "too many or too long broadcasts")
		return
	}
	reply, subs, gen := env.Broadcasts.deltaSince(m.Broadcasts, c.bcast, c.bgen)
	c.bcast = mergeSubscriptions(c.bcast, subs)
	c.bgen = max(c.bgen, gen)
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
	return broadcastFrame(env, out)
}

// BroadcastsChangedAt answers a change of the table (Broadcasts.Replace):
// a Ready client that has not seen ch.Gen yet is sent the current versions
// of its subscribed ids that changed since the generation it saw. A client
// not Ready yet is told at Ready (greeted).
func (c *Client) BroadcastsChangedAt(env *Env, ch Change) Output {
	if c.Phase() != Ready || ch.Gen <= c.bgen {
		return Output{}
	}
	return c.catchUp(env)
}

// catchUp sends the client's subscribed ids changed since its generation.
func (c *Client) catchUp(env *Env) Output {
	out, gen := env.Broadcasts.since(c.bcast, c.bgen)
	c.bgen = gen
	return broadcastFrame(env, out)
}

func broadcastFrame(env *Env, versions map[string]any) Output {
	if len(versions) == 0 {
		return Output{}
	}
	msg, err := marshal(broadcastReply{MessageType: "broadcast", Broadcasts: versions})
	if err != nil {
		env.log().Error("encode broadcast", "err", err)
		return Output{}
	}
	return Output{Effects: []Effect{{Kind: Send, Frame: msg}}}
}
