package owner

import (
	"encoding/binary"
	"errors"
	"iter"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Flags of uaidRec.
const (
	rReset    uint8 = 1 << iota // reset (explicitly or idle): every channel is gone
	rExpiring                   // an idle reset was produced and is not read back yet
)

// maxGoneKept bounds the unregistered channels remembered per UAID (to drop
// messages a sender still sends to them); older ones are forgotten, and a
// message to a forgotten channel is treated as to a channel never seen
// (kept until its TTL, while ingest's gone set answers 410 for it).
const maxGoneKept = 8

// seenPersistMinutes: the last-seen record of a UAID is written at most
// once a day, so a reconnect loop does not write per connect.
const seenPersistMinutes = 24 * 60

// resetKeepMinutes is how long a reset UAID stays known to the owner (to
// drop messages still arriving for it) before it is forgotten.
const resetKeepMinutes = 24 * 60

// idleResetsPerScan bounds the idle resets one partition produces per
// minute, so a mass expiry is spread out.
const idleResetsPerScan = 1000

// uaidRec is what the owner keeps of every known UAID of its partitions,
// online or not. It is kept small (a map value plus one string of channel
// ids): an offline UAID with nothing pending costs only this; the full
// uaidState exists only while a UAID has pending messages, a session or
// presence.
type uaidRec struct {
	next int64 // registrations offset after the last event folded for it
	// chans holds 16-byte channel ids: the registered ones, then the
	// ngone most recently unregistered ones (oldest first). A string: no
	// capacity slack, and a header of 16 bytes.
	chans     string
	seen      uint32 // last connection, minutes since the epoch (reset UAIDs: the reset)
	persisted uint32 // seen as last made durable in pushlog.channels
	flags     uint8
	ngone     uint8
}

// recStore holds every known UAID's record encoded as one string (see
// encode): a 16-byte map value and a single allocation sized exactly, so
// an idle UAID with 5 channels costs one 96-byte object plus its map slot.
type recStore map[schema.UAID]string

// recHeader is the encoded size of a record without its channels: next
// (8), seen (4), persisted day (2), flags (1), ngone (1).
const recHeader = 16

func (rs recStore) get(id schema.UAID) (uaidRec, bool) {
	s, ok := rs[id]
	if !ok {
		return uaidRec{}, false
	}
	return decodeRec(s), true
}

func (rs recStore) put(id schema.UAID, r uaidRec) { rs[id] = r.encode() }

func decodeRec(s string) uaidRec {
	b := []byte(s[:recHeader]) // 16 bytes: does not escape
	return uaidRec{
		next:      int64(binary.LittleEndian.Uint64(b[0:8])),
		seen:      binary.LittleEndian.Uint32(b[8:12]),
		persisted: uint32(binary.LittleEndian.Uint16(b[12:14])) * 1440,
		flags:     b[14],
		ngone:     b[15],
		chans:     s[recHeader:],
	}
}

// encode stores persisted as a day, rounded up, so the daily last-seen
// write happens between one and two days after the previous one.
func (r uaidRec) encode() string {
	var h [recHeader]byte
	binary.LittleEndian.PutUint64(h[0:8], uint64(r.next))
	binary.LittleEndian.PutUint32(h[8:12], r.seen)
	binary.LittleEndian.PutUint16(h[12:14], uint16(min((uint64(r.persisted)+1439)/1440, 1<<16-1)))
	h[14], h[15] = r.flags, r.ngone
	var b strings.Builder
	b.Grow(recHeader + len(r.chans))
	b.Write(h[:])
	b.WriteString(r.chans)
	return b.String()
}

func minutesOf(ms int64) uint32 { return uint32(min(max(ms/60000, 0), 1<<32-1)) }

// seenMinutes rounds a time a UAID was seen up to the minute, so an
// expiry checked against whole minutes never comes early.
func seenMinutes(ms int64) uint32 { return minutesOf(ms + 59999) }

func (r *uaidRec) reset() bool { return r.flags&rReset != 0 }

func (r *uaidRec) count() int  { return len(r.chans) / 16 }
func (r *uaidRec) active() int { return r.count() - int(r.ngone) }

func (r *uaidRec) id(i int) (id [16]byte) {
	copy(id[:], r.chans[16*i:16*i+16])
	return id
}

// find returns the index of ch in chans, or -1.
func (r *uaidRec) find(ch [16]byte) int {
	key := string(ch[:])
	for i := range r.count() {
		if r.chans[16*i:16*i+16] == key {
			return i
		}
	}
	return -1
}

// rebuild sets chans to active ids then gone ids.
func (r *uaidRec) rebuild(active, gone [][16]byte) {
	if len(gone) > maxGoneKept {
		gone = gone[len(gone)-maxGoneKept:] // forget the oldest
	}
	var b strings.Builder
	b.Grow(16 * (len(active) + len(gone)))
	for _, id := range active {
		b.Write(id[:])
	}
	for _, id := range gone {
		b.Write(id[:])
	}
	r.chans, r.ngone = b.String(), uint8(len(gone))
}

// split returns the active and gone ids.
func (r *uaidRec) split() (active, gone [][16]byte) {
	for i := range r.count() {
		if i < r.active() {
			active = append(active, r.id(i))
		} else {
			gone = append(gone, r.id(i))
		}
	}
	return active, gone
}

// touch records a connection (or a registration, which needs one) at m.
func (r *uaidRec) touch(m uint32) {
	if !r.reset() {
		r.seen = max(r.seen, m)
	}
}

// register makes ch registered; a registration revives a reset UAID.
func (r *uaidRec) register(ch [16]byte) bool {
	changed := false
	if r.reset() {
		r.flags &^= rReset | rExpiring
		r.seen = 0
		changed = true
	}
	i := r.find(ch)
	if i >= 0 && i < r.active() {
		return changed
	}
	active, gone := r.split()
	if i >= 0 {
		gone = slices.Delete(gone, i-len(active), i-len(active)+1)
	}
	r.rebuild(append(active, ch), gone)
	return true
}

// unregister marks a registered ch gone; an unknown one changes nothing.
func (r *uaidRec) unregister(ch [16]byte) bool {
	i := r.find(ch)
	if i < 0 || i >= r.active() {
		return false
	}
	active, gone := r.split()
	r.rebuild(slices.Delete(active, i, i+1), append(gone, ch))
	return true
}

// markGone records ch as unregistered, known before or not: a format-2
// tombstone is written only for a channel that was registered.
func (r *uaidRec) markGone(ch [16]byte) bool {
	i := r.find(ch)
	if i >= r.active() {
		return false
	}
	active, gone := r.split()
	if i >= 0 {
		active = slices.Delete(active, i, i+1)
	}
	r.rebuild(active, append(gone, ch))
	return true
}

// resetAt makes every channel gone.
func (r *uaidRec) resetAt(m uint32) bool {
	if r.reset() {
		return false
	}
	active, gone := r.split()
	r.rebuild(nil, append(gone, active...))
	r.flags = r.flags&^rExpiring | rReset
	r.seen = m
	return true
}

// channelGone reports whether ch was unregistered or the UAID reset. A
// channel never seen is not gone: its registration may not be folded yet.
func (r *uaidRec) channelGone(ch [16]byte) bool {
	if r.reset() {
		return true
	}
	i := r.find(ch)
	return i >= r.active()
}

// foldRegistration folds a pushlog.registrations event into the UAID's
// record. Events below the record's next offset are already in it.
func (ps *partState) foldRegistration(rec *kgo.Record, ev *pb.Event, id schema.UAID) {
	var ch [16]byte
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		var err error
		if ch, err = schema.ParseChannelID(b.ChannelRegistered.GetChannelId()); err != nil {
			ps.skip(rec, err, "skipping registration with a bad channel id")
			return
		}
	case *pb.Event_ChannelUnregistered:
		var err error
		if ch, err = schema.ParseChannelID(b.ChannelUnregistered.GetChannelId()); err != nil {
			return // never registered either: nothing to do
		}
	case *pb.Event_UserReset:
		delete(ps.bridged, id) // bridge.go
	case *pb.Event_BridgeRegistered:
		ps.foldBridge(ev, b.BridgeRegistered, id) // bridge.go
		return
	default:
		ps.skip(rec, errors.New(schema.TypeName(ev)), "skipping event on the wrong topic")
		return
	}
	r, known := ps.recs.get(id)
	if known && rec.Offset < r.next {
		return
	}
	changed := false
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		changed = r.register(ch)
		m := seenMinutes(ev.GetTimeMs())
		r.touch(m)
		r.persisted = max(r.persisted, m) // the channel record carries the time
	case *pb.Event_ChannelUnregistered:
		if !known {
			return // nothing lasting for an unknown UAID (issue 10)
		}
		changed = r.unregister(ch)
	case *pb.Event_UserReset:
		changed = r.resetAt(minutesOf(ev.GetTimeMs()))
		if u := ps.uaids[id]; changed && ps.ready && u != nil && u.session != nil {
			// Should not happen for an idle reset (helloInfo, expireOne):
			// the client keeps a UAID whose endpoints now answer 410.
			ps.env.log.Warn("UAID reset while connected", "uaid", ev.GetUaid(), "reason", b.UserReset.GetReason())
		}
	}
	r.next = rec.Offset + 1
	ps.recs.put(id, r)
	ps.afterChannelChange(id, r, changed)
}

// afterChannelChange applies a change of a UAID's channels to its pending
// messages, and, for a reset, forgets its last-seen record.
func (ps *partState) afterChannelChange(id schema.UAID, r uaidRec, changed bool) {
	if !changed || !ps.ready {
		return
	}
	if u := ps.uaids[id]; u != nil {
		ps.dropGone(u)
	}
	if r.reset() && r.persisted != 0 && ps.env.produceRecord != nil {
		uaid := id.String()
		ps.env.produceRecord(ps.env.cfg.Names.SeenTombstone(uaid, ps.p), func(err error) {
			ps.env.log.Warn("last-seen tombstone not written", "uaid", uaid, "err", err)
		})
	}
}

// foldSnapshot folds a pushlog.channels record of either format (see
// schema.DecodeChannels). A record is applied only when it covers at least
// as many registrations as the UAID's record has folded, so an old record
// read after newer registrations changes nothing.
func (ps *partState) foldSnapshot(rec *kgo.Record) {
	f, err := schema.DecodeChannels(rec)
	if err != nil {
		ps.skip(rec, err, "skipping undecodable channel state")
		return
	}
	if f.Kind != schema.ChannelsSeen {
		ps.maxSnapR = max(ps.maxSnapR, f.RegOffset)
	}
	r, known := ps.recs.get(f.UAID)
	changed := false
	switch {
	case f.Snapshot != nil:
		st := f.Snapshot
		if known && st.GetRegistrationsOffset() <= r.next {
			return
		}
		r = recFromSnapshot(st, r)
		changed = true
	case f.Kind == schema.ChannelsSeen:
		if !known || f.Deleted || r.reset() {
			return
		}
		m := minutesOf(f.Seen.GetLastSeenMs())
		r.seen, r.persisted = max(r.seen, m), max(r.persisted, m)
	case f.Kind == schema.ChannelsUAID && f.Deleted:
		if known && r.reset() && ps.uaids[f.UAID] == nil {
			delete(ps.recs, f.UAID) // expired: forgotten everywhere
		}
		return
	case f.Forget:
		// An unregistered channel leaves the topic (expiry or per-UAID
		// bound): the owner's own gone list is bounded already.
		return
	default:
		if known && f.RegOffset < r.next {
			return
		}
		switch {
		case f.Kind == schema.ChannelsUAID && f.State.GetUaidReset():
			changed = r.resetAt(minutesOf(f.State.GetResetMs()))
		case f.Kind == schema.ChannelsUAID:
			if r.reset() {
				r.flags &^= rReset | rExpiring
				r.seen = 0
				changed = true
			}
		case f.Unregistered(): // a value, or an older writer's tombstone
			changed = r.markGone(f.Channel)
		default:
			changed = r.register(f.Channel)
			m := seenMinutes(f.Entry.GetChangedMs())
			r.touch(m)
			r.persisted = max(r.persisted, m)
		}
		r.next = max(r.next, f.RegOffset)
	}
	ps.recs.put(f.UAID, r)
	ps.afterChannelChange(f.UAID, r, changed)
}

// recFromSnapshot builds a record from a format-1 snapshot (keeping what
// the snapshot does not know: the last-seen times).
func recFromSnapshot(st *pb.ChannelState, old uaidRec) uaidRec {
	r := uaidRec{next: st.GetRegistrationsOffset(), seen: old.seen, persisted: old.persisted}
	var latest int64
	var active, gone [][16]byte
	seen := make(map[[16]byte]bool, len(st.GetChannels()))
	for _, c := range st.GetChannels() {
		id, err := schema.ParseChannelID(c.GetChannelId())
		if err != nil || seen[id] {
			continue
		}
		seen[id] = true
		if c.GetUnregistered() {
			gone = append(gone, id)
		} else {
			active = append(active, id)
		}
		latest = max(latest, c.GetChangedMs())
	}
	r.rebuild(active, gone)
	r.touch(seenMinutes(latest))
	r.persisted = max(r.persisted, seenMinutes(latest))
	if st.GetUaidReset() {
		r.resetAt(minutesOf(st.GetResetMs()))
	}
	return r
}

// seenNow records that id is (or was until now) connected: an attach or a
// detach.
func (ps *partState) seenNow(id schema.UAID) { ps.seenAt(id, ps.env.now().UnixMilli()) }

// seenAt records that id was connected at ms (presence events carry their
// time, so replaying old ones never makes a UAID look recent), and makes
// it durable at most once a day.
func (ps *partState) seenAt(id schema.UAID, ms int64) {
	r, ok := ps.recs.get(id)
	if !ok || r.reset() {
		return
	}
	m := seenMinutes(min(ms, ps.env.now().UnixMilli()))
	if m <= r.seen {
		return
	}
	r.touch(m)
	if ps.ready && r.seen >= r.persisted+seenPersistMinutes {
		ps.persistSeen(id, &r)
	}
	ps.recs.put(id, r)
}

// persistSeen writes r.seen as id's last-seen record.
func (ps *partState) persistSeen(id schema.UAID, r *uaidRec) {
	if ps.env.produceRecord == nil {
		return
	}
	uaid := id.String()
	rec, err := ps.env.cfg.Names.SeenRecord(uaid, time.UnixMilli(int64(r.seen)*60000), ps.p, ps.env.now())
	if err != nil {
		ps.env.log.Warn("last-seen record", "uaid", uaid, "err", err)
		return
	}
	r.persisted = r.seen
	ps.env.produceRecord(rec, func(err error) {
		// Harmless: the UAID merely looks idle since its previous record
		// after a restart; the next connection writes it again.
		ps.env.log.Warn("last-seen record not written", "uaid", uaid, "err", err)
	})
}

// idleScan is the idle-expiry pass in progress over a partition's
// records. A pass walks the records map a chunk per sweep (once a second),
// so ps.mu is never held for a whole scan of millions of UAIDs: the map
// iteration is suspended between chunks (iter.Pull) and the folds change
// the map meanwhile, which a Go map range allows (a record deleted before
// it is reached is not produced; one added may or may not be).
type idleScan struct {
	next    func() (schema.UAID, string, bool) // the pass in progress; nil between passes
	stop    func()
	passMin uint32 // minute the last pass started: at most one a minute
	// budget is what is left of this minute's idle resets (budgetMin).
	budget    int
	budgetMin uint32
	chunk     int // records per sweep; expiryChunk unless a test sets it
}

// expiryChunk bounds the records one sweep examines: at 1,000,000 UAIDs a
// pass takes 100 sweeps (under two minutes), a sliver of the expiry.
const expiryChunk = 10000

// end stops the pass in progress (its suspended iteration).
func (sc *idleScan) end() {
	if sc.stop != nil {
		sc.stop()
	}
	sc.next, sc.stop = nil, nil
}

// expireIdle resets UAIDs without a connection for the UAID expiry (as
// autopush-rs does): a UserReset with reason "idle" is produced, and
// folding it drops their messages and makes their endpoints answer 410
// errno 103. Reset UAIDs are forgotten a day after their reset. Each call
// examines at most one chunk of records; a pass over all of them starts at
// most once a minute.
func (ps *partState) expireIdle(now time.Time) {
	expiry := ps.env.cfg.UAIDExpiry
	if !ps.ready || expiry <= 0 {
		return
	}
	sc := &ps.idle
	nowMin := minutesOf(now.UnixMilli())
	if nowMin != sc.budgetMin {
		sc.budgetMin, sc.budget = nowMin, idleResetsPerScan
	}
	if sc.next == nil {
		if nowMin == sc.passMin {
			return
		}
		sc.passMin = nowMin
		sc.next, sc.stop = iter.Pull2(maps.All(ps.recs))
	}
	expiryMin := uint32(min(expiry/time.Minute, 1<<32-1))
	chunk := sc.chunk
	if chunk <= 0 {
		chunk = expiryChunk
	}
	for range chunk {
		id, _, ok := sc.next()
		if !ok {
			sc.end() // pass complete
			return
		}
		ps.expireOne(id, nowMin, expiryMin)
	}
}

// expireOne applies the idle expiry to one UAID at nowMin.
func (ps *partState) expireOne(id schema.UAID, nowMin, expiryMin uint32) {
	r, ok := ps.recs.get(id) // the current record, not the one the pass began with
	if !ok {
		return
	}
	u := ps.uaids[id]
	if u != nil && u.session != nil {
		// Connected (here, or elsewhere through a presence session).
		// Presence alone does not count: a node that died leaves its
		// Connected records behind.
		return
	}
	sc := &ps.idle
	switch {
	case r.reset():
		if u == nil && nowMin >= r.seen+resetKeepMinutes {
			delete(ps.recs, id)
		}
	case r.seen == 0:
		// No time known (legacy state): start the clock now.
		r.seen = nowMin
		if sc.budget > 0 {
			sc.budget--
			ps.persistSeen(id, &r)
		}
		ps.recs.put(id, r)
	case r.flags&rExpiring == 0 && nowMin >= r.seen+expiryMin && sc.budget > 0:
		sc.budget--
		r.flags |= rExpiring
		ps.recs.put(id, r)
		ps.produceIdleReset(id, r)
	}
}

// produceIdleReset writes the UserReset of an idle UAID. It lists the
// registered channels of r so the channel projector can mark them
// unregistered without keeping every UAID's channels in memory.
func (ps *partState) produceIdleReset(id schema.UAID, r uaidRec) {
	uaid := id.String()
	ev := schema.NewEvent(uaid, ps.env.now())
	chans := make([][]byte, r.active())
	for i := range chans {
		ch := r.id(i)
		chans[i] = ch[:]
	}
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "idle", ChannelIds: chans}}
	ps.env.produce(ev, func(err error) {
		ps.env.log.Warn("idle reset not written; retried at the next scan", "uaid", uaid, "err", err)
		go func() { // not under mu: the producer may call back synchronously
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if r, ok := ps.recs.get(id); ok && !ps.closed {
				r.flags &^= rExpiring
				ps.recs.put(id, r)
			}
		}()
	})
	ps.env.idleResets.Add(1)
	ps.env.log.Info("idle UAID reset", "uaid", uaid, "partition", ps.p)
}
