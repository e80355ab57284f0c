// Package replay rewinds the connectors group so the partition owners
// re-fold older messages and re-drive their delivery: after connector nodes
// were down, or after a bug dropped deliveries.
//
// Safety rests on the owner's fold (connector/owner): a message is settled
// by an event in the acks topic (Acked, Expired, Dropped) or by a
// MessageDeleted later in the messages topic, and an owner starting from
// the committed offsets rebuilds the unsettled set from what it reads. So a
// rewind can never redeliver an acked message, nor an expired one, as long
// as every settlement of every re-read message is re-read too. Settlements
// are written after their message was accepted, so rewinding the acks
// topic to the same moment (minus a clock-skew margin, because the record
// timestamps of the two topics come from different producers' clocks)
// re-reads all of them; rewinding acks further back is always harmless
// (settlements of messages below the messages offset are ignored).
//
// Offsets only ever move backwards: moving them forward would skip
// unsettled messages. And offsets are only moved while the group has no
// live member: a member would keep folding from its own positions and
// overwrite the commit with its watermarks.
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// DefaultClockSkew is how far the acks rewind reaches before the messages
// rewind in time: the largest clock difference tolerated between the
// nodes that produce messages (ingest) and settlements (connectors).
const DefaultClockSkew = 5 * time.Minute

// ErrGroupLive means the group has members: offsets cannot be moved
// safely under them.
var ErrGroupLive = errors.New("the connectors group has live members")

// Request is what to replay.
type Request struct {
	Names schema.Names
	// Group is the connectors group; empty means Names.Group("connectors").
	Group string
	// Since rewinds every chosen partition to its first message produced
	// at or after this time. Exactly one of Since and Offsets is set.
	Since time.Time
	// Offsets rewinds the messages topic of each listed partition to the
	// given offset (Partitions is then ignored).
	Offsets map[int32]int64
	// Partitions limits a Since replay; empty means all.
	Partitions []int32
	// ClockSkew is the acks margin; zero means DefaultClockSkew.
	ClockSkew time.Duration
}

// PartitionPlan is what a replay does to one partition number.
type PartitionPlan struct {
	Partition int32
	// Committed and New are the messages topic's committed offset now
	// (-1: none, the owner starts at the log start) and after the replay.
	Committed, New int64
	// AcksCommitted and AcksNew are the same for the acks topic.
	AcksCommitted, AcksNew int64
	// LogStart and End bound what Kafka holds of the messages partition.
	LogStart, End int64
	// Truncated: the requested start is older than what Kafka retains;
	// the replay starts at the earliest retained message instead.
	Truncated bool
	// FirstRetained is the time of the earliest retained message (when
	// Truncated and known).
	FirstRetained time.Time
}

// Moves reports whether the plan changes the partition's offsets.
func (p PartitionPlan) Moves() bool { return p.Rewound() > 0 }

// effective is where the owner starts for a committed offset.
func (p PartitionPlan) effective(c int64) int64 {
	if c < 0 {
		return p.LogStart
	}
	return min(max(c, p.LogStart), p.End)
}

// Rewound is how many messages below the current commit are read again.
func (p PartitionPlan) Rewound() int64 { return max(0, p.effective(p.Committed)-p.New) }

// Reread is how many messages the owner folds from the new offset.
func (p PartitionPlan) Reread() int64 { return max(0, p.End-p.New) }

// Plan is a replay's effect on every chosen partition.
type Plan struct {
	Group      string
	GroupState string
	Names      schema.Names
	Parts      []PartitionPlan
}

// Admin is what the replay needs of a Kafka admin client (kadm.Client).
type Admin interface {
	DescribeGroups(ctx context.Context, groups ...string) (kadm.DescribedGroups, error)
	FetchOffsets(ctx context.Context, group string) (kadm.OffsetResponses, error)
	ListStartOffsets(ctx context.Context, topics ...string) (kadm.ListedOffsets, error)
	ListEndOffsets(ctx context.Context, topics ...string) (kadm.ListedOffsets, error)
	ListOffsetsAfterMilli(ctx context.Context, millisecond int64, topics ...string) (kadm.ListedOffsets, error)
	CommitOffsets(ctx context.Context, group string, os kadm.Offsets) (kadm.OffsetResponses, error)
}

// RecordTimer returns the timestamp of the record at (topic, partition,
// offset); Offsets replays use it to place the acks rewind.
type RecordTimer func(ctx context.Context, topic string, partition int32, offset int64) (time.Time, error)

// GroupState describes the group and fails with ErrGroupLive when it has
// members or is rebalancing.
func GroupState(ctx context.Context, adm Admin, group string) (string, error) {
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return "", fmt.Errorf("describe group %s: %w", group, err)
	}
	g, ok := groups[group]
	if !ok {
		return "Dead", nil
	}
	if g.Err != nil {
		return "", fmt.Errorf("describe group %s: %w", group, g.Err)
	}
	if g.State == "Empty" || g.State == "Dead" || g.State == "" && len(g.Members) == 0 {
		return g.State, nil
	}
	var who []string
	for _, m := range g.Members {
		who = append(who, fmt.Sprintf("%s@%s", m.ClientID, m.ClientHost))
	}
	return g.State, fmt.Errorf("%w: group %s is %s with %d member(s) [%s]; stop every connector role (pushlog serve with --roles including connector) and wait until the group is Empty (about the group session timeout after a crash), then run the replay again and restart the connectors",
		ErrGroupLive, group, g.State, len(g.Members), strings.Join(who, ", "))
}

// MakePlan computes the new offsets; it changes nothing. With a live group
// it returns the plan and ErrGroupLive (a dry run can still show it).
func MakePlan(ctx context.Context, adm Admin, timer RecordTimer, req Request) (Plan, error) {
	if req.Group == "" {
		req.Group = req.Names.Group("connectors")
	}
	if req.ClockSkew <= 0 {
		req.ClockSkew = DefaultClockSkew
	}
	if req.Since.IsZero() == (len(req.Offsets) == 0) {
		return Plan{}, errors.New("replay: give exactly one of a start time or explicit offsets")
	}
	plan := Plan{Group: req.Group, Names: req.Names}
	state, liveErr := GroupState(ctx, adm, req.Group)
	if liveErr != nil && !errors.Is(liveErr, ErrGroupLive) {
		return Plan{}, liveErr
	}
	plan.GroupState = state
	m, a := req.Names.Messages, req.Names.Acks
	starts, err := adm.ListStartOffsets(ctx, m, a)
	if err != nil {
		return Plan{}, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, m, a)
	if err != nil {
		return Plan{}, fmt.Errorf("list end offsets: %w", err)
	}
	if err := listErr(starts); err != nil {
		return Plan{}, err
	}
	committed, err := adm.FetchOffsets(ctx, req.Group)
	if err != nil {
		return Plan{}, fmt.Errorf("fetch committed offsets of %s: %w", req.Group, err)
	}
	parts, err := choosePartitions(starts[m], req)
	if err != nil {
		return Plan{}, err
	}
	var atSince, acksAtSince kadm.ListedOffsets
	if !req.Since.IsZero() {
		if atSince, err = adm.ListOffsetsAfterMilli(ctx, req.Since.UnixMilli(), m); err != nil {
			return Plan{}, fmt.Errorf("offsets of %s at %s: %w", m, req.Since.Format(time.RFC3339), err)
		}
		if acksAtSince, err = adm.ListOffsetsAfterMilli(ctx, req.Since.Add(-req.ClockSkew).UnixMilli(), a); err != nil {
			return Plan{}, fmt.Errorf("offsets of %s at %s: %w", a, req.Since.Format(time.RFC3339), err)
		}
	}
	for _, p := range parts {
		pp, err := planPartition(ctx, adm, timer, req, p, starts, ends, committed, atSince, acksAtSince)
		if err != nil {
			return Plan{}, err
		}
		plan.Parts = append(plan.Parts, pp)
	}
	return plan, liveErr
}

func listErr(l kadm.ListedOffsets) error {
	var err error
	l.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && err == nil {
			err = fmt.Errorf("offsets of %s/%d: %w", o.Topic, o.Partition, o.Err)
		}
	})
	return err
}

func choosePartitions(existing map[int32]kadm.ListedOffset, req Request) ([]int32, error) {
	if len(existing) == 0 {
		return nil, fmt.Errorf("topic %s does not exist (wrong --namespace?)", req.Names.Messages)
	}
	var want []int32
	switch {
	case len(req.Offsets) > 0:
		for p := range req.Offsets {
			want = append(want, p)
		}
	case len(req.Partitions) > 0:
		want = slices.Clone(req.Partitions)
	default:
		for p := range existing {
			want = append(want, p)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	for _, p := range want {
		if _, ok := existing[p]; !ok {
			return nil, fmt.Errorf("partition %d: %s has %d partitions", p, req.Names.Messages, len(existing))
		}
	}
	return want, nil
}

func planPartition(ctx context.Context, adm Admin, timer RecordTimer, req Request, p int32,
	starts, ends kadm.ListedOffsets, committed kadm.OffsetResponses, atSince, acksAtSince kadm.ListedOffsets) (PartitionPlan, error) {
	m, a := req.Names.Messages, req.Names.Acks
	ms, _ := starts.Lookup(m, p)
	me, _ := ends.Lookup(m, p)
	as, _ := starts.Lookup(a, p)
	ae, ok := ends.Lookup(a, p)
	if !ok {
		return PartitionPlan{}, fmt.Errorf("topic %s has no partition %d: co-partitioning is broken", a, p)
	}
	pp := PartitionPlan{Partition: p, Committed: -1, AcksCommitted: -1, LogStart: ms.Offset, End: me.Offset}
	if c, ok := committed.Lookup(m, p); ok && c.Err == nil && c.At >= 0 {
		pp.Committed = c.At
	}
	if c, ok := committed.Lookup(a, p); ok && c.Err == nil && c.At >= 0 {
		pp.AcksCommitted = c.At
	}
	curAcks := as.Offset // where the owner starts without a commit
	if pp.AcksCommitted >= 0 {
		curAcks = min(max(pp.AcksCommitted, as.Offset), ae.Offset)
	}

	// The messages target and the time the acks must reach back to.
	var target int64
	var acksTarget int64
	if req.Since.IsZero() {
		target = req.Offsets[p]
		if target < 0 || target > pp.End {
			return PartitionPlan{}, fmt.Errorf("partition %d: offset %d is outside %s [%d, %d]", p, target, m, pp.LogStart, pp.End)
		}
		if target < pp.LogStart {
			pp.Truncated, target = true, pp.LogStart
		}
		acksTarget = curAcks
		if target < pp.End {
			ts, err := timer(ctx, m, p, target)
			if err != nil {
				return PartitionPlan{}, fmt.Errorf("partition %d: time of message %d: %w", p, target, err)
			}
			if pp.Truncated {
				pp.FirstRetained = ts
			}
			l, err := adm.ListOffsetsAfterMilli(ctx, ts.Add(-req.ClockSkew).UnixMilli(), a)
			if err != nil {
				return PartitionPlan{}, fmt.Errorf("offsets of %s: %w", a, err)
			}
			if o, ok := l.Lookup(a, p); ok && o.Err == nil && o.Offset >= 0 {
				acksTarget = o.Offset
			}
		}
	} else {
		o, ok := atSince.Lookup(m, p)
		if !ok || o.Err != nil || o.Offset < 0 {
			target = pp.End // nothing at or after Since
		} else {
			target = o.Offset
		}
		// Kafka answers the log start when the first retained record is
		// newer than Since: if records were deleted, the requested range
		// may have been among them.
		if pp.LogStart > 0 && target == pp.LogStart && o.Timestamp > req.Since.UnixMilli() {
			pp.Truncated = true
			pp.FirstRetained = time.UnixMilli(o.Timestamp)
		}
		acksTarget = ae.Offset
		if o, ok := acksAtSince.Lookup(a, p); ok && o.Err == nil && o.Offset >= 0 {
			acksTarget = o.Offset
		}
	}
	cur := pp.effective(pp.Committed)
	pp.New = min(cur, target)
	pp.AcksNew = curAcks
	if pp.New < cur {
		// Every settlement of the re-read messages [New, cur) is at or
		// after acksTarget (written after its message, within the clock
		// skew); never move acks forward.
		pp.AcksNew = min(curAcks, max(acksTarget, as.Offset))
	}
	return pp, nil
}

// Apply commits the plan's offsets for the group. It checks again that
// the group is empty right before: a connector started meanwhile would
// fold from its own positions and overwrite the commit.
func Apply(ctx context.Context, adm Admin, plan Plan) error {
	if _, err := GroupState(ctx, adm, plan.Group); err != nil {
		return err
	}
	offs := kadm.Offsets{}
	for _, pp := range plan.Parts {
		if !pp.Moves() {
			continue
		}
		offs.Add(kadm.Offset{Topic: plan.Names.Messages, Partition: pp.Partition, At: pp.New, LeaderEpoch: -1})
		offs.Add(kadm.Offset{Topic: plan.Names.Acks, Partition: pp.Partition, At: pp.AcksNew, LeaderEpoch: -1})
	}
	if len(offs) == 0 {
		return nil
	}
	resp, err := adm.CommitOffsets(ctx, plan.Group, offs)
	if err != nil {
		return fmt.Errorf("commit offsets of %s: %w", plan.Group, err)
	}
	if err := resp.Error(); err != nil {
		return fmt.Errorf("commit offsets of %s: %w", plan.Group, err)
	}
	return nil
}

// Print writes the plan as a table, one line per partition, and says
// plainly where Kafka no longer holds the requested range.
func (plan Plan) Print(w io.Writer) {
	state := plan.GroupState
	if state == "" {
		state = "unknown"
	}
	fmt.Fprintf(w, "group %s (%s), topic %s (acks %s)\n", plan.Group, state, plan.Names.Messages, plan.Names.Acks)
	fmt.Fprintf(w, "%-9s %-24s %-24s %9s %9s\n", "partition", "messages committed→new", "acks committed→new", "rewound", "re-read")
	var rewound, reread int64
	parts := slices.Clone(plan.Parts)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Partition < parts[j].Partition })
	for _, pp := range parts {
		fmt.Fprintf(w, "%-9d %-24s %-24s %9d %9d\n", pp.Partition,
			offsetStr(pp.Committed)+" → "+offsetStr(pp.New),
			offsetStr(pp.AcksCommitted)+" → "+offsetStr(pp.AcksNew),
			pp.Rewound(), pp.Reread())
		rewound += pp.Rewound()
		reread += pp.Reread()
	}
	fmt.Fprintf(w, "total: %d messages below the current commits are read again; %d messages re-read in all\n", rewound, reread)
	for _, pp := range parts {
		if pp.Truncated {
			first := "unknown time"
			if !pp.FirstRetained.IsZero() {
				first = pp.FirstRetained.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "partition %d: the requested range is older than what Kafka retains; replaying from the earliest retained message (offset %d, %s)\n", pp.Partition, pp.LogStart, first)
		}
	}
	for _, pp := range parts {
		if pp.Rewound() == 0 {
			fmt.Fprintf(w, "partition %d: already committed at or before the requested start; unchanged\n", pp.Partition)
		}
	}
}

func offsetStr(o int64) string {
	if o < 0 {
		return "none"
	}
	return fmt.Sprint(o)
}

// ParseOffsets parses "p:o,p:o" (partition:offset pairs).
func ParseOffsets(s string) (map[int32]int64, error) {
	out := map[int32]int64{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ps, os, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("offsets: %q is not partition:offset", item)
		}
		var p int32
		var o int64
		if _, err := fmt.Sscanf(ps, "%d", &p); err != nil || p < 0 || fmt.Sprint(p) != strings.TrimSpace(ps) {
			return nil, fmt.Errorf("offsets: bad partition %q", ps)
		}
		if _, err := fmt.Sscanf(os, "%d", &o); err != nil || o < 0 || fmt.Sprint(o) != strings.TrimSpace(os) {
			return nil, fmt.Errorf("offsets: bad offset %q", os)
		}
		if _, dup := out[p]; dup {
			return nil, fmt.Errorf("offsets: partition %d given twice", p)
		}
		out[p] = o
	}
	if len(out) == 0 {
		return nil, errors.New("offsets: none given")
	}
	return out, nil
}

// KafkaRecordTimer reads one record with a plain (group-less) consumer to
// learn its timestamp.
func KafkaRecordTimer(opts []kgo.Opt) RecordTimer {
	return func(ctx context.Context, topic string, partition int32, offset int64) (time.Time, error) {
		cl, err := kgo.NewClient(append(slices.Clone(opts), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {partition: kgo.NewOffset().At(offset)},
		}))...)
		if err != nil {
			return time.Time{}, err
		}
		defer cl.Close()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for {
			fs := cl.PollRecords(rctx, 1)
			if err := rctx.Err(); err != nil {
				return time.Time{}, fmt.Errorf("no record at %s/%d@%d: %w", topic, partition, offset, err)
			}
			var ts time.Time
			fs.EachRecord(func(r *kgo.Record) {
				if ts.IsZero() && r.Offset >= offset {
					ts = r.Timestamp
				}
			})
			if !ts.IsZero() {
				return ts, nil
			}
		}
	}
}
