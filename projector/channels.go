package projector

import (
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

// ChannelDefaultGroup is the consumer group of the channel-state projector.
const ChannelDefaultGroup = "pushlog-channels"

// ChannelProjectorConfig configures a ChannelProjector.
type ChannelProjectorConfig struct {
	// ClientOpts connect to Kafka (seed brokers, TLS, SASL, logger). The
	// projector adds its own consumer options to them.
	ClientOpts []kgo.Opt
	// Producer writes the snapshots to pushlog.channels. It must use
	// acks=all and the default (murmur2) partitioner so a snapshot lands on
	// the partition of its UAID. Nil: Run creates one from ClientOpts.
	Producer *kgo.Client
	// Group is the consumer group over pushlog.registrations; empty means
	// ChannelDefaultGroup.
	Group string
	// Names are the topic names; zero means schema.DefaultNames().
	Names  schema.Names
	Logger *slog.Logger
	// Metrics registers the projector's series (batches, records,
	// snapshots); nil: no metrics.
	Metrics prometheus.Registerer
}

// ChannelProjector folds pushlog.registrations into per-UAID channel state
// and writes every changed state to the compacted pushlog.channels topic,
// the snapshot that partition owners and the ingest gone set bootstrap from.
//
// Per poll it produces all changed snapshots, waits until they are durable
// and only then commits the registrations offsets, so a crash never loses a
// registration from the snapshots. A replay after a crash is harmless: each
// snapshot carries the next registrations offset to fold and
// schema.ApplyRegistration skips events below it.
type ChannelProjector struct {
	cfg ChannelProjectorConfig
	log *slog.Logger

	mu    sync.Mutex
	parts map[int32]*channelPartition // loaded state of owned partitions

	// dirty is set while polled records have snapshots that are not yet
	// durable; the revoke callback must not commit their offsets then.
	dirty   atomic.Bool
	running atomic.Bool
	stats   channelCounters
}

// channelPartition is the in-memory channel state of one partition.
type channelPartition struct {
	states map[string]*pb.ChannelState // by UAID as written in the events
}

// NewChannelProjector validates cfg and returns a projector; Run starts it.
func NewChannelProjector(cfg ChannelProjectorConfig) (*ChannelProjector, error) {
	if len(cfg.ClientOpts) == 0 {
		return nil, errors.New("channel projector: no Kafka client options (seed brokers)")
	}
	if cfg.Names.Messages == "" {
		cfg.Names = schema.DefaultNames()
	}
	if cfg.Group == "" {
		cfg.Group = cfg.Names.Group("channels")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &ChannelProjector{
		cfg:   cfg,
		log:   log.With("role", "channel-projector", "group", cfg.Group),
		parts: make(map[int32]*channelPartition),
	}
	if err := metrics.Register(cfg.Metrics, p.collectors()...); err != nil {
		return nil, fmt.Errorf("channel projector: %w", err)
	}
	return p, nil
}

// Run joins the consumer group and projects until ctx is canceled (then it
// returns nil) or a snapshot cannot be loaded or written (then it returns
// the error; the uncommitted registrations are folded again by whoever
// owns the partition next, so Run may simply be called again).
func (p *ChannelProjector) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("channel projector: already running")
	}
	defer p.running.Store(false)
	p.dirty.Store(false)
	producer := p.cfg.Producer
	if producer == nil {
		var err error
		producer, err = kgo.NewClient(append(slices.Clone(p.cfg.ClientOpts), kgo.RequiredAcks(kgo.AllISRAcks()))...)
		if err != nil {
			return fmt.Errorf("channel projector: producer: %w", err)
		}
		defer producer.Close()
	}
	cl, err := kgo.NewClient(append(slices.Clone(p.cfg.ClientOpts),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Names.Registrations),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// Revocation waits until a polled batch is durable and committed,
		// so offsets are never committed for a partition we lost.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onLost),
	)...)
	if err != nil {
		return fmt.Errorf("channel projector: consumer: %w", err)
	}
	defer channelCloseBounded(cl, channelCloseTimeout, p.log)
	defer p.dropAll()
	adm := kadm.NewClient(cl)

	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			if fetches.NumRecords() > 0 {
				p.dirty.Store(true) // polled but never folded: not committable
			}
			cl.AllowRebalance()
			return nil
		}
		err := p.processBatch(ctx, cl, adm, producer, fetches)
		cl.AllowRebalance()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("channel projector: %w", err)
		}
	}
}

// channelCloseTimeout bounds how long shutdown waits for the consumer
// group client to close.
const channelCloseTimeout = 5 * time.Second

// channelCloseBounded closes a consumer group client, waiting at most d.
// kgo sends JoinGroup with the client's own context, so Close waits for a
// pending join, and the broker holds a join until every earlier member has
// rejoined or expired: after a kill -9 that is the dead member's session
// timeout (45 s by default), and SIGTERM would hang as long. Not waiting
// loses nothing: the close goes on in the background, and uncommitted
// registrations are folded again by the next owner of the partition.
func channelCloseBounded(cl *kgo.Client, d time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		cl.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		log.Warn("channel projector: consumer still closing (a group join is pending at the broker); not waiting", "waited", d)
	}
}

// processBatch folds one poll, makes its snapshots durable and commits.
func (p *ChannelProjector) processBatch(ctx context.Context, cl *kgo.Client, adm *kadm.Client, producer *kgo.Client, fetches kgo.Fetches) error {
	p.dirty.Store(true)
	fetches.EachError(func(topic string, part int32, err error) {
		p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
	})
	parts, err := p.ensureLoaded(ctx, adm, fetches)
	if err != nil {
		return err
	}
	changed := make(map[int32]map[string]struct{})
	fetches.EachRecord(func(r *kgo.Record) {
		part := parts[r.Partition]
		if part == nil {
			return // not ours (revoked meanwhile)
		}
		if uaid, ok := p.fold(part, r); ok {
			if changed[r.Partition] == nil {
				changed[r.Partition] = make(map[string]struct{})
			}
			changed[r.Partition][uaid] = struct{}{}
		}
	})
	recs, err := channelSnapshotRecords(p.cfg.Names, parts, changed, time.Now())
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("produce %d snapshots: %w", len(recs), err)
		}
	}
	p.dirty.Store(false)
	p.stats.batches.Add(1)
	p.stats.records.Add(int64(fetches.NumRecords()))
	p.stats.snapshots.Add(int64(len(recs)))
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		// Harmless: the next commit covers these offsets, and a replay
		// of them is skipped by the snapshots' registrations offsets.
		p.log.Warn("commit registrations offsets", "err", err)
	}
	return nil
}

// fold applies one registrations record and reports the UAID when its state
// changed. Corrupt and unknown records are logged and skipped.
func (p *ChannelProjector) fold(part *channelPartition, r *kgo.Record) (string, bool) {
	ev, err := schema.Decode(r)
	if err != nil {
		channelLogSkip(p.log, r, err)
		return "", false
	}
	st := part.states[ev.GetUaid()]
	if st == nil {
		st = &pb.ChannelState{}
		part.states[ev.GetUaid()] = st
	}
	return ev.GetUaid(), schema.ApplyRegistration(st, ev, r.Offset)
}

// channelSnapshotRecords encodes the current state of every changed UAID
// once, however often it changed within the poll.
func channelSnapshotRecords(names schema.Names, parts map[int32]*channelPartition, changed map[int32]map[string]struct{}, now time.Time) ([]*kgo.Record, error) {
	var recs []*kgo.Record
	for partition, uaids := range changed {
		for uaid := range uaids {
			rec, err := channelSnapshotRecord(names, uaid, parts[partition].states[uaid], now)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// channelSnapshotRecord encodes st as a ChannelState event keyed by uaid.
func channelSnapshotRecord(names schema.Names, uaid string, st *pb.ChannelState, now time.Time) (*kgo.Record, error) {
	ev := schema.NewEvent(uaid, now)
	ev.Body = &pb.Event_ChannelState{ChannelState: st}
	rec, err := names.Record(ev)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of %s: %w", uaid, err)
	}
	return rec, nil
}

// ensureLoaded returns the state of every partition in fetches, loading
// from pushlog.channels the ones this member just started to own.
func (p *ChannelProjector) ensureLoaded(ctx context.Context, adm *kadm.Client, fetches kgo.Fetches) (map[int32]*channelPartition, error) {
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
	loaded, err := channelLoadSnapshots(ctx, p.cfg.ClientOpts, adm, p.cfg.Names.Channels, missing, p.log)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for partition, states := range loaded {
		part := &channelPartition{states: states}
		p.parts[partition] = part
		parts[partition] = part
		p.log.Info("loaded channel snapshots", "partition", partition, "uaids", len(states), "took", time.Since(start))
	}
	return parts, nil
}

// channelLoadSnapshots reads the given pushlog.channels partitions from the
// earliest offset to their current high watermark; the last snapshot of a
// UAID wins.
func channelLoadSnapshots(ctx context.Context, opts []kgo.Opt, adm *kadm.Client, topic string, partitions []int32, log *slog.Logger) (map[int32]map[string]*pb.ChannelState, error) {
	out := make(map[int32]map[string]*pb.ChannelState, len(partitions))
	for _, partition := range partitions {
		out[partition] = make(map[string]*pb.ChannelState)
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
			states := out[r.Partition]
			if states == nil {
				return
			}
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			ev, err := schema.Decode(r)
			if err != nil {
				channelLogSkip(log, r, err)
				return
			}
			st := ev.GetChannelState()
			if st == nil {
				log.Warn("skipping non-snapshot event on channels topic", "partition", r.Partition, "offset", r.Offset, "type", schema.TypeName(ev))
				return
			}
			states[ev.GetUaid()] = st
		})
	}
	return out, nil
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
	level := slog.LevelWarn
	if errors.Is(err, schema.ErrUnknownType) {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, "skipping record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
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
