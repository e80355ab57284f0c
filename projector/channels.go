package projector

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/group"
	"github.com/pushlog/pushlog/schema/pb"
)

// ChannelDefaultGroup is the consumer group of the channel-state projector.
const ChannelDefaultGroup = "pushlog-channels"

// ChannelProjectorConfig configures a ChannelProjector.
type ChannelProjectorConfig struct {
	// ClientOpts connect to Kafka (seed brokers, TLS, SASL, logger). The
	// projector adds its own consumer options to them.
	ClientOpts []kgo.Opt
	// Producer is not used any more: channel records are keyed by
	// "<uaid>:<channel>" but must land on the UAID's partition, so the
	// projector makes its own producer with a manual partitioner. Kept so
	// existing callers compile.
	Producer *kgo.Client
	// Group is the consumer group over pushlog.registrations; empty means
	// ChannelDefaultGroup.
	Group string
	// Names are the topic names; zero means schema.DefaultNames().
	Names schema.Names
	// UAIDExpiry is how long a reset UAID's record stays in
	// pushlog.channels (its endpoints answer 410 errno 103 meanwhile);
	// then it is tombstoned. Zero means DefaultUAIDExpiry.
	UAIDExpiry time.Duration
	Logger     *slog.Logger
	// Metrics registers the projector's series (batches, records,
	// records written, quarantined); nil: no metrics.
	Metrics prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// withDefaults checks c and fills in the defaults of its zero fields.
func (c ChannelProjectorConfig) withDefaults() (ChannelProjectorConfig, error) {
	if len(c.ClientOpts) == 0 {
		return c, errors.New("channel projector: no Kafka client options (seed brokers)")
	}
	if c.UAIDExpiry < 0 {
		return c, errors.New("channel projector: UAIDExpiry must not be negative")
	}
	if c.Names.Messages == "" {
		c.Names = schema.DefaultNames()
	}
	c.Group = cmp.Or(c.Group, c.Names.Group("channels"))
	c.UAIDExpiry = cmp.Or(c.UAIDExpiry, DefaultUAIDExpiry)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// DefaultUAIDExpiry is how long a UAID may stay without a connection
// before its owner resets it, as autopush-rs does (60 days).
const DefaultUAIDExpiry = 60 * 24 * time.Hour

// MaxMigratedChannels bounds the channels taken from one format-1
// ChannelState snapshot; a larger one (an attack's flood, see issue 10) is
// quarantined: skipped with an error log and counted, and that UAID's state
// is rebuilt from the registrations still in the log.
const MaxMigratedChannels = 10000

// ChannelProjector folds pushlog.registrations into per-UAID channel state
// and writes every change to the compacted pushlog.channels topic as one
// small record (format 2, see schema.DecodeChannels): a register writes the
// channel's record, an unregister rewrites it as unregistered, a reset
// rewrites the channels its UserReset lists (its owner's registered ones)
// as unregistered and writes the UAID record. A change costs O(1) bytes
// whatever the number of channels, and an active UAID costs no memory
// here (see channelPartition).
//
// An unregistered channel keeps a value record, not a tombstone, so that
// its endpoint answers 410 errno 106 after compaction has removed
// tombstones and retention the registrations: senders learn to prune for
// as long as the UAID expiry. Then the projector forgets it (a tombstone
// with the pushlog-forget header); it also forgets the oldest past
// MaxUnregisteredKept per UAID, so register/unregister churn cannot grow
// the topic without bound.
//
// Per poll it produces the changed records, waits until they are durable
// and only then commits the registrations offsets, so a crash never loses a
// registration. A replay after a crash is harmless: every record carries
// the next registrations offset to fold, and events below the highest one
// loaded from the partition are skipped (records are produced in order).
//
// No record and no UAID's state can stop it: undecodable input is skipped,
// oversized legacy snapshots and records Kafka refuses are quarantined
// (logged as errors, counted in pushlog_projector_quarantined_total), and
// Kafka outages are retried until ctx ends.
type ChannelProjector struct {
	cfg ChannelProjectorConfig
	log *slog.Logger

	mu    sync.Mutex
	parts map[int32]*channelPartition // loaded state of owned partitions

	// dirty is set while polled records have snapshots that are not yet
	// durable; the revoke callback must not commit their offsets then.
	dirty     atomic.Bool
	running   atomic.Bool
	stats     channelCounters
	extra     channelExtraCounters
	lastSweep time.Time
}

// channelExtraCounters count the format-2 specifics.
type channelExtraCounters struct {
	quarantined, bytes, migrated, expired atomic.Int64
	// unregExpired and unregCapped count unregistered channels forgotten
	// past the UAID expiry and past MaxUnregisteredKept.
	unregExpired, unregCapped atomic.Int64
}

// MaxUnregisteredKept bounds the unregistered channels a UAID keeps in
// pushlog.channels (the newest; older ones are forgotten), as the gone set
// bounds what it remembers per UAID.
const MaxUnregisteredKept = goneMaxChannels

// channelPartition is the in-memory channel state of one partition.
//
// It keeps nothing for a UAID whose channels are all registered (issue 10:
// an idle UAID's bytes are the owner's; the log holds the rest): a
// register writes its record whatever the state, and a reset gets the
// channels to unregister from its UserReset event. It keeps only what is
// bounded and expires: reset UAIDs (to revive them, and to tombstone them
// after the UAID expiry) and unregistered channels (capped per UAID,
// forgotten after the expiry).
type channelPartition struct {
	p int32
	// next is the highest registrations offset (+1) carried by a channel
	// or UAID record loaded from pushlog.channels: events below it were
	// folded by an earlier owner, so a replay is skipped. Records are
	// produced in order on the partition, so all earlier ones are durable.
	next int64
	// resets holds the reset UAIDs of the partition.
	resets map[[16]byte]resetInfo
	// legacy holds, while loading, the state of UAIDs whose latest
	// UAID-level record is a format-1 snapshot: migrate writes their
	// format-2 records once, then it is dropped.
	legacy map[[16]byte]chanUAID
	// gone holds, per UAID that has any, its unregistered channels with a
	// value record (goneSlot bytes each, oldest first). Kept apart from
	// states so a UAID without them costs nothing more.
	gone map[[16]byte]string
	// unregToWrite lists, while loading, unregistered channels that have
	// no value record yet (an older writer's tombstone or a format-1
	// snapshot); migrate writes them.
	unregToWrite map[goneKey]struct{}
	// forgetToWrite lists, while loading, channels past
	// MaxUnregisteredKept that migrate forgets.
	forgetToWrite []goneSlotVal
}

// resetInfo is what the projector keeps of a reset UAID.
type resetInfo struct {
	ms  int64 // when it was reset (unix ms)
	off int64 // the registrations offset its record carries
}

// goneSlot is the size of an unregistered channel in channelPartition.gone:
// the id, when it was unregistered (unix ms) and the registrations offset
// its record carries.
const goneSlot = 32

// goneSlotVal is one decoded slot of channelPartition.gone.
type goneSlotVal struct {
	uaid, ch [16]byte
	ms, off  int64
}

func goneFind(list string, ch [16]byte) int {
	want := string(ch[:])
	for i := 0; i+goneSlot <= len(list); i += goneSlot {
		if list[i:i+16] == want {
			return i
		}
	}
	return -1
}

func goneSlotAt(uaid [16]byte, list string, i int) goneSlotVal {
	v := goneSlotVal{uaid: uaid}
	copy(v.ch[:], list[i:i+16])
	b := []byte(list[i+16 : i+goneSlot]) // small: does not escape
	v.ms = int64(binary.LittleEndian.Uint64(b[0:8]))
	v.off = int64(binary.LittleEndian.Uint64(b[8:16]))
	return v
}

// unregister appends ch as the newest unregistered channel of uaid and
// returns the oldest ones it pushes past MaxUnregisteredKept (to forget).
func (part *channelPartition) unregister(uaid, ch [16]byte, ms, off int64) []goneSlotVal {
	list := part.gone[uaid]
	if i := goneFind(list, ch); i >= 0 {
		list = list[:i] + list[i+goneSlot:]
	}
	var b [goneSlot]byte
	copy(b[:16], ch[:])
	binary.LittleEndian.PutUint64(b[16:24], uint64(ms))
	binary.LittleEndian.PutUint64(b[24:32], uint64(off))
	if part.gone == nil {
		part.gone = make(map[[16]byte]string)
	}
	var evicted []goneSlotVal
	for len(list)/goneSlot >= MaxUnregisteredKept {
		evicted = append(evicted, goneSlotAt(uaid, list, 0))
		list = list[goneSlot:]
	}
	part.gone[uaid] = list + string(b[:]) // a new string of exact size
	return evicted
}

// reregister drops ch from uaid's unregistered channels (its record is
// being overwritten as registered, or forgotten).
func (part *channelPartition) reregister(uaid, ch [16]byte) {
	list, ok := part.gone[uaid]
	if !ok {
		return
	}
	i := goneFind(list, ch)
	if i < 0 {
		return
	}
	if list = list[:i] + list[i+goneSlot:]; list == "" {
		delete(part.gone, uaid)
		return
	}
	part.gone[uaid] = list
}

// expireGone removes and returns the unregistered channels of every UAID
// unregistered before cutoff (unix ms).
func (part *channelPartition) expireGone(cutoff int64) []goneSlotVal {
	var out []goneSlotVal
	for uaid, list := range part.gone {
		var keep strings.Builder
		for i := 0; i+goneSlot <= len(list); i += goneSlot {
			if v := goneSlotAt(uaid, list, i); v.ms < cutoff {
				out = append(out, v)
				continue
			}
			keep.WriteString(list[i : i+goneSlot])
		}
		switch {
		case keep.Len() == 0:
			delete(part.gone, uaid)
		case keep.Len() != len(list):
			part.gone[uaid] = keep.String()
		}
	}
	return out
}

// chanUAID is the state of one UAID taken from a format-1 snapshot (and
// the records after it) until migrate rewrites it in format 2.
type chanUAID struct {
	next    int64 // registrations offset after the last event folded
	resetMs int64
	reset   bool
	// chans holds the registered channels, chanSlot bytes each: the id
	// and a one-byte fingerprint of its key hash (0: none), enough to see
	// that a re-registration changed the key.
	chans string
}

// chanSlot is the size of a channel in chanUAID.chans.
const chanSlot = 17

func (u *chanUAID) count() int { return len(u.chans) / chanSlot }

func (u *chanUAID) id(i int) (id [16]byte) {
	copy(id[:], u.chans[chanSlot*i:chanSlot*i+16])
	return id
}

func (u *chanUAID) find(id [16]byte) int {
	want := string(id[:])
	for i := range u.count() {
		if u.chans[chanSlot*i:chanSlot*i+16] == want {
			return i
		}
	}
	return -1
}

// set adds id or changes its key fingerprint.
func (u *chanUAID) set(id [16]byte, key byte) {
	slot := string(id[:]) + string([]byte{key})
	if i := u.find(id); i >= 0 {
		u.chans = u.chans[:chanSlot*i] + slot + u.chans[chanSlot*(i+1):]
		return
	}
	u.chans += slot
}

func (u *chanUAID) remove(i int) { u.chans = u.chans[:chanSlot*i] + u.chans[chanSlot*(i+1):] }

// keyRef is a one-byte fingerprint of a key hash; 0 means none.
func keyRef(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write(b)
	return byte(1 + h.Sum32()%255)
}

// NewChannelProjector validates cfg and returns a projector; Run starts it.
func NewChannelProjector(cfg ChannelProjectorConfig) (*ChannelProjector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &ChannelProjector{
		cfg:   cfg,
		log:   cfg.Logger.With("role", "channel-projector", "group", cfg.Group),
		parts: make(map[int32]*channelPartition),
	}
	if err := register(cfg.Metrics, append(p.collectors(), p.extraCollectors()...)...); err != nil {
		return nil, fmt.Errorf("channel projector: %w", err)
	}
	return p, nil
}

func (p *ChannelProjector) extraCollectors() []prometheus.Collector {
	const name = "channels"
	return []prometheus.Collector{
		projectorCounter("quarantined_total", "Records or states a projector skipped as poison (oversized, refused by Kafka); each is logged as an error.", name, p.extra.quarantined.Load),
		projectorCounter("written_bytes_total", "Bytes (keys + values) the channel projector wrote to the channels topic.", name, p.extra.bytes.Load),
		projectorCounter("migrated_total", "UAIDs whose format-1 channel snapshot was rewritten as format-2 records.", name, p.extra.migrated.Load),
		projectorCounter("expired_total", "Reset UAIDs whose record left the channels topic after the UAID expiry.", name, p.extra.expired.Load),
		projectorCounter("unregistered_expired_total", "Unregistered channels forgotten (tombstoned) after the UAID expiry: their endpoints stop answering 410.", name, p.extra.unregExpired.Load),
		projectorCounter("unregistered_capped_total", "Unregistered channels forgotten (tombstoned) because their UAID has more than 1024 newer ones (register/unregister churn).", name, p.extra.unregCapped.Load),
	}
}

// Run joins the consumer group and projects until ctx is canceled (then it
// returns nil). Only start-up errors (clients that cannot be made) are
// returned: Kafka outages are retried, poison input is quarantined.
func (p *ChannelProjector) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("channel projector: already running")
	}
	defer p.running.Store(false)
	p.dirty.Store(false)
	// Records are keyed "<uaid>:<channel>" but belong on the UAID's
	// partition: the partition is set on each record.
	producer, err := kgo.NewClient(append(slices.Clone(p.cfg.ClientOpts),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		return fmt.Errorf("channel projector: producer: %w", err)
	}
	defer producer.Close()
	m, err := group.New(group.Config{
		ClientOpts: p.cfg.ClientOpts,
		Group:      p.cfg.Group,
		Topics:     []string{p.cfg.Names.Registrations},
		Wait:       func() time.Duration { return channelSweepPoll },
		Fold: func(ctx context.Context, cl *kgo.Client, fetches kgo.Fetches) error {
			p.processBatch(ctx, cl, kadm.NewClient(cl), producer, fetches)
			p.sweep(ctx, producer)
			return nil
		},
		Stop: func(_ context.Context, _ *kgo.Client, fetches kgo.Fetches) {
			if fetches.NumRecords() > 0 {
				p.dirty.Store(true) // polled but never folded: not committable
			}
			p.dropAll()
		},
		// Rebalances wait until a polled batch is durable and committed,
		// so offsets are never committed for a partition we lost.
		Revoked:      p.onRevoked,
		Lost:         p.onLost,
		CloseTimeout: channelCloseTimeout,
		Logger:       p.log,
	})
	if err != nil {
		return fmt.Errorf("channel projector: %w", err)
	}
	if err := m.Run(ctx); err != nil {
		return fmt.Errorf("channel projector: %w", err)
	}
	return nil
}

// channelSweepPoll bounds a poll so the expiry sweep runs on idle
// partitions too.
const channelSweepPoll = 5 * time.Second

// channelCloseTimeout bounds how long shutdown waits for the consumer
// group client to close. kgo sends JoinGroup with the client's own
// context, so Close waits for a pending join, and the broker holds a join
// until every earlier member has rejoined or expired: after a kill -9 that
// is the dead member's session timeout (45 s by default), and SIGTERM
// would hang as long. Not waiting loses nothing: the close goes on in the
// background, and uncommitted registrations are folded again by the next
// owner of the partition.
const channelCloseTimeout = 5 * time.Second

// retryKafka calls fn until it succeeds or ctx ends, with a capped
// backoff, logging each failure with logf (the channel projector logs an
// error: it is a heartbeat, the projector is stuck on Kafka, not dead).
func retryKafka(ctx context.Context, logf func(msg string, args ...any), what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		logf(what+" failed, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// processBatch folds one poll, makes its records durable and commits. It
// returns only when that is done or ctx ended.
func (p *ChannelProjector) processBatch(ctx context.Context, cl *kgo.Client, adm *kadm.Client, producer *kgo.Client, fetches kgo.Fetches) {
	p.dirty.Store(true) // fetch errors are logged by the group member
	var parts map[int32]*channelPartition
	if err := retryKafka(ctx, p.log.Error, "load channel state", func() (err error) {
		parts, err = p.ensureLoaded(ctx, adm, producer, fetches)
		return err
	}); err != nil {
		return // ctx ended: not committed, folded again by the next owner
	}
	now := p.cfg.Now()
	var recs []*kgo.Record
	fetches.EachRecord(func(r *kgo.Record) {
		part := parts[r.Partition]
		if part == nil {
			return // not ours (revoked meanwhile)
		}
		recs = p.fold(part, r, now, recs)
	})
	if err := p.produce(ctx, producer, recs); err != nil {
		return
	}
	p.dirty.Store(false)
	p.stats.batches.Add(1)
	p.stats.records.Add(int64(fetches.NumRecords()))
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		// Harmless: the next commit covers these offsets, and a replay
		// of them is skipped by the records' registrations offsets.
		p.log.Warn("commit registrations offsets", "err", err)
	}
}

// produce writes recs until each is durable or quarantined (a record Kafka
// refuses for itself, such as MESSAGE_TOO_LARGE, is logged and skipped:
// one UAID's record must never stop the partition). Other failures are
// retried until ctx ends.
func (p *ChannelProjector) produce(ctx context.Context, producer *kgo.Client, recs []*kgo.Record) error {
	return retryKafka(ctx, p.log.Error, "produce channel records", func() error {
		if len(recs) == 0 {
			return nil
		}
		var retry []*kgo.Record
		var firstErr error
		for _, res := range producer.ProduceSync(ctx, recs...) {
			switch {
			case res.Err == nil:
				p.stats.snapshots.Add(1)
				p.extra.bytes.Add(int64(len(res.Record.Key) + len(res.Record.Value)))
			case channelPoison(res.Err):
				p.extra.quarantined.Add(1)
				p.log.Error("QUARANTINED: Kafka refused a channel record; skipping it", "partition", res.Record.Partition, "key", string(res.Record.Key), "bytes", len(res.Record.Value), "err", res.Err)
			default:
				retry = append(retry, res.Record)
				if firstErr == nil {
					firstErr = res.Err
				}
			}
		}
		recs = retry
		if firstErr != nil {
			return fmt.Errorf("%d of the records: %w", len(retry), firstErr)
		}
		return nil
	})
}

// channelPoison reports errors that are about the record itself: retrying
// it can never succeed.
func channelPoison(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

// fold applies one registrations record and appends the channel records
// it changes. Corrupt and unknown records are logged and skipped.
func (p *ChannelProjector) fold(part *channelPartition, r *kgo.Record, now time.Time, recs []*kgo.Record) []*kgo.Record {
	if r.Offset < part.next {
		return recs // already in the records the state was loaded from
	}
	ev, err := schema.Decode(r)
	if err != nil {
		channelLogSkip(p.log, r, err)
		return recs
	}
	id, err := schema.ParseUAID(ev.GetUaid())
	if err != nil {
		channelLogSkip(p.log, r, err)
		return recs
	}
	uaid := id.String()
	next := r.Offset + 1
	add := func(rec *kgo.Record, err error) {
		if err != nil {
			p.extra.quarantined.Add(1)
			p.log.Error("QUARANTINED: cannot encode a channel record; skipping it", "uaid", uaid, "offset", r.Offset, "err", err)
			return
		}
		recs = append(recs, rec)
	}
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		ch, err := schema.ParseChannelID(b.ChannelRegistered.GetChannelId())
		if err != nil {
			channelLogSkip(p.log, r, err)
			return recs
		}
		if rs, ok := part.resets[id]; ok {
			// A registration after a reset revives the UAID.
			delete(part.resets, id)
			add(p.cfg.Names.UaidStateRecord(uaid, &pb.UaidState{ResetMs: rs.ms, RegistrationsOffset: next}, part.p, now))
		}
		// Written even when unchanged: the projector does not remember
		// registered channels, and a re-register is rare and O(1).
		part.reregister(id, ch) // its unregistered record is overwritten
		add(p.cfg.Names.ChannelEntryRecord(uaid, &pb.ChannelEntry{
			ChannelId: schema.FormatChannelID(ch[:]), KeyHash: b.ChannelRegistered.GetKeyHash(),
			RegistrationsOffset: next, ChangedMs: ev.GetTimeMs(),
		}, part.p))
	case *pb.Event_ChannelUnregistered:
		ch, err := schema.ParseChannelID(b.ChannelUnregistered.GetChannelId())
		if err != nil || goneFind(part.gone[id], ch) >= 0 {
			return recs // already unregistered: nothing new
		}
		// The connection node drops unregisters of channels the owner
		// does not know; any that pass (a partial channel list) cost one
		// record, within MaxUnregisteredKept and the UAID expiry.
		recs = p.unregister(part, id, ch, next, ev.GetTimeMs(), recs)
	case *pb.Event_UserReset:
		if _, ok := part.resets[id]; ok {
			break
		}
		for _, ch := range p.resetChannels(part, id, b.UserReset) {
			if goneFind(part.gone[id], ch) < 0 {
				recs = p.unregister(part, id, ch, next, ev.GetTimeMs(), recs)
			}
		}
		if part.resets == nil {
			part.resets = make(map[[16]byte]resetInfo)
		}
		part.resets[id] = resetInfo{ms: ev.GetTimeMs(), off: next}
		add(p.cfg.Names.UaidStateRecord(uaid, &pb.UaidState{UaidReset: true, ResetMs: ev.GetTimeMs(), RegistrationsOffset: next, ResetReason: b.UserReset.GetReason()}, part.p, now))
	case *pb.Event_BridgeRegistered:
		// A mobile UAID's bridge and token (issue 14): no channel state;
		// owners and ingest's bridge table read it from this log.
	default:
		channelLogSkip(p.log, r, fmt.Errorf("%s on the registrations topic", schema.TypeName(ev)))
	}
	return recs
}

// resetChannels returns the registered channels a UserReset unregisters:
// the ones its owner listed; for an event of an older writer (none
// listed), a format-1 state still loaded, if any.
func (p *ChannelProjector) resetChannels(part *channelPartition, id [16]byte, b *pb.UserReset) [][16]byte {
	var out [][16]byte
	for _, c := range b.GetChannelIds() {
		if len(c) == 16 {
			out = append(out, [16]byte(c))
		}
	}
	if len(b.GetChannelIds()) > 0 {
		return out
	}
	if u, ok := part.legacy[id]; ok {
		for i := range u.count() {
			out = append(out, u.id(i))
		}
		return out
	}
	p.log.Debug("UserReset lists no channels (an older writer, or a UAID its owner did not know): only the UAID record is written", "uaid", schema.UAID(id).String(), "reason", b.GetReason())
	return nil
}

// unregister appends the records of a registered channel's unregister:
// the forget tombstones of the oldest unregistered channels it pushes past
// MaxUnregisteredKept (first, so readers never hold more), then its
// unregistered record.
func (p *ChannelProjector) unregister(part *channelPartition, id, ch [16]byte, next, ms int64, recs []*kgo.Record) []*kgo.Record {
	uaid := schema.UAID(id).String()
	for _, v := range part.unregister(id, ch, ms, next) {
		p.extra.unregCapped.Add(1)
		recs = append(recs, p.cfg.Names.ChannelForget(uaid, v.ch, v.off, part.p))
	}
	rec, err := p.cfg.Names.UnregisteredRecord(uaid, ch, next, ms, part.p)
	if err != nil { // cannot happen: the id is a parsed one
		p.extra.quarantined.Add(1)
		p.log.Error("QUARANTINED: cannot encode an unregistered channel record; skipping it", "uaid", uaid, "err", err)
		return recs
	}
	return append(recs, rec)
}

// sweep forgets reset UAIDs past the expiry (tombstoning their record:
// their endpoints no longer answer 410 103, and compaction removes them
// from the log) and unregistered channels past the expiry (a forget
// tombstone: no more 410 106). It runs every
// expiry/100, at most hourly.
func (p *ChannelProjector) sweep(ctx context.Context, producer *kgo.Client) {
	now := p.cfg.Now()
	every := min(max(p.cfg.UAIDExpiry/100, time.Second), time.Hour)
	if now.Sub(p.lastSweep) < every {
		return
	}
	p.lastSweep = now
	cutoff := now.Add(-p.cfg.UAIDExpiry).UnixMilli()
	p.mu.Lock()
	var recs []*kgo.Record
	for _, part := range p.parts {
		for id, rs := range part.resets {
			if rs.ms < cutoff {
				recs = append(recs, p.cfg.Names.UaidTombstone(schema.UAID(id).String(), rs.off, part.p))
				delete(part.resets, id)
				p.extra.expired.Add(1)
			}
		}
		for _, v := range part.expireGone(cutoff) {
			recs = append(recs, p.cfg.Names.ChannelForget(schema.UAID(v.uaid).String(), v.ch, v.off, part.p))
			p.extra.unregExpired.Add(1)
		}
	}
	p.mu.Unlock()
	if err := p.produce(ctx, producer, recs); err != nil {
		p.log.Warn("expiry tombstones not written; the next owner writes them", "err", err)
	}
}

// ensureLoaded returns the state of every partition in fetches, loading
// from pushlog.channels the ones this member just started to own (and
// migrating format-1 snapshots found there).
func (p *ChannelProjector) ensureLoaded(ctx context.Context, adm *kadm.Client, producer *kgo.Client, fetches kgo.Fetches) (map[int32]*channelPartition, error) {
	p.mu.Lock()
	parts := make(map[int32]*channelPartition, len(p.parts))
	for k, v := range p.parts {
		parts[k] = v
	}
	p.mu.Unlock()

	var missing []int32
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if fp.Topic == p.cfg.Names.Registrations && len(fp.Records) > 0 && parts[fp.Partition] == nil && !slices.Contains(missing, fp.Partition) {
			missing = append(missing, fp.Partition)
		}
	})
	if len(missing) == 0 {
		return parts, nil
	}
	start := time.Now()
	loaded, err := channelLoadSnapshots(ctx, p.cfg.ClientOpts, adm, p.cfg.Names.Channels, missing, p.log, &p.extra.quarantined, p.cfg.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	for _, part := range loaded {
		if err := p.migrate(ctx, producer, part); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for partition, part := range loaded {
		p.parts[partition] = part
		parts[partition] = part
		p.log.Info("loaded channel state", "partition", partition, "reset_uaids", len(part.resets), "uaids_with_unregistered", len(part.gone), "took", time.Since(start))
	}
	return parts, nil
}

// migrate rewrites the format-1 snapshots of part as format-2 records:
// the registered channels and a UAID record, which supersedes the snapshot
// under compaction. Unregistered channels that have no value record (from
// a format-1 snapshot or an older writer's tombstone) get one, unless the
// next sweep forgets them anyway; the ones loading pushed past
// MaxUnregisteredKept are forgotten.
func (p *ChannelProjector) migrate(ctx context.Context, producer *kgo.Client, part *channelPartition) error {
	if err := p.migrateUnregistered(ctx, producer, part); err != nil || len(part.legacy) == 0 {
		part.legacy = nil
		return err
	}
	now := p.cfg.Now()
	var recs []*kgo.Record
	for id, u := range part.legacy {
		uaid := schema.UAID(id).String()
		for i := range u.count() {
			c := u.id(i)
			rec, err := p.cfg.Names.ChannelEntryRecord(uaid, &pb.ChannelEntry{ChannelId: schema.FormatChannelID(c[:]), RegistrationsOffset: u.next, ChangedMs: now.UnixMilli()}, part.p)
			if err == nil {
				recs = append(recs, rec)
			}
		}
		if rec, err := p.cfg.Names.UaidStateRecord(uaid, &pb.UaidState{UaidReset: u.reset, ResetMs: u.resetMs, RegistrationsOffset: u.next}, part.p, now); err == nil {
			recs = append(recs, rec)
		}
	}
	if err := p.produce(ctx, producer, recs); err != nil {
		return fmt.Errorf("migrate format-1 snapshots of partition %d: %w", part.p, err)
	}
	p.extra.migrated.Add(int64(len(part.legacy)))
	p.log.Info("migrated format-1 channel snapshots", "partition", part.p, "uaids", len(part.legacy), "records", len(recs))
	part.legacy = nil // written: the log holds it now
	return nil
}

// migrateUnregistered writes the unregistered and forget records loading
// found missing.
func (p *ChannelProjector) migrateUnregistered(ctx context.Context, producer *kgo.Client, part *channelPartition) error {
	cutoff := p.cfg.Now().Add(-p.cfg.UAIDExpiry).UnixMilli()
	var recs []*kgo.Record
	for _, v := range part.forgetToWrite {
		recs = append(recs, p.cfg.Names.ChannelForget(schema.UAID(v.uaid).String(), v.ch, v.off, part.p))
	}
	for key := range part.unregToWrite {
		var uaid, ch [16]byte
		copy(uaid[:], key[:16])
		copy(ch[:], key[16:])
		list := part.gone[uaid]
		i := goneFind(list, ch)
		if i < 0 {
			continue
		}
		if v := goneSlotAt(uaid, list, i); v.ms >= cutoff { // older: the sweep forgets it
			if rec, err := p.cfg.Names.UnregisteredRecord(schema.UAID(uaid).String(), ch, v.off, v.ms, part.p); err == nil {
				recs = append(recs, rec)
			}
		}
	}
	if len(recs) == 0 {
		part.forgetToWrite, part.unregToWrite = nil, nil
		return nil
	}
	if err := p.produce(ctx, producer, recs); err != nil {
		return fmt.Errorf("write unregistered channel records of partition %d: %w", part.p, err)
	}
	p.extra.unregCapped.Add(int64(len(part.forgetToWrite)))
	p.log.Info("wrote unregistered channel records for older data", "partition", part.p, "unregistered", len(recs)-len(part.forgetToWrite), "forgotten", len(part.forgetToWrite))
	part.forgetToWrite, part.unregToWrite = nil, nil
	return nil
}

// channelLoadSnapshots reads the given pushlog.channels partitions from the
// earliest offset to their current high watermark and folds both formats.
// now (unix ms) stands for the unregister time of channels whose record
// has none.
func channelLoadSnapshots(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic string, partitions []int32, log *slog.Logger, quarantined *atomic.Int64, now int64) (map[int32]*channelPartition, error) {
	out := make(map[int32]*channelPartition, len(partitions))
	for _, partition := range partitions {
		out[partition] = newChannelPartition(partition)
	}
	targets, err := channelTargets(ctx, adm, topic, partitions)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return out, nil
	}
	offsets := make(map[int32]kgo.Offset, len(targets))
	for partition := range targets {
		offsets[partition] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))...)
	if err != nil {
		return nil, fmt.Errorf("snapshot reader: %w", err)
	}
	defer cl.Close()
	for len(targets) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load snapshots: %w", err)
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			part := out[r.Partition]
			if part == nil {
				return
			}
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			f, err := schema.DecodeChannels(r)
			if err != nil {
				channelLogSkip(log, r, err)
				return
			}
			if f.Snapshot != nil && len(f.Snapshot.GetChannels()) > MaxMigratedChannels {
				quarantined.Add(1)
				log.Error("QUARANTINED: oversized format-1 channel snapshot skipped; the UAID's state is rebuilt from the registrations log", "partition", r.Partition, "offset", r.Offset, "uaid", schema.UAID(f.UAID).String(), "channels", len(f.Snapshot.GetChannels()), "bytes", len(r.Value))
				delete(part.legacy, f.UAID)
				delete(part.resets, f.UAID)
				return
			}
			part.load(f, now)
		})
	}
	return out, nil
}

func newChannelPartition(p int32) *channelPartition {
	return &channelPartition{p: p, resets: make(map[[16]byte]resetInfo), legacy: make(map[[16]byte]chanUAID),
		gone: make(map[[16]byte]string), unregToWrite: make(map[goneKey]struct{})}
}

// load folds one decoded channels record into the partition's state; nowMs
// stands for an unregister time a record does not carry. Registered
// channels are not kept (their records stay in the log), except those of
// a format-1 snapshot until migrate has written them.
func (part *channelPartition) load(f schema.ChannelsFact, nowMs int64) {
	if f.Kind == schema.ChannelsSeen {
		return // the owner's, not ours: its offset says nothing of ours
	}
	part.next = max(part.next, f.RegOffset)
	u, legacy := part.legacy[f.UAID]
	if legacy {
		u.next = max(u.next, f.RegOffset)
	}
	switch f.Kind {
	case schema.ChannelsUAID:
		switch {
		case f.Deleted:
			delete(part.resets, f.UAID)
			delete(part.legacy, f.UAID)
			return
		case f.Snapshot != nil:
			// A format-1 snapshot is the whole state as of its offset.
			st := f.Snapshot
			u = chanUAID{next: st.GetRegistrationsOffset(), reset: st.GetUaidReset(), resetMs: st.GetResetMs()}
			part.dropGone(f.UAID)
			for _, c := range st.GetChannels() {
				id, err := schema.ParseChannelID(c.GetChannelId())
				if err != nil || u.find(id) >= 0 {
					continue
				}
				if u.reset || c.GetUnregistered() {
					// Format 1 kept unregistered channels for ever: they
					// get a value record (newest last in the snapshot).
					part.loadUnregistered(f.UAID, id, cmp.Or(c.GetChangedMs(), u.resetMs, nowMs), u.next)
					part.unregToWrite[goneKeyOf(f.UAID, id)] = struct{}{}
					continue
				}
				u.set(id, keyRef(c.GetKeyHash()))
			}
			part.setReset(f.UAID, u.reset, u.resetMs, u.next)
			part.legacy[f.UAID] = u
			return
		default:
			// A format-2 UAID record supersedes any format-1 snapshot
			// (migrate wrote the channels before it).
			part.setReset(f.UAID, f.State.GetUaidReset(), f.State.GetResetMs(), f.RegOffset)
			delete(part.legacy, f.UAID)
			return
		}
	case schema.ChannelsChannel:
		key := goneKeyOf(f.UAID, f.Channel)
		delete(part.unregToWrite, key)
		i := -1
		if legacy {
			i = u.find(f.Channel)
		}
		switch {
		case f.Unregistered():
			if i >= 0 {
				u.remove(i)
			}
			part.loadUnregistered(f.UAID, f.Channel, cmp.Or(f.ChangedMs, nowMs), f.RegOffset)
			if f.Deleted {
				// An older writer's tombstone: compaction will remove it,
				// so the channel gets a value record.
				part.unregToWrite[key] = struct{}{}
			}
		case f.Deleted: // forgotten
			part.reregister(f.UAID, f.Channel)
		default:
			part.reregister(f.UAID, f.Channel)
			if legacy {
				u.set(f.Channel, keyRef(f.Entry.GetKeyHash()))
			}
		}
	}
	if legacy {
		part.legacy[f.UAID] = u
	}
}

// setReset records whether uaid is reset, as of registrations offset off.
func (part *channelPartition) setReset(uaid [16]byte, reset bool, ms, off int64) {
	if !reset {
		delete(part.resets, uaid)
		return
	}
	part.resets[uaid] = resetInfo{ms: ms, off: off}
}

// loadUnregistered records a loaded unregistered channel; the ones it
// pushes past MaxUnregisteredKept are forgotten by migrate.
func (part *channelPartition) loadUnregistered(uaid, ch [16]byte, ms, off int64) {
	for _, v := range part.unregister(uaid, ch, ms, off) {
		delete(part.unregToWrite, goneKeyOf(v.uaid, v.ch))
		part.forgetToWrite = append(part.forgetToWrite, v)
	}
}

// dropGone forgets every unregistered channel of uaid (a format-1 snapshot
// replaces them).
func (part *channelPartition) dropGone(uaid [16]byte) {
	list := part.gone[uaid]
	for i := 0; i+goneSlot <= len(list); i += goneSlot {
		delete(part.unregToWrite, goneKeyOf(uaid, goneSlotAt(uaid, list, i).ch))
	}
	delete(part.gone, uaid)
}

// channelTargets returns, for each partition of topic in partitions (all
// when nil) that holds records, the high watermark at call time: reading up
// to it catches up with everything written before.
func channelTargets(ctx context.Context, adm *kadm.Client, topic string, partitions []int32) (map[int32]int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	targets := make(map[int32]int64)
	var ferr error
	ends.Each(func(end kadm.ListedOffset) {
		if end.Topic != topic || (partitions != nil && !slices.Contains(partitions, end.Partition)) {
			return
		}
		start, ok := starts.Lookup(topic, end.Partition)
		switch {
		case end.Err != nil:
			ferr = fmt.Errorf("end offset of %s/%d: %w", topic, end.Partition, end.Err)
		case !ok:
			ferr = fmt.Errorf("no start offset for %s/%d", topic, end.Partition)
		case start.Err != nil:
			ferr = fmt.Errorf("start offset of %s/%d: %w", topic, end.Partition, start.Err)
		case end.Offset > start.Offset:
			targets[end.Partition] = end.Offset
		}
	})
	if ferr != nil {
		return nil, ferr
	}
	for _, partition := range partitions {
		if _, ok := ends.Lookup(topic, partition); !ok {
			return nil, fmt.Errorf("%s has no partition %d: topics must be co-partitioned", topic, partition)
		}
	}
	return targets, nil
}

// channelLogSkip logs a record that cannot be folded. Corrupt records stay in
// Kafka for inspection; unknown types come from a newer writer.
func channelLogSkip(log *slog.Logger, r *kgo.Record, err error) {
	logf := log.Warn
	if errors.Is(err, schema.ErrUnknownType) {
		logf = log.Debug
	}
	logf("skipping record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
}

// onRevoked drops the state of revoked partitions. Polled batches are
// already committed (BlockRebalanceOnPoll); a commit that failed then is
// retried here unless its snapshots were never written.
func (p *ChannelProjector) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if !p.dirty.Load() {
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			p.log.Warn("commit on revoke", "err", err)
		}
	}
	p.drop(revoked[p.cfg.Names.Registrations])
}

// onLost drops the state of partitions lost without a clean revoke; their
// offsets may belong to another member now, so nothing is committed.
func (p *ChannelProjector) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.drop(lost[p.cfg.Names.Registrations])
}

func (p *ChannelProjector) drop(partitions []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, partition := range partitions {
		delete(p.parts, partition)
	}
	if len(partitions) > 0 {
		p.log.Info("dropped channel state", "partitions", partitions)
	}
}

func (p *ChannelProjector) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.parts)
}
