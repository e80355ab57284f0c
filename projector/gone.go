package projector

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// GoneSetConfig configures a GoneSet.
type GoneSetConfig struct {
	// Names are the topic names; zero means schema.DefaultNames().
	Names schema.Names
	// ClientOpts connect to Kafka (seed brokers, TLS, SASL, logger). The
	// gone set consumes directly, without a consumer group.
	ClientOpts []kgo.Opt
	Logger     *slog.Logger
	// Metrics registers the set's size (pushlog_ingest_gone_entries); nil: none.
	Metrics prometheus.Registerer
	// Expiry is how long a gone fact is kept after its last change (the
	// UAID expiry: an expired UAID's endpoints answer 410 that long);
	// zero means DefaultUAIDExpiry.
	Expiry time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// GoneSet answers "is this subscription gone?" for ingest (410 without
// asking anyone). It folds every partition of pushlog.channels (both
// formats) and pushlog.registrations (the last week of events) with the
// semantics of schema.ApplyRegistration, but keeps only the gone facts:
// reset UAIDs and unregistered channels. UAIDs with only live channels cost
// nothing.
//
// Unregistered channels are learned from the channel projector's
// unregistered records only (values with unregistered set; tombstones
// without the pushlog-forget header from older writers), never from
// ChannelUnregistered events: the projector writes one only for a channel
// that was registered, so the unregister of a channel never registered (an
// attacker's flood) leaves the set unchanged. Those records stay in the
// compacted topic until the UAID expiry, so a set started after the
// registrations left the log by retention still answers 410 for them; the
// projector's forget tombstone (expiry, or past its per-UAID bound) removes
// the channel. Registrations and resets are folded from the registrations log
// as well (faster); a late unregistered record or UAID record older than a
// registration folded meanwhile is recognized by its registrations offset
// (the entry's next, or the short-lived recent-registrations memory) and
// ignored. Facts age out Expiry after their last change.
//
// One gap is inherent to keeping so little: a reset UAID that registers
// again ("revived") leaves the channels it had before the reset
// unregistered, and a fold that never stored live channels cannot name
// them. Until the projector's next snapshot of that UAID arrives (it
// does, moments later) the set answers "not gone" for them: the safe side,
// since the owner drops messages to unregistered channels anyway, while a
// false 410 would make the sender delete a live subscription.
type GoneSet struct {
	names  schema.Names
	log    *slog.Logger
	opts   []kgo.Opt
	shards [goneShardCount]goneShard

	expiry time.Duration
	now    func() time.Time

	started   atomic.Bool
	lastSweep atomic.Uint32
	aged      atomic.Int64 // entries removed by age, for the metric
	capped    atomic.Int64 // channel facts forgotten past goneMaxChannels
	ready     chan struct{}
	done      chan struct{}
	runErr    error // written before done is closed
}

const goneShardCount = 64

// goneMaxChannels bounds the unregistered channels remembered per UAID
// (a real profile has far fewer; the connector allows --max-channels
// registered at once).
const goneMaxChannels = 1024

type goneShard struct {
	mu    sync.RWMutex
	m     map[[16]byte]goneEntry
	facts int // reset UAIDs + unregistered channels, for Len
	// recent remembers, for a few minutes, the registrations offset of
	// each registration folded (channel and UAID level), so an
	// unregistered record or UAID record the projector wrote before it,
	// arriving later, is recognized as stale even when the UAID has no
	// entry.
	recent map[goneKey]goneRecent
}

// goneKey is a UAID and a channel (zero for the UAID itself).
type goneKey [32]byte

type goneRecent struct {
	off   int64
	atMin uint32
}

// goneRecentFor is how long recent registrations are remembered: far
// longer than the projector's usual lag behind the registrations log, short
// enough to stay small under a registration flood.
const goneRecentFor = 3 // minutes

func goneKeyOf(uaid, ch [16]byte) goneKey {
	var k goneKey
	copy(k[:16], uaid[:])
	copy(k[16:], ch[:])
	return k
}

// goneEntry holds the gone facts of one UAID.
type goneEntry struct {
	chans [][16]byte // unregistered channels, sorted
	// next is the registrations offset from which events of this UAID are
	// folded; lower ones are already in the snapshot it came from (the
	// same skip as ChannelState.registrations_offset).
	next  int64
	reset bool
	// revived: reset, then registered again since the last snapshot; the
	// channels it had before the reset are unknown until the next one.
	revived bool
	// atMin is when the entry last changed (minutes since the epoch): it
	// ages out Expiry later.
	atMin uint32
}

func goneMinutes(t time.Time) uint32 { return uint32(max(t.Unix()/60, 0)) }

// facts counts a reset UAID once: it covers its channels, which are kept
// only for a revival (they stay gone after it).
func (e *goneEntry) facts() int {
	if e.reset {
		return 1
	}
	return len(e.chans)
}

func (e *goneEntry) empty() bool { return !e.reset && !e.revived && len(e.chans) == 0 }

// withDefaults checks c and fills in the defaults of its zero fields; a
// negative Expiry means the default too.
func (c GoneSetConfig) withDefaults() (GoneSetConfig, error) {
	if len(c.ClientOpts) == 0 {
		return c, errors.New("gone set: no Kafka client options (seed brokers)")
	}
	if c.Names.Messages == "" {
		c.Names = schema.DefaultNames()
	}
	c.Expiry = cmp.Or(max(c.Expiry, 0), DefaultUAIDExpiry)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// NewGoneSet returns an empty gone set; Run fills it.
func NewGoneSet(cfg GoneSetConfig) (*GoneSet, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &GoneSet{
		expiry: cfg.Expiry,
		now:    cfg.Now,
		names:  cfg.Names,
		log:    cfg.Logger.With("role", "gone-set"),
		opts:   slices.Clone(cfg.ClientOpts),
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range g.shards {
		g.shards[i].m = make(map[[16]byte]goneEntry)
		g.shards[i].recent = make(map[goneKey]goneRecent)
	}
	aged := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pushlog_ingest_gone_aged_total",
		Help: "UAIDs whose gone facts aged out of ingest's gone set (unchanged for the UAID expiry).",
	}, func() float64 { return float64(g.aged.Load()) })
	capped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pushlog_ingest_gone_capped_total",
		Help: "Unregistered channels forgotten by ingest's gone set past its per-UAID bound (they then get 201, the owner drops what it knows is gone).",
	}, func() float64 { return float64(g.capped.Load()) })
	if err := register(cfg.Metrics, append(g.collectors(), aged, capped)...); err != nil {
		return nil, fmt.Errorf("gone set: %w", err)
	}
	return g, nil
}

// Gone reports whether the channel of uaid was unregistered (channelGone)
// or the whole UAID reset (uaidReset, and then channelGone too), the cases
// of schema.ChannelGone. Malformed ids are never gone: the endpoint token
// that carried them was authenticated, so they cannot occur in practice.
// Safe for concurrent use.
func (g *GoneSet) Gone(uaid, channelID string) (channelGone, uaidReset bool) {
	u, err := schema.ParseUAID(uaid)
	if err != nil {
		return false, false
	}
	sh := g.shard(u)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e, ok := sh.m[u]
	if !ok {
		return false, false
	}
	if e.reset {
		return true, true
	}
	ch, err := schema.ParseChannelID(channelID)
	if err != nil {
		return false, false
	}
	_, found := slices.BinarySearchFunc(e.chans, ch, goneCompare)
	return found, false
}

// Len returns the number of gone facts held: reset UAIDs plus unregistered
// channels.
func (g *GoneSet) Len() int {
	n := 0
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.RLock()
		n += sh.facts
		sh.mu.RUnlock()
	}
	return n
}

// WaitReady returns nil once the set has caught up with both topics as they
// were when Run started, or an error when ctx ends first or Run stopped.
func (g *GoneSet) WaitReady(ctx context.Context) error {
	select {
	case <-g.ready:
		return nil
	default:
	}
	select {
	case <-g.ready:
		return nil
	case <-g.done:
		if g.runErr != nil {
			return fmt.Errorf("gone set stopped before it was ready: %w", g.runErr)
		}
		return errors.New("gone set stopped before it was ready")
	case <-ctx.Done():
		return fmt.Errorf("gone set not ready: %w", ctx.Err())
	}
}

// Run consumes until ctx is canceled (then it returns nil). It first reads
// every snapshot in pushlog.channels up to the high watermarks at start,
// then pushlog.registrations from its earliest offset, and is ready once
// that reaches its high watermarks at start too. Both topics keep being
// consumed afterwards, each by its own client (so adding registrations
// never waits for a long poll on caught-up snapshots). Run may be called
// once.
func (g *GoneSet) Run(ctx context.Context) (err error) {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gone set: Run called twice")
	}
	defer func() {
		g.runErr = err
		close(g.done)
	}()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A failure caused by the caller's cancellation is a clean stop.
	stopped := func(err error) error {
		if parent.Err() != nil {
			return nil
		}
		return err
	}

	snaps, err := g.newReader(g.names.Channels)
	if err != nil {
		return err
	}
	defer snaps.Close()
	adm := kadm.NewClient(snaps)
	// Kafka may still be starting, or the topics not yet created: keep
	// trying; WaitReady's caller bounds the wait.
	var snapTargets, regTargets map[int32]int64
	err = retryKafka(ctx, g.log.Warn, "list high watermarks", func() (err error) {
		if snapTargets, err = channelTargets(ctx, adm, g.names.Channels, nil); err != nil {
			return err
		}
		regTargets, err = channelTargets(ctx, adm, g.names.Registrations, nil)
		return err
	})
	if err != nil {
		return stopped(fmt.Errorf("gone set: %w", err))
	}
	if err := g.consume(ctx, snaps, snapTargets, true); err != nil {
		return stopped(fmt.Errorf("gone set: load snapshots: %w", err))
	}
	g.log.Info("snapshots loaded", "gone_facts", g.Len())

	// From here on registrations are folded and snapshots are live.
	err = retryKafka(ctx, g.log.Warn, "list registrations start offsets", func() (err error) {
		regTargets, err = goneLiveTargets(ctx, adm, g.names.Registrations, regTargets)
		return err
	})
	if err != nil {
		return stopped(fmt.Errorf("gone set: %w", err))
	}
	regs, err := g.newReader(g.names.Registrations)
	if err != nil {
		return err
	}
	defer regs.Close()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errc <- g.consume(ctx, snaps, nil, false)
	}()
	go func() {
		defer wg.Done()
		if err := g.consume(ctx, regs, regTargets, false); err != nil {
			errc <- err
			return
		}
		close(g.ready)
		g.log.Info("gone set ready", "gone_facts", g.Len())
		errc <- g.consume(ctx, regs, nil, false)
	}()
	err = <-errc
	cancel()
	wg.Wait()
	return stopped(fmt.Errorf("gone set: %w", err))
}

func (g *GoneSet) newReader(topic string) (*kgo.Client, error) {
	return startReader(g.opts, "gone set", topic)
}

// consume folds records from cl. With targets it returns once every
// partition in targets reached its offset; without, it runs until ctx ends
// (returning ctx's error). bootstrap marks the initial snapshot load.
func (g *GoneSet) consume(ctx context.Context, cl *kgo.Client, targets map[int32]int64, bootstrap bool) error {
	return consumeRecords(ctx, cl, g.log, targets, func(r *kgo.Record) { g.applyRecord(r, bootstrap) }, g.maybeSweep)
}

// maybeSweep ages facts out at most once a minute (both readers call it).
func (g *GoneSet) maybeSweep() {
	now := goneMinutes(g.now())
	last := g.lastSweep.Load()
	if now <= last || !g.lastSweep.CompareAndSwap(last, now) {
		return
	}
	g.sweep(now)
}

// sweep removes entries unchanged for Expiry and recent registrations
// older than goneRecentFor.
func (g *GoneSet) sweep(nowMin uint32) {
	horizon := uint32(g.expiry / time.Minute)
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for id, e := range sh.m {
			if nowMin-e.atMin >= horizon && nowMin >= e.atMin {
				sh.store(id, e, goneEntry{})
				g.aged.Add(1)
			}
		}
		for k, r := range sh.recent {
			if nowMin-r.atMin >= goneRecentFor && nowMin >= r.atMin {
				delete(sh.recent, k)
			}
		}
		sh.mu.Unlock()
	}
}

// goneLiveTargets drops the registrations partitions whose target offsets
// retention deleted meanwhile: nothing would ever reach them.
func goneLiveTargets(ctx context.Context, adm *kadm.Client, topic string, targets map[int32]int64) (map[int32]int64, error) {
	if len(targets) == 0 {
		return targets, nil
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	for partition, next := range targets {
		if s, ok := starts.Lookup(topic, partition); ok && s.Err == nil && s.Offset >= next {
			delete(targets, partition)
		}
	}
	return targets, nil
}

// applyRecord folds one record of either topic; corrupt ones are skipped.
func (g *GoneSet) applyRecord(r *kgo.Record, bootstrap bool) {
	if r.Topic == g.names.Channels {
		f, err := schema.DecodeChannels(r)
		if err != nil {
			channelLogSkip(g.log, r, err)
			return
		}
		g.applyChannels(f, bootstrap)
		return
	}
	ev, err := schema.Decode(r)
	if err != nil {
		channelLogSkip(g.log, r, err)
		return
	}
	uaid, err := schema.ParseUAID(ev.GetUaid())
	if err != nil { // Decode validates the UAID; kept for safety
		channelLogSkip(g.log, r, err)
		return
	}
	if r.Topic == g.names.Registrations {
		g.applyRegistration(uaid, ev, r.Offset)
	}
}

// applyChannels folds a pushlog.channels record of either format.
func (g *GoneSet) applyChannels(f schema.ChannelsFact, bootstrap bool) {
	switch {
	case f.Snapshot != nil:
		g.applySnapshot(f.UAID, f.Snapshot, bootstrap)
	case f.Kind == schema.ChannelsChannel:
		g.applyChannelFact(f, bootstrap)
	case f.Kind == schema.ChannelsUAID:
		g.applyUAIDFact(f, bootstrap)
	}
}

// stale reports whether a channels record written for registrations
// before regOffset is older than a registration of key already folded.
// The caller holds the lock.
func (sh *goneShard) stale(key goneKey, regOffset int64) bool {
	r, ok := sh.recent[key]
	return ok && r.off >= regOffset
}

// applyChannelFact folds a format-2 channel record: an unregistered record
// (see schema.ChannelsFact.Unregistered) is an unregistered (or reset)
// channel that was registered; a registered value or a forget tombstone
// is not gone.
func (g *GoneSet) applyChannelFact(f schema.ChannelsFact, bootstrap bool) {
	sh := g.shard(f.UAID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.m[f.UAID]
	e := old
	if !bootstrap && sh.stale(goneKeyOf(f.UAID, f.Channel), f.RegOffset) {
		return // a registration of this channel folded meanwhile is newer
	}
	i, found := slices.BinarySearchFunc(e.chans, f.Channel, goneCompare)
	unregistered := f.Unregistered()
	switch {
	case unregistered && !found:
		e.chans = slices.Insert(slices.Clone(e.chans), i, f.Channel)
		if len(e.chans) > goneMaxChannels {
			// A register/unregister loop must not grow the set without
			// bound: forget one (it then answers "not gone", the safe side).
			j := int(f.Channel[0]) % len(e.chans)
			if j == i {
				j = (j + 1) % len(e.chans)
			}
			e.chans = slices.Delete(e.chans, j, j+1)
			g.capped.Add(1)
		}
	case !unregistered && found:
		e.chans = slices.Delete(slices.Clone(e.chans), i, i+1)
	default:
		return
	}
	e.next = max(e.next, f.RegOffset)
	e.atMin = goneMinutes(g.now())
	sh.store(f.UAID, old, e)
}

// applyUAIDFact folds a format-2 UAID record: reset or revived; its
// tombstone (the UAID expired) forgets the UAID.
func (g *GoneSet) applyUAIDFact(f schema.ChannelsFact, bootstrap bool) {
	sh := g.shard(f.UAID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.m[f.UAID]
	if f.Deleted {
		sh.store(f.UAID, old, goneEntry{})
		return
	}
	if !bootstrap && sh.stale(goneKeyOf(f.UAID, [16]byte{}), f.RegOffset) {
		return // a registration (revival) folded meanwhile is newer
	}
	e := old
	e.reset = f.State.GetUaidReset()
	if e.reset {
		e.revived = false
	}
	e.next = max(e.next, f.RegOffset)
	e.atMin = goneMinutes(g.now())
	sh.store(f.UAID, old, e)
}

// applySnapshot folds a ChannelState. While bootstrapping (no registration
// folded yet) the last snapshot of a UAID is its state. Later the
// registrations themselves are folded, and a snapshot may be older or newer
// than them, so it is used only for a revived UAID and only when it covers
// every event of that UAID folded so far: then it is exact, and it names the
// channels the lean fold could not know.
func (g *GoneSet) applySnapshot(uaid [16]byte, st *pb.ChannelState, bootstrap bool) {
	sh := g.shard(uaid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[uaid]
	if !bootstrap && (!ok || !old.revived || st.GetRegistrationsOffset() < old.next) {
		return
	}
	e := goneEntry{reset: st.GetUaidReset(), next: st.GetRegistrationsOffset(), atMin: goneMinutes(g.now())}
	for _, ch := range st.GetChannels() {
		if !ch.GetUnregistered() {
			continue
		}
		id, err := schema.ParseChannelID(ch.GetChannelId())
		if err != nil {
			g.log.Warn("skipping malformed channel id in snapshot", "channel_id", ch.GetChannelId())
			continue
		}
		e.chans = append(e.chans, id)
	}
	if n := len(e.chans); n > goneMaxChannels {
		// A format-1 snapshot of a flooded UAID (issue 10): keep the
		// newest (snapshots list channels oldest first).
		e.chans = e.chans[n-goneMaxChannels:]
		g.capped.Add(int64(n - goneMaxChannels))
	}
	slices.SortFunc(e.chans, goneCompare)
	e.chans = slices.Clip(slices.CompactFunc(e.chans, func(a, b [16]byte) bool { return a == b }))
	sh.store(uaid, old, e)
}

// applyRegistration folds one registrations event the way
// schema.ApplyRegistration does, restricted to gone facts. An unregister is
// not a fact by itself (the channel may never have been registered): the
// projector's unregistered record brings it.
func (g *GoneSet) applyRegistration(uaid [16]byte, ev *pb.Event, offset int64) {
	sh := g.shard(uaid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[uaid]
	if ok && offset < old.next {
		return // already in the snapshot this entry came from
	}
	e := old
	nowMin := goneMinutes(g.now())
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		if e.reset {
			// A revival: a UAID record of the reset, written before it
			// and read after it, must not reset it again.
			sh.recent[goneKeyOf(uaid, [16]byte{})] = goneRecent{off: offset, atMin: nowMin}
			e.reset = false
			e.revived = true
		}
		if id, valid := g.channelID(b.ChannelRegistered.GetChannelId()); valid {
			if ok {
				// Only UAIDs with gone facts are guarded, so a flood of
				// new UAIDs costs nothing here. For the others a late
				// unregistered record of a re-registered channel is corrected by
				// the entry record the projector writes right after it.
				sh.recent[goneKeyOf(uaid, id)] = goneRecent{off: offset, atMin: nowMin}
			}
			if i, found := slices.BinarySearchFunc(e.chans, id, goneCompare); found {
				e.chans = slices.Delete(slices.Clone(e.chans), i, i+1)
			}
		}
	case *pb.Event_ChannelUnregistered:
		if !ok {
			return // nothing lasting for a UAID without gone facts
		}
	case *pb.Event_UserReset:
		e.reset = true
	default:
		return // not a registration event
	}
	if _, unreg := ev.GetBody().(*pb.Event_ChannelUnregistered); !unreg {
		e.atMin = nowMin // an unregister changes nothing: no refresh
	}
	e.next = offset + 1
	sh.store(uaid, old, e)
}

func (g *GoneSet) channelID(s string) ([16]byte, bool) {
	id, err := schema.ParseChannelID(s)
	if err != nil {
		g.log.Warn("skipping malformed channel id in registration", "channel_id", s)
		return id, false
	}
	return id, true
}

// store replaces the entry of uaid (old is the previous one, zero if none).
// The caller holds the write lock.
func (sh *goneShard) store(uaid [16]byte, old, e goneEntry) {
	sh.facts += e.facts() - old.facts()
	if e.empty() {
		delete(sh.m, uaid)
		return
	}
	sh.m[uaid] = e
}

func (g *GoneSet) shard(uaid [16]byte) *goneShard {
	return &g.shards[int(uaid[15])%goneShardCount]
}

func goneCompare(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) }
