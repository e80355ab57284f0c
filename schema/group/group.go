// Package group is the consumer-group member that pushlog's folding roles
// (the connector's partition owner, the channel projector, the analytics
// projector) are built on: one place for the options, the poll loop and the
// commit that exactly-once analytics and the owner's low-watermark commits
// rest on. A role plugs in its fold and kgo's rebalance callbacks; what is
// committed, and when, stays the role's decision.
//
// The rules it enforces for every role:
//   - offsets are never committed automatically: a role commits what its
//     fold has made durable (Commit, or kgo's CommitUncommittedOffsets);
//   - rebalance callbacks run only between polls (kgo's
//     BlockRebalanceOnPoll): a Fold never races an assignment, a
//     revocation or a loss, so a member never commits or writes for a
//     partition it no longer owns;
//   - a partition without a commit starts at the beginning of the log
//     unless the role's Adjust says otherwise.
//
// It lives under schema, not in a role, because roles may not import each
// other, and schema is the bottom every role already imports. Like the
// rest of schema it imports only the standard library and franz-go.
package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DefaultWait is how long a poll waits for records when Config.Wait is nil.
const DefaultWait = time.Second

// PartitionsFunc is kgo's OnPartitionsAssigned/Revoked/Lost callback.
type PartitionsFunc func(ctx context.Context, cl *kgo.Client, parts map[string][]int32)

// Config configures a Member. Group, Topics and Fold are required.
type Config struct {
	// ClientOpts connect to Kafka (seed brokers, TLS, SASL, logger).
	ClientOpts []kgo.Opt
	// Group is the consumer group; Topics are the topics it consumes.
	Group  string
	Topics []string
	// Opts are more options of the group client (a balancer, session
	// timeout, heartbeat interval); they come last, so they win.
	Opts []kgo.Opt
	// MaxRecords bounds the records of one poll; 0 means no bound.
	MaxRecords int
	// Wait returns how long the next poll may wait for records: the
	// role's next deadline (a batch due, a commit, a sweep). Nil means
	// DefaultWait. An idle poll still calls Fold.
	Wait func() time.Duration
	// PollGap is the least time from a poll that returned records to the
	// start of the next poll; 0: none. Each poll lets the client send the
	// next fetch, and each fetch costs the broker a pass over every
	// partition of the session: under a steady stream a fetch per record
	// or two is most of the broker's work. Waiting PollGap lets the next
	// fetch carry what arrived meanwhile. It adds latency (at most
	// PollGap) only while records arrive faster than one poll per
	// PollGap: a poll that waited PollGap or longer for its records, an
	// empty poll and a poll that hit MaxRecords are not followed by a gap.
	PollGap time.Duration

	// Fold handles one poll: its records (none when the poll timed out;
	// fetch errors are already logged). Rebalances wait until it returns.
	// An error ends Run with that error, without calling Stop.
	Fold func(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) error
	// Stop, if set, is called once when ctx ends or the client is
	// closed, before rebalances are allowed again and the client is
	// closed: the role's last commit or flush. fs is the poll that saw
	// the end (its records were not folded; fs.IsClientClosed tells a
	// closed client), empty when ctx ended during a Fold. A Stop that
	// leaves the group itself (LeaveGroupContext) calls cl.AllowRebalance
	// first: leaving waits for the poll's rebalance block.
	Stop func(ctx context.Context, cl *kgo.Client, fs kgo.Fetches)

	// Assigned, Revoked and Lost are kgo's OnPartitions… callbacks; nil
	// ones are not installed. Revoked may commit (the partitions are
	// still ours); Lost must not (another member may own them already).
	Assigned, Revoked, Lost PartitionsFunc
	// Adjust sets where newly assigned partitions start
	// (kgo.AdjustFetchOffsetsFn): a role that keeps its own progress, or
	// bootstraps in Assigned, says where its fold resumes.
	Adjust func(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error)
	// Blocked, if set, is called when a rebalance waits for the current
	// Fold (kgo.OnPartitionsCallbackBlocked): a Fold stuck retrying may
	// give up so the group can move on.
	Blocked func()

	// CloseTimeout bounds how long Run waits for the client to close
	// (leaving the group); 0 waits. kgo holds a pending join until the
	// broker answers, which after a dead member can take its session
	// timeout; not waiting loses nothing a role has not committed.
	CloseTimeout time.Duration
	Logger       *slog.Logger
}

// withDefaults checks c and fills its defaults.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Group == "":
		return c, errors.New("group: no consumer group")
	case len(c.Topics) == 0:
		return c, errors.New("group: no topics")
	case c.Fold == nil:
		return c, errors.New("group: no Fold")
	case c.MaxRecords < 0 || c.CloseTimeout < 0 || c.PollGap < 0:
		return c, errors.New("group: negative MaxRecords, CloseTimeout or PollGap")
	}
	if c.Wait == nil {
		c.Wait = func() time.Duration { return DefaultWait }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Member is one member of a consumer group; Run makes its client and
// polls until ctx ends.
type Member struct {
	cfg Config
}

// New checks cfg; it does no I/O (Run joins the group).
func New(cfg Config) (*Member, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Member{cfg: cfg}, nil
}

// opts are the group client's options.
func (m *Member) opts() []kgo.Opt {
	c := m.cfg
	opts := append(slices.Clone(c.ClientOpts),
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
	)
	if c.Assigned != nil {
		opts = append(opts, kgo.OnPartitionsAssigned(c.Assigned))
	}
	if c.Adjust != nil {
		opts = append(opts, kgo.AdjustFetchOffsetsFn(c.Adjust))
	}
	if c.Revoked != nil {
		opts = append(opts, kgo.OnPartitionsRevoked(c.Revoked))
	}
	if c.Lost != nil {
		opts = append(opts, kgo.OnPartitionsLost(c.Lost))
	}
	if c.Blocked != nil {
		blocked := c.Blocked
		opts = append(opts, kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { blocked() }))
	}
	return append(opts, c.Opts...)
}

// Run joins the group and folds every poll until ctx ends (then Stop, and
// nil) or a Fold fails (its error). It leaves the group and closes the
// client before it returns.
func (m *Member) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(m.opts()...)
	if err != nil {
		return fmt.Errorf("group %s: client: %w", m.cfg.Group, err)
	}
	defer m.close(cl)
	return m.loop(ctx, cl)
}

func (m *Member) loop(ctx context.Context, cl *kgo.Client) error {
	var gapUntil time.Time // no poll before (PollGap after a busy poll)
	for {
		// A ctx that ends during the gap is seen by the poll, which
		// returns at once with rebalances blocked, as Stop expects.
		waitUntil(ctx, gapUntil)
		started := time.Now()
		fs := m.poll(ctx, cl)
		gapUntil = m.nextPoll(started, time.Now(), fs)
		if ctx.Err() != nil || fs.IsClientClosed() {
			m.stop(ctx, cl, fs)
			return nil
		}
		fs.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				m.cfg.Logger.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			}
		})
		if err := m.cfg.Fold(ctx, cl, fs); err != nil {
			cl.AllowRebalance()
			return err
		}
		if ctx.Err() != nil {
			m.stop(ctx, cl, kgo.Fetches{})
			return nil
		}
		cl.AllowRebalance()
	}
}

// nextPoll is the earliest start of the poll after fs, which started at
// started and returned at now: PollGap after now if fs came back with
// records within PollGap (the records were waiting: a stream is flowing),
// else now. A poll that hit MaxRecords is reading a backlog (a takeover's
// replay): no gap.
func (m *Member) nextPoll(started, now time.Time, fs kgo.Fetches) time.Time {
	if m.cfg.PollGap <= 0 || now.Sub(started) >= m.cfg.PollGap || fs.Empty() ||
		m.cfg.MaxRecords > 0 && fs.NumRecords() >= m.cfg.MaxRecords {
		return now
	}
	return now.Add(m.cfg.PollGap)
}

// waitUntil waits until until, or until ctx ends.
func waitUntil(ctx context.Context, until time.Time) {
	d := time.Until(until)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// poll waits for records, at most as long as the role's Wait says.
func (m *Member) poll(ctx context.Context, cl *kgo.Client) kgo.Fetches {
	pctx, cancel := context.WithTimeout(ctx, max(m.cfg.Wait(), time.Millisecond))
	defer cancel()
	if m.cfg.MaxRecords > 0 {
		return cl.PollRecords(pctx, m.cfg.MaxRecords)
	}
	return cl.PollFetches(pctx)
}

func (m *Member) stop(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) {
	if m.cfg.Stop != nil {
		m.cfg.Stop(ctx, cl, fs)
	}
	cl.AllowRebalance()
}

// close closes the client (leaving the group, which runs Revoked), waiting
// at most CloseTimeout; past it the close goes on in the background.
func (m *Member) close(cl *kgo.Client) {
	cl.AllowRebalance()
	if m.cfg.CloseTimeout == 0 {
		cl.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		cl.Close()
		close(done)
	}()
	t := time.NewTimer(m.cfg.CloseTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		m.cfg.Logger.Warn("consumer still closing (a group join is pending at the broker); not waiting", "group", m.cfg.Group, "waited", m.cfg.CloseTimeout)
	}
}

// Commit commits offsets synchronously and returns the request's error or
// the partitions the broker refused, so a role records as committed only
// what was.
func Commit(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) error {
	var out error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			out = fmt.Errorf("commit: %w", err)
			return
		}
		out = CommitErrors(resp)
	})
	return out
}

// CommitErrors joins the per-partition errors of a commit response (also
// for callers that commit asynchronously themselves, as the owner does).
func CommitErrors(resp *kmsg.OffsetCommitResponse) error {
	var errs []error
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				errs = append(errs, fmt.Errorf("commit %s/%d: %w", t.Topic, p.Partition, err))
			}
		}
	}
	return errors.Join(errs...)
}
