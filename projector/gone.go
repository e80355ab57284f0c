package projector

import (
	"bytes"
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
	"github.com/pushlog/pushlog/schema/metrics"
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
}

// GoneSet answers "is this subscription gone?" for ingest (410 without
// asking anyone). It folds every partition of pushlog.channels (snapshots)
// and pushlog.registrations (the last week of events) with the semantics
// of schema.ApplyRegistration, but keeps only the gone facts: reset UAIDs
// and unregistered channels. UAIDs with only live channels cost nothing.
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

	started atomic.Bool
	ready   chan struct{}
	done    chan struct{}
	runErr  error // written before done is closed
}

const goneShardCount = 64

type goneShard struct {
	mu    sync.RWMutex
	m     map[[16]byte]goneEntry
	facts int // reset UAIDs + unregistered channels, for Len
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
}

func (e *goneEntry) facts() int {
	n := len(e.chans)
	if e.reset {
		n++
	}
	return n
}

func (e *goneEntry) empty() bool { return !e.reset && !e.revived && len(e.chans) == 0 }

// NewGoneSet returns an empty gone set; Run fills it.
func NewGoneSet(cfg GoneSetConfig) (*GoneSet, error) {
	if len(cfg.ClientOpts) == 0 {
		return nil, errors.New("gone set: no Kafka client options (seed brokers)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Names.Messages == "" {
		cfg.Names = schema.DefaultNames()
	}
	g := &GoneSet{
		names: cfg.Names,
		log:   log.With("role", "gone-set"),
		opts:  slices.Clone(cfg.ClientOpts),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range g.shards {
		g.shards[i].m = make(map[[16]byte]goneEntry)
	}
	if err := metrics.Register(cfg.Metrics, g.collectors()...); err != nil {
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
	err = goneRetry(ctx, g.log, "list high watermarks", func() (err error) {
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
	err = goneRetry(ctx, g.log, "list registrations start offsets", func() (err error) {
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
	cl, err := kgo.NewClient(append(slices.Clone(g.opts),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("gone set: %s reader: %w", topic, err)
	}
	return cl, nil
}

// consume folds records from cl. With targets it returns once every
// partition in targets reached its offset; without, it runs until ctx ends
// (returning ctx's error). bootstrap marks the initial snapshot load.
func (g *GoneSet) consume(ctx context.Context, cl *kgo.Client, targets map[int32]int64, bootstrap bool) error {
	for targets == nil || len(targets) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		if fetches.IsClientClosed() {
			return kgo.ErrClientClosed
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			g.log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			g.applyRecord(r, bootstrap)
		})
	}
	return nil
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

// goneRetry calls fn until it succeeds or ctx ends, with a capped backoff.
func goneRetry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.Warn(what+" failed, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// applyRecord folds one record of either topic; corrupt ones are skipped.
func (g *GoneSet) applyRecord(r *kgo.Record, bootstrap bool) {
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
	switch r.Topic {
	case g.names.Channels:
		st := ev.GetChannelState()
		if st == nil {
			g.log.Warn("skipping non-snapshot event on channels topic", "partition", r.Partition, "offset", r.Offset, "type", schema.TypeName(ev))
			return
		}
		g.applySnapshot(uaid, st, bootstrap)
	case g.names.Registrations:
		g.applyRegistration(uaid, ev, r.Offset)
	}
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
	e := goneEntry{reset: st.GetUaidReset(), next: st.GetRegistrationsOffset()}
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
	slices.SortFunc(e.chans, goneCompare)
	e.chans = slices.Clip(slices.CompactFunc(e.chans, func(a, b [16]byte) bool { return a == b }))
	sh.store(uaid, old, e)
}

// applyRegistration folds one registrations event the way
// schema.ApplyRegistration does, restricted to gone facts.
func (g *GoneSet) applyRegistration(uaid [16]byte, ev *pb.Event, offset int64) {
	sh := g.shard(uaid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[uaid]
	if ok && offset < old.next {
		return // already in the snapshot this entry came from
	}
	e := old
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		if e.reset {
			e.reset = false
			e.revived = true
		}
		if id, ok := g.channelID(b.ChannelRegistered.GetChannelId()); ok {
			if i, found := slices.BinarySearchFunc(e.chans, id, goneCompare); found {
				e.chans = slices.Delete(e.chans, i, i+1)
			}
		}
	case *pb.Event_ChannelUnregistered:
		if id, ok := g.channelID(b.ChannelUnregistered.GetChannelId()); ok {
			if i, found := slices.BinarySearchFunc(e.chans, id, goneCompare); !found {
				e.chans = slices.Insert(e.chans, i, id)
			}
		}
	case *pb.Event_UserReset:
		e.reset = true
	default:
		return // not a registration event
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
