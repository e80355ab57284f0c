// Package owner is the partition owner: the single authority for the UAIDs
// of the partitions it is assigned. It folds channels, registrations,
// presence, messages and acks of each owned partition number into the
// pending (unsettled) set and the channel state, delivers to attached
// sessions, settles messages (acks, expiry, drops) and commits its low
// watermarks, so that a new owner replaying from the commits rebuilds
// exactly the unsettled set. It implements link.Link for its partitions.
package owner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/group"
	"github.com/pushlog/pushlog/schema/pb"
)

// Defaults of Config.
const (
	DefaultGroup          = "pushlog-connectors"
	DefaultPendingLimit   = 200
	DefaultTTL0Grace      = 2 * time.Second
	DefaultCheckTimeout   = 5 * time.Second
	DefaultCommitInterval = time.Second
	DefaultSweepInterval  = time.Second
	// DefaultPollGap caps the owner's fetches at about a thousand a
	// second while pushes stream in (group.Config.PollGap): at 6,000
	// pushes/s it fetched 3,600 times a second, a record or two each, and
	// the broker's answers to them were a tenth of the process's CPU. A
	// push waits for it only at rates above a fetch per millisecond.
	DefaultPollGap       = time.Millisecond
	DefaultPayloadBudget = 256 << 20
	// DefaultUAIDExpiry: a UAID without a connection for 60 days is
	// reset, as autopush-rs does.
	DefaultUAIDExpiry = 60 * 24 * time.Hour
)

// Config configures an Owner.
type Config struct {
	ClientOpts     []kgo.Opt      // seed brokers etc.; the owner makes its own clients
	Producer       *kgo.Client    // acks=all producer for the events it writes
	Group          string         // consumer group, default DefaultGroup (in the namespace of Names)
	Names          schema.Names   // topic names; zero means schema.DefaultNames()
	Partitions     int32          // partition count of every pushlog topic
	Sealer         *schema.Sealer // seals notification versions (message ids)
	NodeID         string         // recorded in Delivered events; default the host name
	PendingLimit   int            // per UAID; past it the oldest is dropped. Default 200
	TTL0Grace      time.Duration  // how old a TTL 0 message may be and still be delivered
	CheckTimeout   time.Duration  // bound of CheckUAID's catch-up and of the wait for ownership
	CommitInterval time.Duration  // how often the low watermarks are committed
	SweepInterval  time.Duration  // how often expiry is checked, default 1s
	PollGap        time.Duration  // least time between busy polls, default DefaultPollGap; negative: none
	// Bridges configures the delivery to mobile bridges (bridge.go).
	Bridges BridgeConfig
	// PayloadBudget bounds the payload bytes kept in memory over all owned
	// partitions (default 256 MiB); past it payloads are re-read from
	// Kafka at delivery. Negative keeps none in memory.
	PayloadBudget int64
	// UAIDExpiry: a UAID without a connection for this long is reset by
	// its owner (a UserReset with reason "idle"; its endpoints then answer
	// 410 errno 103) and leaves memory and, by compaction, the log.
	// Default DefaultUAIDExpiry; negative disables expiry.
	UAIDExpiry time.Duration
	Logger     *slog.Logger
	Now        func() time.Time

	// Cluster settings (all zero in single node; see cluster.go).
	//
	// LinkAddr is this node's node-link address; it is announced in the
	// group member metadata so routers find the owner of a partition.
	LinkAddr string
	// MetricsAddr is where this node serves GET /metrics (host:port others
	// can reach, "" if unknown); announced next to LinkAddr, also in single
	// node, so `pushlog status` finds and scrapes every connector node.
	MetricsAddr string
	// Remote makes sessions for UAIDs that pushlog.presence says are
	// connected on a node (a takeover learns where its clients are).
	Remote SessionDialer
	// GroupOpts are extra options of the group client (session timeout,
	// heartbeat interval).
	GroupOpts []kgo.Opt

	// Metrics registers the owner's series (pending messages, owned
	// partitions), read from Stats at scrape time; nil: no metrics.
	Metrics prometheus.Registerer
}

// withDefaults checks c and fills in the defaults of its zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.Producer == nil {
		return c, errors.New("owner config: Producer is required")
	}
	if c.Sealer == nil {
		return c, errors.New("owner config: Sealer is required")
	}
	if c.Partitions <= 0 {
		return c, fmt.Errorf("owner config: Partitions must be positive, got %d", c.Partitions)
	}
	if c.PendingLimit < 0 || c.TTL0Grace < 0 || c.CheckTimeout < 0 || c.CommitInterval < 0 || c.SweepInterval < 0 {
		return c, errors.New("owner config: limits and durations must not be negative")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil || strings.ContainsAny(c.MetricsAddr, "\r\n") {
			return c, fmt.Errorf("owner config: MetricsAddr %q is not host:port", c.MetricsAddr)
		}
	}
	if c.Names.Messages == "" {
		c.Names = schema.DefaultNames()
	}
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
	}
	c.Group = cmp.Or(c.Group, c.Names.Group("connectors"))
	c.PendingLimit = cmp.Or(c.PendingLimit, DefaultPendingLimit)
	c.TTL0Grace = cmp.Or(c.TTL0Grace, DefaultTTL0Grace)
	c.CheckTimeout = cmp.Or(c.CheckTimeout, DefaultCheckTimeout)
	c.CommitInterval = cmp.Or(c.CommitInterval, DefaultCommitInterval)
	c.SweepInterval = cmp.Or(c.SweepInterval, DefaultSweepInterval)
	c.PollGap = max(cmp.Or(c.PollGap, DefaultPollGap), 0)
	c.PayloadBudget = cmp.Or(c.PayloadBudget, DefaultPayloadBudget)
	c.UAIDExpiry = cmp.Or(c.UAIDExpiry, DefaultUAIDExpiry)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Owner owns partitions of the pushlog topics; see the package comment.
type Owner struct {
	cfg         Config
	groupTopics [numGroupTopics]string // messages, acks, registrations in Names
	log         *slog.Logger
	env         *env

	// adm serves admin requests and payload re-reads. It is made by Run
	// before any partition can be owned, so whoever found an owned
	// partition (under mu) may use it.
	adm  *kgo.Client
	kadm *kadm.Client

	mu    sync.RWMutex
	parts map[int32]*partState
	// carried keeps the sessions of partitions revoked or lost while
	// running, to re-attach them if the partition comes back (a single
	// node rejoining after a session timeout keeps delivering to its
	// connected clients).
	carried  map[int32]map[[16]byte]link.Session
	started  bool // Run was called
	assigned bool // an assignment arrived since Run started
	changed  chan struct{}
	prodCtx  context.Context // Run's ctx without its cancel: settlements produced while stopping still go out
	side     *kgo.Client     // channels + presence tail, no group
	// chanProd (manual partitioner) writes pushlog.channels records; an
	// atomic, not under mu: it is used with a partition's lock held.
	chanProd atomic.Pointer[kgo.Client]
	stopped  chan struct{}
	// committing is set while an asynchronous commit is in flight.
	committing atomic.Bool

	probeEvery time.Duration // stuckProbeInterval; shorter in tests
}

var _ link.Link = (*Owner)(nil)

// New validates cfg and builds an Owner; Run makes it work. New does no
// I/O: until Run owns partitions, the Link methods answer ErrNotOwner.
func New(cfg Config) (*Owner, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	o := &Owner{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "owner"),
		parts:   make(map[int32]*partState),
		carried: make(map[int32]map[[16]byte]link.Session),
		changed: make(chan struct{}),
		stopped: make(chan struct{}),

		probeEvery:  stuckProbeInterval,
		groupTopics: groupTopicsOf(cfg.Names),
	}
	o.env = &env{cfg: cfg, log: o.log, now: cfg.Now, limit: cfg.PayloadBudget, graceMs: cfg.TTL0Grace.Milliseconds()}
	o.env.produce = o.produce
	o.env.produceRecord = o.produceRecord
	o.env.reread = o.reread
	if o.env.bridges, err = newBridges(cfg.Bridges, cfg.Metrics); err != nil { // bridge.go
		return nil, fmt.Errorf("owner: %w", err)
	}
	idle := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pushlog_owner_idle_resets_total",
		Help: "UAIDs reset for having had no connection for --uaid-expiry (UserReset reason idle).",
	}, func() float64 { return float64(o.env.idleResets.Load()) })
	if err := register(cfg.Metrics, newOwnerCollector(o), idle); err != nil {
		return nil, fmt.Errorf("owner: %w", err)
	}
	return o, nil
}

// Run joins the group, folds, delivers and commits until ctx is done; it
// then commits, leaves the group and returns nil. It can be called once.
func (o *Owner) Run(ctx context.Context) error {
	o.mu.Lock()
	if o.started {
		o.mu.Unlock()
		return errors.New("owner: Run called twice")
	}
	o.started = true
	o.prodCtx = context.WithoutCancel(ctx)
	if o.env.bridges != nil {
		o.env.bridges.setContext(ctx) // bridge.go
	}
	o.mu.Unlock()
	defer close(o.stopped)
	adm, err := kgo.NewClient(o.cfg.ClientOpts...)
	if err != nil {
		return fmt.Errorf("owner: admin client: %w", err)
	}
	defer adm.Close()
	// Last-seen records are keyed "<uaid>:seen" but belong on the UAID's
	// partition: they need a producer that honors the record's partition.
	chanProd, err := kgo.NewClient(append(slices.Clone(o.cfg.ClientOpts),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return fmt.Errorf("owner: channels producer: %w", err)
	}
	defer chanProd.Close()
	o.mu.Lock()
	o.adm, o.kadm = adm, kadm.NewClient(adm)
	o.mu.Unlock()
	o.chanProd.Store(chanProd)

	if err := o.checkTopics(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	side, err := kgo.NewClient(append(slices.Clone(o.cfg.ClientOpts), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return fmt.Errorf("owner: side client: %w", err)
	}
	defer side.Close()
	o.mu.Lock()
	o.side = side
	o.mu.Unlock()
	member, err := o.groupMember()
	if err != nil {
		return fmt.Errorf("owner: %w", err)
	}

	var wg sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(ctx)
	wg.Add(2)
	go func() { defer wg.Done(); o.sideLoop(loopCtx, side) }()
	go func() { defer wg.Done(); o.sweepLoop(loopCtx) }()

	// Until ctx ends; then leave commits and leaves the group (the revoke
	// callback commits again and drops the state).
	runErr := member.Run(ctx)
	stopLoops()
	wg.Wait()
	o.mu.Lock()
	for p, ps := range o.parts {
		o.dropPartition(p, ps, false)
	}
	clear(o.carried)
	o.mu.Unlock()
	if runErr != nil {
		return fmt.Errorf("owner: %w", runErr)
	}
	return nil
}

// topicWait is how long checkTopics waits for a topic every broker does not
// know yet: on a multi-broker cluster a topic just created reaches the
// other brokers' metadata a moment later.
const topicWait = 30 * time.Second

// checkTopics refuses to run when a topic is missing or has another
// partition count: co-partitioning would be broken.
func (o *Owner) checkTopics(ctx context.Context) error {
	names := append(o.groupTopics[:], o.cfg.Names.Channels, o.cfg.Names.Presence)
	deadline := time.Now().Add(topicWait)
	for {
		missing, err := o.checkTopicsOnce(ctx, names)
		if err != nil || missing == "" {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("owner: topic %s is missing", missing)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("owner: topic %s is missing: %w", missing, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkTopicsOnce returns the first missing topic, or an error for a
// partition count that breaks co-partitioning.
func (o *Owner) checkTopicsOnce(ctx context.Context, names []string) (string, error) {
	details, err := o.kadm.ListTopics(ctx, names...)
	if err != nil {
		return "", fmt.Errorf("owner: list topics: %w", err)
	}
	for _, t := range names {
		d, ok := details[t]
		if !ok || d.Err != nil {
			return t, nil
		}
		if got := int32(len(d.Partitions)); got != o.cfg.Partitions {
			return "", fmt.Errorf("owner: %w: %s has %d partitions, configured %d", schema.ErrPartitionMismatch, t, got, o.cfg.Partitions)
		}
	}
	return "", nil
}

// groupMember is the owner's consumer-group member over the group topics.
// The co-partitioning balancer gives a member the same partition numbers
// of every group topic; onAssigned bootstraps them and adjustOffsets starts
// the fetches where the bootstrap decided. Each poll is folded, and the
// low watermarks are committed every CommitInterval. Rebalance callbacks
// run only between polls, so folding, committing and revoking never race.
func (o *Owner) groupMember() (*group.Member, error) {
	lastCommit := time.Now()
	return group.New(group.Config{
		ClientOpts: o.cfg.ClientOpts,
		Group:      o.cfg.Group,
		Topics:     o.groupTopics[:],
		Opts: append([]kgo.Opt{
			kgo.Balancers(copartitionBalancer{userData: MemberInfo{LinkAddr: o.cfg.LinkAddr, MetricsAddr: o.cfg.MetricsAddr}.encode()}),
			// A takeover replays a partition's backlog: a fetch of up to
			// 8 MiB per partition (kgo's default is 1 MiB) needs an eighth
			// of the round trips, each of which the fold waits for. The
			// whole response stays bounded by kgo's FetchMaxBytes (50 MiB).
			// Live traffic is unaffected: FetchMinBytes stays 1, so a fetch
			// returns as soon as a record is there.
			kgo.FetchMaxPartitionBytes(groupFetchPartitionBytes),
		}, o.cfg.GroupOpts...),
		MaxRecords: 10000,
		PollGap:    o.cfg.PollGap,
		Wait:       func() time.Duration { return o.cfg.CommitInterval },
		Fold: func(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) error {
			o.foldFetches(fs)
			if time.Since(lastCommit) >= o.cfg.CommitInterval {
				o.commitAllAsync(ctx, cl)
				lastCommit = time.Now()
			}
			return nil
		},
		Stop:     o.leave,
		Assigned: o.onAssigned,
		Adjust:   o.adjustOffsets,
		Revoked:  o.onRevoked,
		Lost:     o.onLost,
		Logger:   o.log,
	})
}

// groupFetchPartitionBytes is the group client's fetch size per partition.
const groupFetchPartitionBytes = 8 << 20

// leave folds the poll that saw ctx end, commits the low watermarks and
// leaves the group, within leaveTimeout.
func (o *Owner) leave(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) {
	if !fs.IsClientClosed() {
		o.foldFetches(fs)
	}
	cl.AllowRebalance() // leaving waits for the poll's rebalance block
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
	defer cancel()
	o.commitAll(fctx, cl)
	if err := cl.LeaveGroupContext(fctx); err != nil {
		o.log.Warn("leave group", "err", err)
	}
}

// leaveTimeout bounds the last commit and the group leave at shutdown.
const leaveTimeout = 10 * time.Second

// foldOrder is the order in which the topics of one poll are folded:
// registrations first, so a message accepted after a (bridge) registration
// that arrives in the same poll is folded with it in place, then messages,
// then the acks that settle them (fewer orphans).
var foldOrder = [numGroupTopics]int{tRegistrations, tMessages, tAcks}

// foldFetches folds a poll's records, topic by topic in foldOrder.
func (o *Owner) foldFetches(fs kgo.Fetches) {
	var byTopic [numGroupTopics][]kgo.FetchTopicPartition
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		if ti := slices.Index(o.groupTopics[:], fp.Topic); ti >= 0 && len(fp.Records) > 0 {
			byTopic[ti] = append(byTopic[ti], fp)
		}
	})
	for _, ti := range foldOrder {
		for _, fp := range byTopic[ti] {
			o.foldFetch(fp)
		}
	}
}

func (o *Owner) foldFetch(fp kgo.FetchTopicPartition) {
	ti := slices.Index(o.groupTopics[:], fp.Topic)
	if len(fp.Records) == 0 || ti < 0 {
		return
	}
	o.withPart(fp.Partition, func(ps *partState) {
		for _, rec := range fp.Records {
			ps.foldGroup(ti, rec)
		}
		ps.afterBatch()
	})
}

// withPart calls fn with partition p's state locked, unless p is not
// owned or its state is closed.
func (o *Owner) withPart(p int32, fn func(*partState)) {
	ps := o.part(p)
	if ps == nil {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.closed {
		fn(ps)
	}
}

func (o *Owner) part(p int32) *partState {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.parts[p]
}

// commitAll commits the low watermarks of every owned partition that moved.
func (o *Owner) commitAll(ctx context.Context, cl *kgo.Client) {
	o.commit(ctx, cl, o.ownedNumbers(), false)
}

// commitAllAsync is commitAll without waiting for the broker: the poll
// loop goes on folding and delivering while the commit is in flight (a
// synchronous commit held every message fetched meanwhile for a round
// trip, once per CommitInterval: a push→socket tail). kgo builds the
// request with the current generation at once and keeps a group join
// waiting until it is answered, and a later synchronous commit (revoke,
// leave) is ordered after it. One at a time: while one is in flight the
// next interval's is skipped.
func (o *Owner) commitAllAsync(ctx context.Context, cl *kgo.Client) {
	if !o.committing.CompareAndSwap(false, true) {
		return
	}
	offsets, marks := o.commitOffsets(o.ownedNumbers(), false)
	if len(offsets) == 0 {
		o.committing.Store(false)
		return
	}
	cl.CommitOffsets(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		defer o.committing.Store(false)
		if err == nil {
			err = group.CommitErrors(resp)
		}
		o.committed(marks, err)
	})
}

func (o *Owner) ownedNumbers() []int32 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	nums := make([]int32, 0, len(o.parts))
	for p := range o.parts {
		nums = append(nums, p)
	}
	return nums
}

// commit commits the watermarks of nums; unless force, only those that
// moved since the last successful commit.
func (o *Owner) commit(ctx context.Context, cl *kgo.Client, nums []int32, force bool) {
	offsets, marks := o.commitOffsets(nums, force)
	if len(offsets) == 0 {
		return
	}
	o.committed(marks, group.Commit(ctx, cl, offsets))
}

// commitOffsets returns the offsets to commit for nums and the watermarks
// they stand for; unless force, only partitions whose watermarks moved
// since the last successful commit.
func (o *Owner) commitOffsets(nums []int32, force bool) (map[string]map[int32]kgo.EpochOffset, map[*partState][numGroupTopics]int64) {
	offsets := make(map[string]map[int32]kgo.EpochOffset, numGroupTopics)
	marks := make(map[*partState][numGroupTopics]int64, len(nums))
	for _, p := range nums {
		ps := o.part(p)
		if ps == nil {
			continue
		}
		ps.mu.Lock()
		w := ps.watermarks()
		skip := ps.closed || !force && w == ps.committed
		ps.mu.Unlock()
		if skip {
			continue
		}
		marks[ps] = w
		for ti, t := range o.groupTopics {
			if offsets[t] == nil {
				offsets[t] = make(map[int32]kgo.EpochOffset)
			}
			offsets[t][p] = kgo.EpochOffset{Epoch: -1, Offset: w[ti]}
		}
	}
	return offsets, marks
}

// committed records the outcome of a commit of marks.
func (o *Owner) committed(marks map[*partState][numGroupTopics]int64, err error) {
	if err != nil {
		logf := o.log.Warn
		if errors.Is(err, context.Canceled) {
			logf = o.log.Debug // stopping: leave commits synchronously
		}
		logf("commit", "err", err)
		return // retried at the next interval
	}
	for ps, w := range marks {
		ps.mu.Lock()
		ps.committed = w
		ps.mu.Unlock()
	}
}

// partitionNumbers returns the partition numbers of an assignment map.
func (o *Owner) partitionNumbers(m map[string][]int32) []int32 {
	var nums []int32
	for t, ps := range m {
		if !slices.Contains(o.groupTopics[:], t) {
			continue
		}
		for _, p := range ps {
			if !slices.Contains(nums, p) {
				nums = append(nums, p)
			}
		}
	}
	slices.Sort(nums)
	return nums
}

// onAssigned bootstraps newly assigned partition numbers before their
// fetches begin: channel state from the compacted channels topic, and the
// offsets every topic will be folded from.
func (o *Owner) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	var fresh []int32
	for _, p := range o.partitionNumbers(assigned) {
		if o.part(p) == nil {
			fresh = append(fresh, p)
		}
	}
	if len(fresh) > 0 {
		// The committed offsets are asked of the group client: it has
		// just joined through the group's current coordinator. The admin
		// client may still have a dead one cached (group.Admin).
		var grp *kadm.Client
		if cl != nil {
			grp = kadm.NewClient(cl)
		}
		for attempt := 0; ; attempt++ {
			err := o.bootstrap(ctx, grp, fresh)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			o.log.Warn("bootstrap of assigned partitions failed; retrying", "partitions", fresh, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)):
			}
		}
	}
	o.mu.Lock()
	for p := range o.carried {
		if o.parts[p] == nil {
			delete(o.carried, p) // moved to another member
		}
	}
	o.assigned = true
	close(o.changed)
	o.changed = make(chan struct{})
	o.mu.Unlock()
	o.log.Info("partitions assigned", "new", fresh)
}

// bootstrap builds the state of fresh partitions and registers them. The
// group's committed offsets are fetched through grp (the admin client when
// nil).
func (o *Owner) bootstrap(ctx context.Context, grp *kadm.Client, fresh []int32) error {
	adm := o.kadm // made by Run before any partition can be assigned
	committed, err := cmp.Or(grp, adm).FetchOffsets(ctx, o.cfg.Group)
	if err != nil {
		return fmt.Errorf("fetch committed offsets: %w", err)
	}
	if err := committed.Error(); err != nil {
		return fmt.Errorf("fetch committed offsets: %w", err)
	}
	topics := append(o.groupTopics[:], o.cfg.Names.Channels)
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	built := make(map[int32]*partState, len(fresh))
	for _, p := range fresh {
		var start, end [numGroupTopics]int64
		for ti, t := range o.groupTopics {
			ls, err := listed(starts, t, p)
			if err != nil {
				return err
			}
			le, err := listed(ends, t, p)
			if err != nil {
				return err
			}
			start[ti], end[ti] = ls, le
			if c, ok := committed.Lookup(t, p); ok && c.Err == nil && c.At >= 0 {
				start[ti] = min(max(c.At, ls), le)
			}
		}
		ps := newPartState(o.env, p)
		ps.setPositions(start, end)
		cs, err := listed(starts, o.cfg.Names.Channels, p)
		if err != nil {
			return err
		}
		ce, err := listed(ends, o.cfg.Names.Channels, p)
		if err != nil {
			return err
		}
		if err := o.readChannels(ctx, ps, cs, ce); err != nil {
			return err
		}
		ps.chanEnd = ce
		if err := o.readBridges(ctx, ps, starts, start[tRegistrations]); err != nil { // bridge.go
			return err
		}
		built[p] = ps
	}
	add := map[string]map[int32]kgo.Offset{o.cfg.Names.Channels: {}, o.cfg.Names.Presence: {}}
	o.mu.Lock()
	for p, ps := range built {
		ps.mu.Lock()
		for id, s := range o.carried[p] {
			ps.attach(id, s)
		}
		delete(o.carried, p)
		ps.checkReady()
		o.log.Info("partition bootstrapped", "partition", p, "start", ps.start, "end", ps.end0, "uaids", len(ps.uaids))
		ps.mu.Unlock()
		o.parts[p] = ps
		add[o.cfg.Names.Channels][p] = kgo.NewOffset().At(ps.chanEnd)
		add[o.cfg.Names.Presence][p] = kgo.NewOffset().AtStart()
	}
	side := o.side
	o.mu.Unlock()
	if side != nil {
		side.AddConsumePartitions(add)
	}
	return nil
}

func listed(l kadm.ListedOffsets, t string, p int32) (int64, error) {
	o, ok := l.Lookup(t, p)
	if !ok {
		return 0, fmt.Errorf("no offsets listed for %s/%d", t, p)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("offsets of %s/%d: %w", t, p, o.Err)
	}
	return o.Offset, nil
}

// readChannels folds pushlog.channels partition p from start to end.
func (o *Owner) readChannels(ctx context.Context, ps *partState, start, end int64) error {
	for off := start; off < end; {
		fp, err := fetchAt(ctx, o.adm, o.cfg.Names.Channels, ps.p, off, 8<<20)
		if err != nil {
			return fmt.Errorf("read %s/%d at %d: %w", o.cfg.Names.Channels, ps.p, off, err)
		}
		if len(fp.Records) == 0 {
			break // nothing more below the high watermark
		}
		ps.mu.Lock()
		for _, rec := range fp.Records {
			if rec.Offset < end {
				ps.foldSnapshot(rec)
			}
		}
		ps.mu.Unlock()
		off = fp.Records[len(fp.Records)-1].Offset + 1
	}
	return nil
}

// adjustOffsets makes the group fetch start exactly where bootstrap
// decided, so the fold and the positions agree.
func (o *Owner) adjustOffsets(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for t, parts := range offsets {
		ti := slices.Index(o.groupTopics[:], t)
		if ti < 0 {
			continue
		}
		for p := range parts {
			if ps := o.part(p); ps != nil {
				ps.mu.Lock()
				parts[p] = kgo.NewOffset().At(ps.start[ti])
				ps.mu.Unlock()
			}
		}
	}
	return offsets, nil
}

// onRevoked commits the low watermarks of the revoked partitions and
// drops their state.
func (o *Owner) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	nums := o.partitionNumbers(revoked)
	if len(nums) == 0 {
		return
	}
	o.commit(ctx, cl, nums, true)
	o.forget(nums)
	o.log.Info("partitions revoked", "partitions", nums)
}

// onLost drops the state of lost partitions; committing would fail.
func (o *Owner) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	nums := o.partitionNumbers(lost)
	o.forget(nums)
	o.log.Warn("partitions lost", "partitions", nums)
}

func (o *Owner) forget(nums []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range nums {
		if ps := o.parts[p]; ps != nil {
			o.dropPartition(p, ps, true)
		}
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

// dropPartition forgets p, keeping its sessions if carry is set; the
// caller holds o.mu.
func (o *Owner) dropPartition(p int32, ps *partState, carry bool) {
	delete(o.parts, p)
	ps.mu.Lock()
	if carry {
		for id, u := range ps.uaids {
			if u.session != nil {
				if o.carried[p] == nil {
					o.carried[p] = make(map[[16]byte]link.Session)
				}
				o.carried[p][id] = u.session
			}
		}
	}
	ps.release()
	ps.mu.Unlock()
	if o.side != nil {
		o.side.RemoveConsumePartitions(map[string][]int32{o.cfg.Names.Channels: {p}, o.cfg.Names.Presence: {p}})
	}
}

// sideLoop tails pushlog.channels (records newer than the fold, and the
// registrations watermark) and pushlog.presence of owned partitions.
func (o *Owner) sideLoop(ctx context.Context, cl *kgo.Client) {
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, 10000)
		if fs.IsClientClosed() {
			return
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			o.withPart(fp.Partition, func(ps *partState) {
				for _, rec := range fp.Records {
					switch fp.Topic {
					case o.cfg.Names.Channels:
						if rec.Offset >= ps.chanEnd {
							ps.foldSnapshot(rec)
						}
					case o.cfg.Names.Presence:
						ps.foldPresence(rec)
					}
				}
			})
		})
	}
}

// sweepLoop expires messages and retries failed settlement events.
func (o *Owner) sweepLoop(ctx context.Context) {
	t := time.NewTicker(o.cfg.SweepInterval)
	defer t.Stop()
	lastProbe := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := o.cfg.Now()
		parts := o.partList()
		probe := time.Since(lastProbe) >= o.probeEvery
		if probe {
			lastProbe = time.Now()
		}
		for _, ps := range parts {
			ps.mu.Lock()
			if !ps.closed {
				ps.sweep(now)
			}
			ready := ps.ready
			ps.mu.Unlock()
			if probe && !ready {
				o.probeReplay(ctx, ps)
			}
		}
	}
}

// stuckProbeInterval is how often a replay that has not caught up is
// checked for a tail it can never read.
const stuckProbeInterval = 5 * time.Second

// probeReplay unsticks a replay whose remaining range holds no records a
// consumer returns (transaction markers, a truncated log): a direct fetch
// at the fold's position that finds nothing means that topic is caught up.
func (o *Owner) probeReplay(ctx context.Context, ps *partState) {
	for _, ti := range []int{tMessages, tAcks} {
		ps.mu.Lock()
		next, end := ps.next[ti], ps.end0[ti]
		ps.mu.Unlock()
		if next >= end {
			continue
		}
		fp, err := fetchAt(ctx, o.adm, o.groupTopics[ti], ps.p, next, 1<<20)
		if err != nil || len(fp.Records) > 0 {
			continue // still something to fold: the consumer will get it
		}
		ps.mu.Lock()
		if !ps.closed && ps.next[ti] == next {
			o.log.Warn("replay range holds no records; treating it as caught up", "topic", o.groupTopics[ti], "partition", ps.p, "from", next, "to", end)
			ps.next[ti] = end
			ps.afterBatch()
		}
		ps.mu.Unlock()
	}
}

// produce writes an event asynchronously with the configured producer.
func (o *Owner) produce(ev *pb.Event, onErr func(error)) {
	rec, err := o.cfg.Names.Record(ev)
	if err != nil {
		onErr(err)
		return
	}
	ctx := o.prodCtx // set by Run before any partition is owned
	if ctx == nil {
		onErr(errors.New("owner not running"))
		return
	}
	o.cfg.Producer.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			onErr(err)
		}
	})
}

// produceRecord writes a record to the partition it names.
func (o *Owner) produceRecord(rec *kgo.Record, onErr func(error)) {
	cl, ctx := o.chanProd.Load(), o.prodCtx
	if cl == nil || ctx == nil {
		onErr(errors.New("owner not running"))
		return
	}
	cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			onErr(err)
		}
	})
}

// Stats describes what the owner holds.
type Stats struct {
	Partitions   []PartitionStats
	Pending      int   // unsettled messages over all partitions
	UAIDs        int   // UAIDs with any state
	PayloadBytes int64 // payload bytes kept in memory
	// HeldDelivered: Delivered events waiting for their message's ack.
	HeldDelivered int

	// OldestPendingMs is the acceptance time (Unix ms) of the oldest
	// unsettled message over all partitions; 0 when nothing is pending.
	OldestPendingMs int64
}

// PartitionStats describes one owned partition number.
type PartitionStats struct {
	Partition int32
	Ready     bool // caught up: delivering and deciding
	Pending   int
	UAIDs     int
	Attached  int
	Orphans   int
	Skipped   int64 // corrupt, unknown or misrouted records
	// HeldDelivered: Delivered events waiting for their message's ack
	// (DeliveredHold).
	HeldDelivered int
	Next          [numGroupTopics]int64 // next offsets of messages, acks, registrations

	// OldestPendingMs: acceptance time (Unix ms) of the oldest unsettled
	// message; 0 when none.
	OldestPendingMs int64
}

// partList returns the owned partitions' states, so that each can be
// locked in turn without holding o.mu.
func (o *Owner) partList() []*partState {
	o.mu.RLock()
	defer o.mu.RUnlock()
	parts := make([]*partState, 0, len(o.parts))
	for _, ps := range o.parts {
		parts = append(parts, ps)
	}
	return parts
}

// Stats returns a snapshot of the owner's state.
func (o *Owner) Stats() Stats {
	var s Stats
	for _, ps := range o.partList() {
		ps.mu.Lock()
		if !ps.closed {
			st := ps.stats()
			s.Partitions = append(s.Partitions, st)
			s.Pending += st.Pending
			s.UAIDs += st.UAIDs
			s.HeldDelivered += st.HeldDelivered
			if st.OldestPendingMs > 0 && (s.OldestPendingMs == 0 || st.OldestPendingMs < s.OldestPendingMs) {
				s.OldestPendingMs = st.OldestPendingMs
			}
		}
		ps.mu.Unlock()
	}
	slices.SortFunc(s.Partitions, func(a, b PartitionStats) int { return int(a.Partition - b.Partition) })
	s.PayloadBytes = o.env.budget.Load()
	return s
}
