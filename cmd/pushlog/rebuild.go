package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
)

// analyticsRebuildCmd drops whole UTC days of analytics and projects them
// again from Kafka.
//
// Exactly once: it runs only while the analytics projector group is empty
// (stopped), and re-projects each partition only up to the projector's own
// kafka_progress. Rows past the progress were dropped with their day and
// are projected again by the projector when it resumes (it resumes after
// its progress, and its partial-batch marks for those days are gone with
// the rows), so nothing is counted twice or missed. kafka_progress itself
// is left untouched.
type analyticsRebuildCmd struct {
	clickhouseFlags `embed:""`
	kafkaFlags      `embed:""`
	Since           string        `required:"" help:"First day to rebuild (RFC 3339 time, date, or duration ago); widened to its UTC midnight."`
	Until           string        `help:"End of the range (exclusive; default now); widened to the end of its UTC day."`
	WithConnections bool          `help:"Also rebuild the connections table (its topic is compacted: Kafka keeps only the last connection per user agent, so history would be lost)."`
	ClockSkew       time.Duration `default:"1h" help:"How far outside the days Kafka is searched for their events (record time vs event time)."`
	BatchRows       int           `default:"50000" help:"Rows per insert."`
}

type rebuildRange struct {
	topic       string // real topic name
	partition   int32
	start, stop int64 // [start, stop)
}

func (r *analyticsRebuildCmd) Run(ctx context.Context) error {
	now := time.Now()
	since, err := parseSince(r.Since, now)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	until := now
	if r.Until != "" {
		if until, err = parseSince(r.Until, now); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
	}
	if !until.After(since) {
		return fmt.Errorf("--until %s is not after --since %s", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	if r.BatchRows <= 0 {
		return fmt.Errorf("--batch-rows: %d must be positive", r.BatchRows)
	}
	var days []int32
	for d := analytics.DayOf(since); d <= analytics.DayOf(until.Add(-time.Millisecond)); d++ {
		days = append(days, d)
	}
	names, opts, cl, err := r.open()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := r.clickhouseFlags.resolve(r.DataDir); err != nil {
		return err
	}
	conn, err := analytics.Open(ctx, r.Addr, r.Database)
	if err != nil {
		return err
	}
	defer conn.Close()

	group := names.Group("analytics")
	if err := requireStopped(ctx, adm, group); err != nil {
		return err
	}
	topics := []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations}
	if r.WithConnections {
		topics = append(topics, schema.TopicPresence)
	}
	var raw []string
	for _, t := range topics {
		raw = append(raw, analytics.TablesOf(t)...)
	}
	ranges, err := r.plan(ctx, adm, conn, names, topics, days)
	if err != nil {
		return err
	}
	before, err := countTables(ctx, conn, r.Database, raw, days)
	if err != nil {
		return err
	}
	fmt.Printf("rebuilding %s … %s (UTC days) of %s from %s\n",
		analytics.DayTime(days[0]).Format(time.DateOnly), analytics.DayTime(days[len(days)-1]).Format(time.DateOnly), r.Database, names.Namespace)
	if err := analytics.WaitForInserts(ctx, conn, r.Database); err != nil {
		return err
	}
	if err := analytics.DropDays(ctx, conn, r.Database, analytics.DayTables(raw), days); err != nil {
		return fmt.Errorf("rebuild: %w (the days are partly removed: run the same rebuild again before starting the projector)", err)
	}
	if err := r.project(ctx, opts, conn, names, ranges, days); err != nil {
		return fmt.Errorf("rebuild: %w (run the same rebuild again before starting the projector)", err)
	}
	after, err := countTables(ctx, conn, r.Database, raw, days)
	if err != nil {
		return err
	}
	fmt.Printf("%-14s %12s %12s\n", "table", "rows before", "rows after")
	for _, t := range raw {
		note := ""
		if before[t] != after[t] {
			note = "  (differs from what was stored before: it now matches Kafka)"
		}
		fmt.Printf("%-14s %12d %12d%s\n", t, before[t], after[t], note)
	}
	fmt.Println("done; the analytics projector may be started again")
	return nil
}

// requireStopped refuses while the analytics projector group has members:
// it would keep writing rows of the days being rebuilt.
func requireStopped(ctx context.Context, adm *kadm.Client, group string) error {
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("describe group %s: %w", group, err)
	}
	g, ok := gs[group]
	if !ok || g.Err != nil || g.State == "Empty" || g.State == "Dead" {
		if ok && g.Err != nil {
			return fmt.Errorf("describe group %s: %w", group, g.Err)
		}
		return nil
	}
	return fmt.Errorf("rebuild refused: the analytics projector group %s is %s with %d member(s); stop every projector role (pushlog serve --roles without projector, or stop the process) and wait until the group is Empty, then run the rebuild and start the projector again", group, g.State, len(g.Members))
}

// plan finds, per topic partition, the offsets to re-read and checks that
// Kafka still holds every offset the days' rows came from.
func (r *analyticsRebuildCmd) plan(ctx context.Context, adm *kadm.Client, conn driver.Conn, names schema.Names, topics []string, days []int32) ([]rebuildRange, error) {
	first := analytics.DayTime(days[0]).Add(-r.ClockSkew)
	last := analytics.DayTime(days[len(days)-1]).Add(24*time.Hour + r.ClockSkew)
	var real []string
	for _, t := range topics {
		real = append(real, names.FromDefault(t))
	}
	starts, err := adm.ListStartOffsets(ctx, real...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, real...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	froms, err := adm.ListOffsetsAfterMilli(ctx, first.UnixMilli(), real...)
	if err != nil {
		return nil, fmt.Errorf("offsets at %s: %w", first.Format(time.RFC3339), err)
	}
	tos, err := adm.ListOffsetsAfterMilli(ctx, last.UnixMilli(), real...)
	if err != nil {
		return nil, fmt.Errorf("offsets at %s: %w", last.Format(time.RFC3339), err)
	}
	earliest, err := adm.ListOffsetsAfterMilli(ctx, 0, real...)
	if err != nil {
		return nil, fmt.Errorf("earliest offsets: %w", err)
	}
	var out []rebuildRange
	var lost []string
	for i, t := range topics {
		rt := real[i]
		var parts []int32
		for p := range starts[rt] {
			parts = append(parts, p)
		}
		if len(parts) == 0 {
			return nil, fmt.Errorf("topic %s does not exist (wrong --namespace?)", rt)
		}
		slices.Sort(parts)
		progress, err := analytics.Progress(ctx, conn, r.Database, rt, parts) // recorded under the consumed (namespaced) name
		if err != nil {
			return nil, err
		}
		logStarts := map[int32]int64{}
		for _, p := range parts {
			ls, _ := starts.Lookup(rt, p)
			le, _ := ends.Lookup(rt, p)
			if ls.Err != nil || le.Err != nil {
				return nil, fmt.Errorf("offsets of %s/%d: %w", rt, p, errors.Join(ls.Err, le.Err))
			}
			logStarts[p] = ls.Offset
			prog, ok := progress[p]
			if !ok {
				continue // never projected: the projector does it all
			}
			from, to := ls.Offset, le.Offset
			if o, ok := froms.Lookup(rt, p); ok && o.Err == nil && o.Offset >= 0 {
				from = max(o.Offset, ls.Offset)
			}
			if o, ok := tos.Lookup(rt, p); ok && o.Err == nil && o.Offset >= 0 {
				to = o.Offset
			}
			to = min(to, prog+1, le.Offset)
			if from < to {
				out = append(out, rebuildRange{topic: rt, partition: p, start: from, stop: to})
			}
		}
		for _, table := range analytics.TablesOf(t) {
			n, err := analytics.RowsBelow(ctx, conn, r.Database, table, days, logStarts)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				lost = append(lost, fmt.Sprintf("%s: %d rows come from offsets Kafka has deleted (%s)", table, n, firstAvailable(earliest, rt)))
			}
		}
	}
	if len(lost) > 0 {
		return nil, fmt.Errorf("rebuild refused: Kafka no longer holds the start of the range (retention), so these rows could not be restored:\n  %s\nrebuild from a later --since (a day fully after the first available time)", strings.Join(lost, "\n  "))
	}
	return out, nil
}

// firstAvailable describes the oldest record Kafka still has of a topic.
func firstAvailable(earliest kadm.ListedOffsets, topic string) string {
	var first int64 = -1
	for _, o := range earliest[topic] {
		if o.Err == nil && o.Timestamp >= 0 && (first < 0 || o.Timestamp < first) {
			first = o.Timestamp
		}
	}
	if first < 0 {
		return topic + " holds no records"
	}
	return topic + " starts at " + time.UnixMilli(first).UTC().Format(time.RFC3339)
}

func countTables(ctx context.Context, conn driver.Conn, db string, tables []string, days []int32) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, t := range tables {
		n, err := analytics.CountDays(ctx, conn, db, t, "count()", days)
		if err != nil {
			return nil, err
		}
		out[t] = n
	}
	return out, nil
}

// project reads the ranges and inserts the rows of the rebuilt days.
func (r *analyticsRebuildCmd) project(ctx context.Context, opts []kgo.Opt, conn driver.Conn, names schema.Names, ranges []rebuildRange, days []int32) error {
	if len(ranges) == 0 {
		return nil
	}
	want := map[int32]bool{}
	for _, d := range days {
		want[d] = true
	}
	assign := map[string]map[int32]kgo.Offset{}
	stop := map[string]map[int32]int64{}
	var total int64
	for _, rg := range ranges {
		if assign[rg.topic] == nil {
			assign[rg.topic], stop[rg.topic] = map[int32]kgo.Offset{}, map[int32]int64{}
		}
		assign[rg.topic][rg.partition] = kgo.NewOffset().At(rg.start)
		stop[rg.topic][rg.partition] = rg.stop
		total += rg.stop - rg.start
	}
	cl, err := kgo.NewClient(append(slices.Clone(opts), kgo.ConsumePartitions(assign))...)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer cl.Close()
	bar := newProgress(os.Stdout, "events", total)
	defer bar.Finish()
	b := &rebuildBatch{conn: conn, db: r.Database, names: names, max: r.BatchRows, groups: map[[2]any][]analytics.Row{}}
	remaining := len(ranges)
	next := map[[2]any]int64{}
	for _, rg := range ranges {
		next[[2]any{rg.topic, rg.partition}] = rg.start
	}
	for remaining > 0 {
		fs := cl.PollRecords(ctx, 10000)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("fetch %s/%d: %w", t, p, err)) })
		if ferr != nil {
			return ferr
		}
		var err error
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			key := [2]any{fp.Topic, fp.Partition}
			end := stop[fp.Topic][fp.Partition]
			for _, rec := range fp.Records {
				if err != nil || rec.Offset < next[key] || next[key] >= end {
					continue
				}
				if rec.Offset < end {
					err = b.add(ctx, rec, want)
				}
				bar.Add(min(rec.Offset+1, end) - next[key])
				next[key] = min(rec.Offset+1, end)
				if next[key] >= end {
					remaining--
					cl.PauseFetchPartitions(map[string][]int32{fp.Topic: {fp.Partition}})
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return b.flush(ctx)
}

// rebuildBatch groups rows per (table, day): one insert each, as the
// projector does (a one-day block is stored atomically).
type rebuildBatch struct {
	conn   driver.Conn
	db     string
	names  schema.Names
	max    int
	rows   int
	groups map[[2]any][]analytics.Row
}

func (b *rebuildBatch) add(ctx context.Context, rec *kgo.Record, want map[int32]bool) error {
	if rec.Value == nil {
		return nil
	}
	ev, err := schema.Decode(rec)
	if err != nil {
		return nil // the projector skips it too
	}
	row, ok := analytics.EventRow(rec, ev)
	if !ok || !want[row.Day()] {
		return nil
	}
	if t, _ := analytics.LookupTable(row.Table); b.names.FromDefault(t.Topic) != rec.Topic {
		return nil // an event on the wrong topic: the projector refuses it too
	}
	k := [2]any{row.Table, row.Day()}
	b.groups[k] = append(b.groups[k], row)
	b.rows++
	if b.rows >= b.max {
		return b.flush(ctx)
	}
	return nil
}

func (b *rebuildBatch) flush(ctx context.Context) error {
	keys := make([][2]any, 0, len(b.groups))
	for k := range b.groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	for _, k := range keys {
		if err := analytics.InsertRows(ctx, b.conn, b.db, k[0].(string), b.groups[k]); err != nil {
			return err
		}
		delete(b.groups, k)
	}
	b.rows = 0
	return nil
}
