package owner

import (
	"bytes"
	"container/heap"
	"encoding/hex"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Indexes of the group topics in partState.start/next/end0.
const (
	tMessages = iota
	tAcks
	tRegistrations
	numGroupTopics
)

// groupTopicsOf lists the group topics in topic-index order.
func groupTopicsOf(n schema.Names) [numGroupTopics]string {
	return [numGroupTopics]string{n.Messages, n.Acks, n.Registrations}
}

// Message states. A message is live until the owner or a client decides
// its end; then it is settling (never delivered again) until the event that
// settles it is read back from pushlog.acks; only then is it settled, and
// only settled messages let the low watermark pass.
const (
	stLive uint8 = iota
	stSettling
	stSettled
)

// Settle reasons. reasonAcked is the client's own ack (the connection node
// writes the event); the others are the owner's decisions and it writes
// the event itself. Values >= reasonDropped encode reasonDropped+DropReason.
const (
	reasonNone uint8 = iota
	reasonAcked
	reasonExpired
	reasonDropped
)

// Message flags.
const (
	fTTL0        uint8 = 1 << iota // TTL 0: deliver now or never
	fBodyGone                      // payload not kept in memory: re-read it from Kafka
	fNeedProduce                   // the settling event still has to be written
	fReread                        // body loaded by a re-read for one delivery round
)

// maxTTLSeconds caps TTLs read from the log so expiry arithmetic cannot
// overflow; ingest clamps far lower.
const maxTTLSeconds = 10 * 365 * 24 * 3600

// body is what a delivery needs beyond the index. It is the part dropped
// from memory past the payload budget.
type body struct {
	payload    []byte
	encoding   unique.Handle[string]
	encryption string
	cryptoKey  string
}

func (b *body) cost() int64 {
	return int64(len(b.payload)+len(b.encryption)+len(b.cryptoKey)) + 64
}

// pending is one accepted, unsettled (or settled but still above the low
// watermark) message. It is kept compact: a takeover may fold a million.
type pending struct {
	offset     int64
	expiryMs   int64
	acceptedMs int64
	ackOff     int64      // acks offset of the event that settled it; -1 until read
	u          *uaidState // nil once settled
	topic      unique.Handle[string]
	vapidSub   unique.Handle[string]
	body       *body
	channel    [16]byte
	size       int32
	heapIdx    int32 // index in the expiry heap, -1 when not in it
	attempts   int32
	sentGen    uint32 // session generation it was last sent on
	state      uint8
	reason     uint8
	flags      uint8
	urgency    uint8 // pb.Urgency, for bridges (bridge.go)
}

// presence is where a UAID is connected according to pushlog.presence.
type presence struct {
	node     string
	linkAddr string
	connID   string
	sinceMs  int64
}

// uaidState is what the owner holds of a UAID while it has pending
// messages, a session or presence; its channels are in partState.recs.
type uaidState struct {
	id       schema.UAID
	pending  []*pending            // tracked messages in offset order, settled ones removed lazily
	settled  int                   // settled entries still in pending
	topics   map[topicKey]*pending // the newest message per (channel, topic)
	session  link.Session
	sessGen  uint32
	presence *presence
	fetching bool // a payload re-read is in flight
	// ttl0: pending may hold a live TTL 0 message (set when one is
	// added, cleared by the offline pass that drops them), so that pass
	// does not walk every pending message of every offline push.
	ttl0 bool
}

func (u *uaidState) uaid() string { return u.id.String() }

// unsettled counts u's messages that are not settled.
func (u *uaidState) unsettled() int { return len(u.pending) - u.settled }

// compact removes settled messages from u.pending once they are half of
// it, so settling stays amortized O(1) even for a UAID with a long replay.
func (u *uaidState) compact() {
	if u.unsettled() == 0 {
		u.pending, u.settled = nil, 0
		return
	}
	if u.settled < 16 || 2*u.settled < len(u.pending) {
		return
	}
	kept := u.pending[:0]
	for _, m := range u.pending {
		if m.state != stSettled {
			kept = append(kept, m)
		}
	}
	clear(u.pending[len(kept):])
	u.pending, u.settled = kept, 0
}

// topicKey identifies a replaceable message: same channel, same topic.
type topicKey struct {
	channel [16]byte
	topic   unique.Handle[string]
}

// orphan is a settlement read before its message (a replay may read acks
// ahead of messages).
type orphan struct {
	ackOff int64
	uaid   schema.UAID
}

// env is what partition states share with their owner: configuration and
// the side effects (producing events, re-reading payloads, the clock).
type env struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	produce func(ev *pb.Event, onErr func(error))
	bridges *bridges // nil: no bridge configured (bridge.go)
	// produceRecord writes a pushlog.channels record to the partition it
	// names (the last-seen records); nil: not written (unit tests).
	produceRecord func(rec *kgo.Record, onErr func(error))
	idleResets    atomic.Int64
	// reread fetches payloads of u's messages at offsets and delivers
	// them; nil disables re-reads (payloads must then stay in memory).
	reread func(ps *partState, u *uaidState, offsets []int64)
	budget atomic.Int64 // payload bytes held in memory
	// noHold: the node is shutting down (WriteHeld ran), so Delivered
	// events are written at once, within its flushes.
	noHold atomic.Bool
	// heldOverflows counts the times a partition held maxHeld Delivered
	// events and wrote them all (deliveries nobody acks).
	heldOverflows atomic.Int64
	gen           atomic.Uint32
	limit         int64 // payload budget in bytes; <0 keeps none
	graceMs       int64
}

// partState is the fold of one partition number over every topic.
type partState struct {
	mu  sync.Mutex
	env *env
	p   int32

	uaids   map[schema.UAID]*uaidState
	recs    recStore                   // every known UAID's channels (uaids.go)
	bridged map[schema.UAID]*bridgeReg // UAIDs served through a mobile bridge (bridge.go)
	msgs    deque                      // tracked messages in offset order
	exp     expHeap
	orphans map[int64]orphan
	retry   []*pending // settling messages whose event failed to produce

	start     [numGroupTopics]int64 // where this ownership began reading
	next      [numGroupTopics]int64 // next offset to fold
	end0      [numGroupTopics]int64 // end offsets at assignment: replay target
	ready     bool                  // caught up with messages and acks
	maxSnapR  int64                 // largest registrations offset covered by a channels record read
	chanEnd   int64                 // channels offset the bootstrap read up to
	committed [numGroupTopics]int64 // last watermarks committed successfully
	closed    bool

	// held are Delivered events not written yet (deliver.go,
	// holdDelivered), by message offset; heldTimer writes them when no
	// ack came within DeliveredHold.
	held      map[int64]*pb.Event
	heldTimer *time.Timer

	idle idleScan // the idle-expiry pass in progress (uaids.go)

	handles handleCache // interned topics, VAPID subjects and encodings

	progress chan struct{} // closed and replaced whenever next advances

	skipped atomic.Int64 // corrupt or misrouted records skipped
}

func newPartState(e *env, p int32) *partState {
	return &partState{
		env:      e,
		p:        p,
		uaids:    make(map[schema.UAID]*uaidState),
		recs:     make(recStore),
		orphans:  make(map[int64]orphan),
		progress: make(chan struct{}),
	}
}

// setPositions sets where folding starts and what "caught up" means.
func (ps *partState) setPositions(start, end [numGroupTopics]int64) {
	ps.start, ps.next, ps.end0 = start, start, end
	ps.committed = [numGroupTopics]int64{-1, -1, -1}
}

func (ps *partState) user(id schema.UAID) *uaidState {
	u := ps.uaids[id]
	if u == nil {
		u = &uaidState{id: id}
		ps.uaids[id] = u
	}
	return u
}

// forgetIfIdle removes a UAID that carries no state any more.
func (ps *partState) forgetIfIdle(u *uaidState) {
	if u != nil && u.unsettled() == 0 && u.session == nil && u.presence == nil && !u.fetching {
		delete(ps.uaids, u.id)
	}
}

// signal wakes everyone waiting for progress (CheckUAID's catch-up).
func (ps *partState) signal() {
	close(ps.progress)
	ps.progress = make(chan struct{})
}

func (ps *partState) skip(rec *kgo.Record, err error, msg string) {
	ps.skipped.Add(1)
	logf := ps.env.log.Warn
	if errors.Is(err, schema.ErrUnknownType) {
		logf = ps.env.log.Debug
	}
	logf(msg, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
}

// foldGroup folds one record of a group topic. The caller holds mu and
// calls afterBatch when a batch is done.
func (ps *partState) foldGroup(ti int, rec *kgo.Record) {
	if rec.Offset < ps.next[ti] {
		return // already folded (a re-fetch after a rebalance)
	}
	ps.next[ti] = rec.Offset + 1
	if ti == tMessages && ps.foldAcceptedFast(rec) || ti == tAcks && ps.foldSettlementFast(rec) {
		return
	}
	ev, err := schema.Decode(rec)
	if err != nil {
		ps.skip(rec, err, "skipping undecodable event")
		return
	}
	id, err := schema.ParseUAID(ev.GetUaid())
	if err != nil || id.Partition(ps.env.cfg.Partitions) != ps.p {
		ps.skip(rec, errors.New("uaid does not belong to this partition"), "skipping misrouted event")
		return
	}
	switch ti {
	case tMessages:
		ps.foldMessage(rec, ev, id)
	case tAcks:
		st, ok := schema.SettlementOf(ev)
		if !ok {
			ps.skip(rec, errors.New(schema.TypeName(ev)), "skipping event on the wrong topic")
			return
		}
		ps.foldAck(rec, st, id)
	case tRegistrations:
		ps.foldRegistration(rec, ev, id)
	}
}

// foldSettlementFast folds a well-formed settlement event of this
// partition without decoding it in full (decode.go) and reports whether it
// did; anything else is left to the full decode.
func (ps *partState) foldSettlementFast(rec *kgo.Record) bool {
	if !currentVersion(rec) || rec.Value == nil {
		return false
	}
	uaid, st, ok := schema.DecodeSettlement(rec.Value)
	if !ok {
		return false
	}
	id, err := schema.ParseUAID(string(uaid))
	if err != nil || id.Partition(ps.env.cfg.Partitions) != ps.p {
		return false
	}
	ps.foldAck(rec, st, id)
	return true
}

// currentVersion reports whether rec has no encoding version header other
// than the current one (schema.Decode refuses those).
func currentVersion(rec *kgo.Record) bool {
	for _, h := range rec.Headers {
		if h.Key == schema.HeaderVersion && string(h.Value) != schema.EncodingVersion {
			return false
		}
	}
	return true
}

// foldAcceptedFast folds a well-formed MessageAccepted of this partition
// without decoding it in full (decode.go) and reports whether it did;
// anything else is left to the full decode, which also judges errors.
func (ps *partState) foldAcceptedFast(rec *kgo.Record) bool {
	a, ok := schema.DecodeAccepted(rec)
	if !ok || a.UAID.Partition(ps.env.cfg.Partitions) != ps.p {
		return false
	}
	ps.accept(rec, &a, a.UAID)
	return true
}

// afterBatch checks readiness and wakes waiters.
func (ps *partState) afterBatch() {
	ps.checkReady()
	ps.signal()
}

func (ps *partState) foldMessage(rec *kgo.Record, ev *pb.Event, id schema.UAID) {
	switch b := ev.GetBody().(type) {
	case *pb.Event_MessageAccepted:
		a, _ := schema.AcceptedOf(ev) // a MessageAccepted whose UAID parsed: id
		ps.accept(rec, &a, id)
	case *pb.Event_MessageDeleted:
		ps.deleted(b.MessageDeleted.GetMsg(), id)
	default:
		ps.skip(rec, errors.New(schema.TypeName(ev)), "skipping event on the wrong topic")
	}
}

func (ps *partState) accept(rec *kgo.Record, a *schema.Accepted, id schema.UAID) {
	ch, err := parseChannelID(a.ChannelID)
	if err != nil {
		ps.skip(rec, err, "skipping message with a bad channel id")
		return
	}
	m := &pending{
		offset:     rec.Offset,
		acceptedMs: a.TimeMs,
		ackOff:     -1,
		channel:    ch,
		size:       int32(min(len(a.Payload), 1<<30)),
		heapIdx:    -1,
		urgency:    uint8(a.Urgency),
	}
	if len(a.Topic) > 0 {
		m.topic = ps.handles.of(a.Topic)
	}
	if len(a.VapidSub) > 0 {
		m.vapidSub = ps.handles.of(a.VapidSub)
	}
	if ttl := a.TTLS; ttl > 0 {
		m.expiryMs = m.acceptedMs + min(ttl, maxTTLSeconds)*1000
	} else {
		// TTL 0: delivered only to a UAID attached when the message is
		// folded, while now-accepted <= TTL0Grace (its expiry). Offline
		// at that moment: Dropped TTL_ZERO_OFFLINE (evaluate). Attached
		// but not delivered or acked within the grace: Expired (sweep).
		m.flags |= fTTL0
		m.expiryMs = m.acceptedMs + ps.env.graceMs
	}
	u := ps.user(id)
	if len(a.Payload) > 0 {
		live := ps.ready && u.session != nil
		if b := ps.keepBody(m, a, live); b != nil && m.body == nil {
			// Over budget but deliverable right now: use the record in
			// hand for this delivery instead of re-reading it.
			m.body = b
			m.flags |= fReread
		}
	}
	ps.msgs.push(m)
	m.u = u
	u.pending = append(u.pending, m)
	if m.flags&fTTL0 != 0 {
		u.ttl0 = true
	}
	if o, ok := ps.orphans[m.offset]; ok {
		delete(ps.orphans, m.offset)
		if o.uaid == id {
			ps.settleRead(m, o.ackOff)
			return
		}
	}
	heap.Push(&ps.exp, m)
	ps.replaceTopic(u, m)
	if ps.ready {
		ps.evaluateAccepted(u, m)
		ps.deliverPending(u, true)
	}
	if m.flags&fReread != 0 {
		ps.dropBody(m)
	}
}

// parseChannelID is schema.ParseChannelID of bytes; the dashed form, which
// ingest writes, is parsed without a conversion to string.
func parseChannelID(b []byte) ([16]byte, error) {
	var out [16]byte
	if len(b) != 36 || b[8] != '-' || b[13] != '-' || b[18] != '-' || b[23] != '-' {
		return schema.ParseChannelID(string(b))
	}
	j := 0
	for _, r := range [...][2]int{{0, 8}, {9, 13}, {14, 18}, {19, 23}, {24, 36}} {
		if _, err := hex.Decode(out[j:j+(r[1]-r[0])/2], b[r[0]:r[1]]); err != nil {
			return out, schema.ErrBadChannelID
		}
		j += (r[1] - r[0]) / 2
	}
	return out, nil
}

// keepBody keeps the payload in memory if the budget allows, else marks it
// to be re-read from Kafka at delivery. It returns the body when kept or
// when wanted anyway (for a delivery right now). The payload is copied out
// of the record (its slices alias the fetched batch).
func (ps *partState) keepBody(m *pending, a *schema.Accepted, want bool) *body {
	e := ps.env
	cost := int64(len(a.Payload)+len(a.Encryption)+len(a.CryptoKey)) + 64
	keep := e.reread == nil || e.limit >= 0 && e.budget.Load()+cost <= e.limit
	if !keep {
		m.flags |= fBodyGone
		if !want {
			return nil
		}
	}
	b := &body{payload: bytes.Clone(a.Payload), encoding: ps.handles.of(a.Encoding), encryption: string(a.Encryption), cryptoKey: string(a.CryptoKey)}
	if keep {
		m.body = b
		e.budget.Add(b.cost())
	}
	return b
}

func (ps *partState) dropBody(m *pending) {
	if m.body == nil {
		return
	}
	if m.flags&fReread == 0 {
		ps.env.budget.Add(-m.body.cost())
	}
	m.body = nil
	m.flags &^= fReread
	m.flags |= fBodyGone
}

// replaceTopic settles older live messages with the same channel and topic
// as m (RFC 8030 §5.4: a new message replaces an undelivered one).
func (ps *partState) replaceTopic(u *uaidState, m *pending) {
	if m.topic == (unique.Handle[string]{}) {
		return
	}
	key := topicKey{channel: m.channel, topic: m.topic}
	if old := u.topics[key]; old != nil {
		ps.markSettling(old, reasonDropped+uint8(pb.DropReason_DROP_REASON_TOPIC_REPLACED))
	}
	if u.topics == nil {
		u.topics = make(map[topicKey]*pending)
	}
	u.topics[key] = m
}

// untrackTopic forgets m as the newest of its topic when it ends.
func untrackTopic(m *pending) {
	if u := m.u; u != nil && m.topic != (unique.Handle[string]{}) {
		key := topicKey{channel: m.channel, topic: m.topic}
		if u.topics[key] == m {
			delete(u.topics, key)
			if len(u.topics) == 0 {
				u.topics = nil
			}
		}
	}
}

// deleted handles DELETE /m/{id}: the message is not delivered afterwards.
func (ps *partState) deleted(ref *pb.MessageRef, id schema.UAID) {
	if ref == nil || ref.GetPartition() != ps.p {
		return
	}
	m := ps.msgs.find(ref.GetOffset())
	if m == nil || m.u == nil || m.u.id != id {
		return // unknown, already settled, or not this UAID's message
	}
	ps.markSettling(m, reasonDropped+uint8(pb.DropReason_DROP_REASON_DELETED))
}

func (ps *partState) foldAck(rec *kgo.Record, st schema.Settlement, id schema.UAID) {
	switch st.Kind {
	case schema.FieldEventDelivered:
		if m := ps.msgs.find(st.Offset); m != nil && m.u != nil && m.u.id == id {
			m.attempts = max(m.attempts, st.Attempt)
		}
		return
	case schema.FieldEventNacked:
		return // recorded for analytics only; the message stays pending
	}
	if !st.HasRef || st.Partition != ps.p {
		ps.skip(rec, errors.New("message ref of another partition"), "skipping settlement")
		return
	}
	off := st.Offset
	switch {
	case off < ps.start[tMessages]:
		// Below the committed low watermark: settled long ago.
	case off >= ps.next[tMessages]:
		if o, ok := ps.orphans[off]; !ok || rec.Offset < o.ackOff {
			ps.orphans[off] = orphan{ackOff: rec.Offset, uaid: id}
		}
	default:
		m := ps.msgs.find(off)
		if m == nil || m.u != nil && m.u.id != id {
			return // settled and pruned already, or not this UAID's
		}
		ps.settleRead(m, rec.Offset)
	}
}

// foldPresence folds a pushlog.presence record: where the UAID is
// connected. A Disconnected only clears the connection it names.
func (ps *partState) foldPresence(rec *kgo.Record) {
	if rec.Value == nil {
		if id, err := schema.ParseUAID(string(rec.Key)); err == nil {
			if u := ps.uaids[id]; u != nil {
				u.presence = nil
				ps.unfollowPresence(u, "") // cluster.go
				ps.forgetIfIdle(u)
			}
		}
		return
	}
	ev, err := schema.Decode(rec)
	if err != nil {
		ps.skip(rec, err, "skipping undecodable presence")
		return
	}
	id, _ := schema.ParseUAID(ev.GetUaid()) // Decode validated it
	switch b := ev.GetBody().(type) {
	case *pb.Event_Connected:
		c := b.Connected
		u := ps.user(id)
		u.presence = &presence{node: c.GetNode(), linkAddr: c.GetLinkAddr(), connID: c.GetConnId(), sinceMs: c.GetSinceMs()}
		ps.seenAt(id, ev.GetTimeMs())
		ps.followPresence(u) // cluster.go: deliver to a connection on another node
	case *pb.Event_Disconnected:
		if u := ps.uaids[id]; u != nil && u.presence != nil && u.presence.connID == b.Disconnected.GetConnId() {
			u.presence = nil
			ps.unfollowPresence(u, b.Disconnected.GetConnId()) // cluster.go
			ps.seenAt(id, ev.GetTimeMs())
			ps.forgetIfIdle(u)
		}
	default:
		ps.skip(rec, errors.New(schema.TypeName(ev)), "skipping event on the wrong topic")
	}
}

// markSettling records the end of a live message: it is never delivered
// again. The owner's own decisions produce their event (once caught up; a
// replay may still read the event a previous owner wrote).
func (ps *partState) markSettling(m *pending, reason uint8) {
	if m.state != stLive {
		return
	}
	m.state, m.reason = stSettling, reason
	untrackTopic(m)
	ps.exp.remove(m)
	ps.dropBody(m)
	if reason == reasonAcked {
		return
	}
	m.flags |= fNeedProduce
	if ps.ready {
		ps.produceSettlement(m)
	}
}

// settleRead applies a settlement event read back from pushlog.acks at
// ackOff: the message is settled for the watermark.
func (ps *partState) settleRead(m *pending, ackOff int64) {
	if m.state == stSettled {
		m.ackOff = min(m.ackOff, ackOff)
		return
	}
	untrackTopic(m)
	m.state, m.ackOff = stSettled, ackOff
	ps.msgs.settledNow(m)
	m.flags &^= fNeedProduce
	ps.exp.remove(m)
	ps.dropBody(m)
	if u := m.u; u != nil {
		m.u = nil
		u.settled++
		u.compact()
		ps.forgetIfIdle(u)
	}
	ps.msgs.popSettledFront()
}

func (ps *partState) ref(m *pending, channelID string) *pb.MessageRef {
	return &pb.MessageRef{
		Partition:  ps.p,
		Offset:     m.offset,
		ChannelId:  channelID,
		AcceptedMs: m.acceptedMs,
		VapidSub:   handleValue(m.vapidSub),
	}
}

func handleValue(h unique.Handle[string]) string {
	if h == (unique.Handle[string]{}) {
		return ""
	}
	return h.Value()
}

// produceSettlement writes the Expired/Dropped event of an owner decision.
// A failed write is retried by the sweeper; until the event is read back
// the message keeps the watermark.
func (ps *partState) produceSettlement(m *pending) {
	if m.state != stSettling || m.flags&fNeedProduce == 0 || m.u == nil {
		return
	}
	m.flags &^= fNeedProduce
	ev := schema.NewEvent(m.u.uaid(), ps.env.now())
	ref := ps.ref(m, schema.FormatChannelID(m.channel[:]))
	if m.reason == reasonExpired {
		ev.Body = &pb.Event_Expired{Expired: &pb.Expired{Msg: ref}}
	} else if m.reason == reasonBridged { // bridge.go: accepted by FCM/APNs
		ev.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: bridgeAckCode}}
	} else {
		ev.Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason(m.reason - reasonDropped)}}
	}
	ps.env.produce(ev, func(err error) {
		ps.env.log.Warn("settlement event not written; will retry", "partition", ps.p, "offset", m.offset, "err", err)
		// Not under mu here: the producer may call back synchronously.
		go func() {
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if m.state == stSettling {
				m.flags |= fNeedProduce
				ps.retry = append(ps.retry, m)
			}
		}()
	})
}

// checkReady switches to live operation once the fold has caught up with
// the messages and acks that existed at assignment: only then are the
// owner's decisions (and deliveries) made, so a replay never re-decides,
// re-announces or re-delivers what the log already settled.
func (ps *partState) checkReady() {
	if ps.ready || ps.next[tMessages] < ps.end0[tMessages] || ps.next[tAcks] < ps.end0[tAcks] {
		return
	}
	ps.ready = true
	for _, u := range ps.uaids {
		ps.evaluate(u)
	}
	for _, m := range ps.msgs.items() {
		if m.state == stSettling {
			ps.produceSettlement(m)
		}
	}
	for _, u := range ps.uaids {
		ps.deliverPending(u, true)
	}
}

// evaluate applies the owner's rules to u's live messages: gone channels,
// TTL 0 while offline, and the pending bound.
func (ps *partState) evaluate(u *uaidState) {
	ps.dropGone(u)
	ps.evaluateOffline(u)
}

// evaluateAccepted is evaluate right after m was accepted for u. u's other
// messages were held against its channels when they were accepted and
// again at every change of them (afterChannelChange), so only m is: a
// pass over every pending message per push cost O(pending) lookups (3% of
// a fresh-JWT push to user agents with a backlog).
func (ps *partState) evaluateAccepted(u *uaidState, m *pending) {
	if r, ok := ps.recs.get(u.id); ok {
		ps.dropIfGone(r, m)
	}
	ps.evaluateOffline(u)
}

// evaluateOffline applies the rules that do not depend on u's channels:
// TTL 0 while offline, and the pending bound.
func (ps *partState) evaluateOffline(u *uaidState) {
	now := ps.env.now().UnixMilli()
	// A bridged UAID never has a socket: its TTL 0 messages go to the
	// bridge with TTL 0 (bridge.go), as autopush sends them.
	if u.ttl0 && u.session == nil && ps.bridged[u.id] == nil {
		for _, m := range u.pending {
			if m.state == stLive && m.flags&fTTL0 != 0 && now <= m.expiryMs {
				ps.markSettling(m, reasonDropped+uint8(pb.DropReason_DROP_REASON_TTL_ZERO_OFFLINE))
			}
		}
		u.ttl0 = false // what was live is settling; expired ones never deliver
	}
	ps.enforceLimit(u)
}

// dropGone settles u's live messages whose channel was unregistered or
// whose UAID was reset. A channel never seen is not gone: its registration
// may not be folded yet.
func (ps *partState) dropGone(u *uaidState) {
	r, ok := ps.recs.get(u.id)
	if !ok || u.unsettled() == 0 {
		return
	}
	for _, m := range u.pending {
		ps.dropIfGone(r, m)
	}
}

// dropIfGone settles m if its UAID was reset or its channel unregistered.
func (ps *partState) dropIfGone(r uaidRec, m *pending) {
	switch {
	case r.reset():
		ps.markSettling(m, reasonDropped+uint8(pb.DropReason_DROP_REASON_USER_RESET))
	case r.channelGone(m.channel):
		ps.markSettling(m, reasonDropped+uint8(pb.DropReason_DROP_REASON_UNREGISTERED))
	}
}

// enforceLimit drops the oldest live messages past the per-UAID bound.
// The user is never reset for having too many messages.
func (ps *partState) enforceLimit(u *uaidState) {
	if len(u.pending) <= ps.env.cfg.PendingLimit {
		return // live ones are fewer still: no need to count them
	}
	live := 0
	for _, m := range u.pending {
		if m.state == stLive {
			live++
		}
	}
	for _, m := range u.pending {
		if live <= ps.env.cfg.PendingLimit {
			return
		}
		if m.state == stLive {
			ps.markSettling(m, reasonDropped+uint8(pb.DropReason_DROP_REASON_PENDING_LIMIT))
			live--
		}
	}
}

// sweep expires live messages past their expiry and retries settlement
// events that failed to be written.
func (ps *partState) sweep(now time.Time) {
	if !ps.ready {
		return
	}
	ms := now.UnixMilli()
	for len(ps.exp) > 0 && ps.exp[0].expiryMs < ms {
		ps.markSettling(ps.exp[0], reasonExpired)
	}
	retry := ps.retry
	ps.retry = nil
	for _, m := range retry {
		ps.produceSettlement(m)
	}
	ps.expireIdle(now)
}

// watermarks returns the offsets to commit: a new owner starting there
// rebuilds exactly the unsettled set.
//
//   - messages: the oldest unsettled message (or the position if none).
//   - acks: the smallest acks offset among the settlement events of the
//     settled messages still above the messages watermark and of orphans
//     (the new owner re-reads those messages and must re-read what settled
//     them), else the position.
//   - registrations: never past a registration that is not yet in
//     pushlog.channels, because a new owner rebuilds the state below the
//     commit from that topic only. The projector writes its records (both
//     formats; tombstones carry it in a header) to channels partition p in
//     registrations order, each carrying the registrations offset after
//     the event that wrote it, so the largest such value read so far
//     bounds what is safely covered. Events that change nothing write no
//     record, so the commit may stay behind them: replaying more is always
//     safe (a UAID's record skips what it covers, and folding is
//     idempotent).
func (ps *partState) watermarks() [numGroupTopics]int64 {
	var w [numGroupTopics]int64
	w[tMessages] = ps.next[tMessages]
	items := ps.msgs.items()
	if len(items) > 0 {
		w[tMessages] = items[0].offset
	}
	w[tAcks] = ps.next[tAcks]
	for i := 0; i < len(items) && ps.msgs.settled > 0; i++ { // none settled: nothing to walk
		if m := items[i]; m.state == stSettled {
			w[tAcks] = min(w[tAcks], m.ackOff)
		}
	}
	for off, o := range ps.orphans {
		if off < ps.next[tMessages] {
			// Its message was read and did not match (or never
			// existed): nothing left to settle.
			delete(ps.orphans, off)
			continue
		}
		w[tAcks] = min(w[tAcks], o.ackOff)
	}
	w[tRegistrations] = max(ps.start[tRegistrations], min(ps.next[tRegistrations], ps.maxSnapR))
	return w
}

// release frees what the partition holds when it is given up.
func (ps *partState) release() {
	ps.writeHeldLater() // deliveries happened: their events are written, not dropped
	ps.closed = true
	ps.idle.end()
	for _, m := range ps.msgs.items() {
		ps.dropBody(m)
	}
	ps.uaids = nil
	ps.recs = nil
	ps.msgs = deque{}
	ps.exp = nil
	ps.orphans = nil
	ps.signal()
}

// stats counts what the partition tracks.
func (ps *partState) stats() PartitionStats {
	s := PartitionStats{Partition: ps.p, Ready: ps.ready, UAIDs: len(ps.recs), Orphans: len(ps.orphans), Skipped: ps.skipped.Load(), HeldDelivered: len(ps.held)}
	s.Pending, s.OldestPendingMs = ps.msgs.unsettled, ps.msgs.oldestMs()
	for id, u := range ps.uaids {
		if u.session != nil {
			s.Attached++
		}
		if _, known := ps.recs[id]; !known {
			s.UAIDs++
		}
	}
	s.Next = ps.next
	return s
}

// deque holds tracked messages in offset order; settled ones leave from
// the front as the watermark passes them. It counts what Stats and the
// watermarks need (unsettled and settled entries, and the oldest
// acceptance time per block of entries) so that neither walks a takeover's
// million entries under the partition's lock.
type deque struct {
	s         []*pending
	head      int
	unsettled int // entries not settled
	settled   int // settled entries still in s (behind an unsettled one)
	// blocks[i] summarizes s[i*dequeBlock:(i+1)*dequeBlock].
	blocks []dequeBlockMin
}

// dequeBlock is the number of entries summarized by one block minimum.
const dequeBlock = 1024

// dequeBlockMin is the smallest acceptance time (Unix ms, >0) of the
// unsettled entries of a block, 0 when none; stale when dirty.
type dequeBlockMin struct {
	ms    int64
	dirty bool
}

func (d *deque) push(m *pending) {
	i := len(d.s)
	d.s = append(d.s, m)
	if m.state != stSettled {
		d.unsettled++
	} else {
		d.settled++
	}
	b := i / dequeBlock
	if b == len(d.blocks) {
		d.blocks = append(d.blocks, dequeBlockMin{})
	}
	if bm := &d.blocks[b]; m.state != stSettled && m.acceptedMs > 0 && (bm.ms == 0 || m.acceptedMs < bm.ms) {
		bm.ms = m.acceptedMs
	}
}

func (d *deque) items() []*pending { return d.s[d.head:] }

func (d *deque) index(off int64) int {
	it := d.items()
	i := sort.Search(len(it), func(i int) bool { return it[i].offset >= off })
	if i < len(it) && it[i].offset == off {
		return d.head + i
	}
	return -1
}

func (d *deque) find(off int64) *pending {
	if i := d.index(off); i >= 0 {
		return d.s[i]
	}
	return nil
}

// settledNow records that m, an entry, just became settled.
func (d *deque) settledNow(m *pending) {
	d.unsettled--
	d.settled++
	if i := d.index(m.offset); i >= 0 {
		d.blocks[i/dequeBlock].dirty = true
	}
}

// oldestMs returns the smallest acceptance time (>0) of the unsettled
// entries, 0 when none. Offset order is not acceptance order across
// producers: it is a minimum over blocks, each recomputed only after one
// of its entries settled.
func (d *deque) oldestMs() int64 {
	var oldest int64
	for b := d.head / dequeBlock; b < len(d.blocks); b++ {
		bm := &d.blocks[b]
		if bm.dirty {
			bm.ms, bm.dirty = 0, false
			for _, m := range d.s[max(b*dequeBlock, d.head):min((b+1)*dequeBlock, len(d.s))] {
				if m != nil && m.state != stSettled && m.acceptedMs > 0 && (bm.ms == 0 || m.acceptedMs < bm.ms) {
					bm.ms = m.acceptedMs
				}
			}
		}
		if bm.ms > 0 && (oldest == 0 || bm.ms < oldest) {
			oldest = bm.ms
		}
	}
	return oldest
}

func (d *deque) popSettledFront() {
	for d.head < len(d.s) && d.s[d.head].state == stSettled {
		d.s[d.head] = nil
		d.head++
		d.settled--
	}
	switch {
	case d.head == len(d.s):
		d.s, d.head, d.blocks = d.s[:0], 0, d.blocks[:0]
	case d.head > 1024 && d.head > len(d.s)/2:
		n := copy(d.s, d.s[d.head:])
		clear(d.s[n:])
		d.s, d.head = d.s[:n], 0
		// Entries moved between blocks: every summary is recomputed
		// when next asked for.
		d.blocks = d.blocks[:(n+dequeBlock-1)/dequeBlock]
		for i := range d.blocks {
			d.blocks[i] = dequeBlockMin{dirty: true}
		}
	}
}

// expHeap is a min-heap of live messages by expiry.
type expHeap []*pending

func (h expHeap) Len() int { return len(h) }
func (h expHeap) Less(i, j int) bool {
	if h[i].expiryMs != h[j].expiryMs {
		return h[i].expiryMs < h[j].expiryMs
	}
	return h[i].offset < h[j].offset
}
func (h expHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = int32(i), int32(j)
}
func (h *expHeap) Push(x any) {
	m := x.(*pending)
	m.heapIdx = int32(len(*h))
	*h = append(*h, m)
}
func (h *expHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	m.heapIdx = -1
	return m
}

func (h *expHeap) remove(m *pending) {
	if m.heapIdx >= 0 && int(m.heapIdx) < len(*h) && (*h)[m.heapIdx] == m {
		heap.Remove(h, int(m.heapIdx))
	}
}
