package owner

import (
	"encoding/hex"
	"errors"
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
// expiry scan (once a minute), so a mass expiry is spread out.
const idleResetsPerScan = 1000

// uaidRec is what the owner keeps of every known UAID of its partitions,
// online or not. It is kept small (a map value plus one small slice): an
// offline UAID with nothing pending costs only this; the full uaidState
// exists only while a UAID has pending messages, a session or presence.
type uaidRec struct {
	next      int64      // registrations offset after the last event folded for it
	chans     []chanSlot // registered channels, and up to maxGoneKept unregistered ones
	seen      uint32     // last connection, minutes since the epoch (reset UAIDs: the reset)
	persisted uint32     // seen as last made durable in pushlog.channels
	flags     uint8
}

// chanSlot is one channel of a UAID.
type chanSlot struct {
	id   [16]byte
	gone bool
}

func minutesOf(ms int64) uint32 { return uint32(min(max(ms/60000, 0), 1<<32-1)) }

func (r *uaidRec) reset() bool { return r.flags&rReset != 0 }

func (r *uaidRec) find(id [16]byte) int {
	for i := range r.chans {
		if r.chans[i].id == id {
			return i
		}
	}
	return -1
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
	switch i := r.find(ch); {
	case i < 0:
		r.chans = append(r.chans, chanSlot{id: ch})
		return true
	case r.chans[i].gone:
		r.chans[i].gone = false
		return true
	}
	return changed
}

// unregister marks a registered ch gone; an unknown one changes nothing.
func (r *uaidRec) unregister(ch [16]byte) bool {
	i := r.find(ch)
	if i < 0 || r.chans[i].gone {
		return false
	}
	r.chans[i].gone = true
	r.trimGone()
	return true
}

// resetAt makes every channel gone.
func (r *uaidRec) resetAt(m uint32) bool {
	if r.reset() {
		return false
	}
	for i := range r.chans {
		r.chans[i].gone = true
	}
	r.trimGone()
	r.flags = r.flags&^rExpiring | rReset
	r.seen = m
	return true
}

// trimGone forgets the oldest unregistered channels past maxGoneKept.
func (r *uaidRec) trimGone() {
	gone := 0
	for _, c := range r.chans {
		if c.gone {
			gone++
		}
	}
	if gone <= maxGoneKept {
		return
	}
	kept := r.chans[:0]
	for _, c := range r.chans {
		if c.gone && gone > maxGoneKept {
			gone--
			continue
		}
		kept = append(kept, c)
	}
	clear(r.chans[len(kept):])
	r.chans = kept
}

// channelGone reports whether ch was unregistered or the UAID reset. A
// channel never seen is not gone: its registration may not be folded yet.
func (r *uaidRec) channelGone(ch [16]byte) bool {
	if r.reset() {
		return true
	}
	i := r.find(ch)
	return i >= 0 && r.chans[i].gone
}

// foldRegistration folds a pushlog.registrations event into the UAID's
// record. Events below the record's next offset are already in it.
func (ps *partState) foldRegistration(rec *kgo.Record, ev *pb.Event, id [16]byte) {
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
	default:
		ps.skip(rec, errors.New(schema.TypeName(ev)), "skipping event on the wrong topic")
		return
	}
	r, known := ps.recs[id]
	if known && rec.Offset < r.next {
		return
	}
	changed := false
	switch ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		changed = r.register(ch)
		m := minutesOf(ev.GetTimeMs())
		r.touch(m)
		r.persisted = max(r.persisted, m) // the channel record carries the time
	case *pb.Event_ChannelUnregistered:
		if !known {
			return // nothing lasting for an unknown UAID (issue 10)
		}
		changed = r.unregister(ch)
	case *pb.Event_UserReset:
		changed = r.resetAt(minutesOf(ev.GetTimeMs()))
	}
	r.next = rec.Offset + 1
	ps.recs[id] = r
	ps.afterChannelChange(id, r, changed)
}

// afterChannelChange applies a change of a UAID's channels to its pending
// messages, and, for a reset, forgets its last-seen record.
func (ps *partState) afterChannelChange(id [16]byte, r uaidRec, changed bool) {
	if !changed || !ps.ready {
		return
	}
	if u := ps.uaids[id]; u != nil {
		ps.dropGone(u)
	}
	if r.reset() && r.persisted != 0 && ps.env.produceRecord != nil {
		uaid := hex.EncodeToString(id[:])
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
	r, known := ps.recs[f.UAID]
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
	default:
		if known && f.RegOffset < r.next || !known && f.Deleted {
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
		case f.Deleted:
			changed = r.unregister(f.Channel)
		default:
			changed = r.register(f.Channel)
			m := minutesOf(f.Entry.GetChangedMs())
			r.touch(m)
			r.persisted = max(r.persisted, m)
		}
		r.next = max(r.next, f.RegOffset)
	}
	ps.recs[f.UAID] = r
	ps.afterChannelChange(f.UAID, r, changed)
}

// recFromSnapshot builds a record from a format-1 snapshot (keeping what
// the snapshot does not know: the last-seen times).
func recFromSnapshot(st *pb.ChannelState, old uaidRec) uaidRec {
	r := uaidRec{next: st.GetRegistrationsOffset(), seen: old.seen, persisted: old.persisted}
	var latest int64
	for _, c := range st.GetChannels() {
		id, err := schema.ParseChannelID(c.GetChannelId())
		if err != nil || r.find(id) >= 0 {
			continue
		}
		r.chans = append(r.chans, chanSlot{id: id, gone: c.GetUnregistered()})
		latest = max(latest, c.GetChangedMs())
	}
	r.trimGone()
	r.touch(minutesOf(latest))
	r.persisted = max(r.persisted, minutesOf(latest))
	if st.GetUaidReset() {
		r.resetAt(minutesOf(st.GetResetMs()))
	}
	return r
}

// seenNow records that id is connected now (presence or an attach) and
// makes it durable at most once a day.
func (ps *partState) seenNow(id [16]byte) {
	r, ok := ps.recs[id]
	if !ok || r.reset() {
		return
	}
	r.touch(minutesOf(ps.env.now().UnixMilli()))
	if ps.ready && r.seen >= r.persisted+seenPersistMinutes {
		ps.persistSeen(id, &r)
	}
	ps.recs[id] = r
}

// persistSeen writes r.seen as id's last-seen record.
func (ps *partState) persistSeen(id [16]byte, r *uaidRec) {
	if ps.env.produceRecord == nil {
		return
	}
	uaid := hex.EncodeToString(id[:])
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

// expireIdle resets UAIDs without a connection for the UAID expiry (as
// autopush-rs does): a UserReset with reason "idle" is produced, and
// folding it drops their messages and makes their endpoints answer 410
// errno 103. Reset UAIDs are forgotten a day after their reset. It scans
// at most once a minute.
func (ps *partState) expireIdle(now time.Time) {
	expiry := ps.env.cfg.UAIDExpiry
	nowMin := minutesOf(now.UnixMilli())
	if !ps.ready || expiry <= 0 || nowMin == ps.lastExpiryScan {
		return
	}
	ps.lastExpiryScan = nowMin
	expiryMin := uint32(min(expiry/time.Minute, 1<<32-1))
	budget := idleResetsPerScan
	for id, r := range ps.recs {
		u := ps.uaids[id]
		if u != nil && (u.session != nil || u.presence != nil) {
			continue // connected: not idle
		}
		switch {
		case r.reset():
			if u == nil && nowMin >= r.seen+resetKeepMinutes {
				delete(ps.recs, id)
			}
		case r.seen == 0:
			// No time known (legacy state): start the clock now.
			r.seen = nowMin
			if budget > 0 {
				budget--
				ps.persistSeen(id, &r)
			}
			ps.recs[id] = r
		case r.flags&rExpiring == 0 && nowMin >= r.seen+expiryMin && budget > 0:
			budget--
			r.flags |= rExpiring
			ps.recs[id] = r
			ps.produceIdleReset(id)
		}
	}
}

// produceIdleReset writes the UserReset of an idle UAID.
func (ps *partState) produceIdleReset(id [16]byte) {
	uaid := hex.EncodeToString(id[:])
	ev := schema.NewEvent(uaid, ps.env.now())
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "idle"}}
	ps.env.produce(ev, func(err error) {
		ps.env.log.Warn("idle reset not written; retried at the next scan", "uaid", uaid, "err", err)
		go func() { // not under mu: the producer may call back synchronously
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if r, ok := ps.recs[id]; ok && !ps.closed {
				r.flags &^= rExpiring
				ps.recs[id] = r
			}
		}()
	})
	ps.env.idleResets.Add(1)
	ps.env.log.Info("idle UAID reset", "uaid", uaid, "partition", ps.p)
}
