package embedded

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/pushlog/pushlog/cmd/internal/metrics"
)

// DefaultRetain is the default replay window: settled records younger
// than this are kept for `pushlog replay` and `analytics rebuild`.
const DefaultRetain = time.Hour

// DefaultTrimInterval is how often the trimmer runs.
const DefaultTrimInterval = time.Minute

// DefaultRecordInterval is how often the broker's end offsets are
// recorded beside its files (when one moved). It is the window
// verification cannot vouch for: records acknowledged in the last interval
// before a crash, whose tail is then cut exactly at a batch boundary.
const DefaultRecordInterval = time.Second

// finalRecordTimeout bounds the last recording at shutdown, after the
// run's context has ended.
const finalRecordTimeout = 2 * time.Second

// What set a partition's trim point (the pinned metric's "by" label).
const (
	byWindow = "window" // the replay window
	byGroup  = "group"  // a group's committed offset (unsettled or unconsumed records)
	byEnd    = "end"    // the last record, which is always kept
	byNoCmt  = "uncommitted"
)

// TrimConfig configures a Trimmer.
type TrimConfig struct {
	Admin *kadm.Client
	// Dir is the broker directory: the trimmer records end offsets there
	// (evidence for verification after a crash) and reports its size.
	Dir string
	// Topics are the delete-policy topics to trim; compacted ones are
	// skipped whatever this says (compaction owns them).
	Topics []string
	// Required maps each group that must read a topic to those topics: a
	// partition is not trimmed while one of them has no committed offset
	// there (it would read from the start). Every other group's commits
	// also hold the trim point back.
	Required map[string][]string
	Retain   time.Duration // replay window; 0 means DefaultRetain
	Interval time.Duration // 0 means DefaultTrimInterval
	// RecordInterval is how often the end offsets of every topic are
	// recorded in Dir; 0 means DefaultRecordInterval.
	RecordInterval time.Duration
	Logger         *slog.Logger
	Metrics        prometheus.Registerer
	Now            func() time.Time
}

// Trimmer deletes settled prefixes of the embedded log (DeleteRecords):
// below every group's committed offset, below the replay window, and
// never the last record of a partition (kfake restarts an empty
// partition's offsets at zero, and offsets name messages).
type Trimmer struct {
	cfg TrimConfig
	log *slog.Logger

	trimmed  sync.Map // topic -> *atomic.Int64: offsets trimmed
	mu       sync.Mutex
	retained map[string]int64         // topic -> offsets kept
	pinned   map[[2]string]int64      // {topic, by} -> partitions
	runs     map[string]*atomic.Int64 // result -> runs
	diskSize atomic.Int64

	endsMu     sync.Mutex
	ends       map[string]map[int32]int64 // as last written to Dir
	starts     map[string]map[int32]int64
	endsWrites map[string]*atomic.Int64 // result -> recordings
}

// withDefaults checks c and fills in the defaults of its zero fields.
func (c TrimConfig) withDefaults() (TrimConfig, error) {
	if c.Admin == nil {
		return c, errors.New("embedded trimmer: Admin is required")
	}
	if c.Retain < 0 || c.Interval < 0 || c.RecordInterval < 0 {
		return c, errors.New("embedded trimmer: negative retain or interval")
	}
	c.Retain = cmp.Or(c.Retain, DefaultRetain)
	c.Interval = cmp.Or(c.Interval, DefaultTrimInterval)
	c.RecordInterval = cmp.Or(c.RecordInterval, DefaultRecordInterval)
	c.Logger = cmp.Or(c.Logger, slog.New(slog.DiscardHandler))
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// NewTrimmer checks cfg and registers the trimmer's metrics.
func NewTrimmer(cfg TrimConfig) (*Trimmer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Trimmer{
		cfg: cfg, log: cfg.Logger,
		retained: map[string]int64{}, pinned: map[[2]string]int64{},
		runs:       map[string]*atomic.Int64{"ok": {}, "error": {}},
		endsWrites: map[string]*atomic.Int64{"written": {}, "unchanged": {}, "error": {}},
	}
	if cfg.Dir != "" {
		t.ends, t.starts = readRecorded(cfg.Dir) // unchanged since the last run: no rewrite
	}
	for _, topic := range cfg.Topics {
		t.trimmed.Store(topic, new(atomic.Int64))
	}
	if err := metrics.Register(cfg.Metrics, t.collectors()...); err != nil {
		return nil, fmt.Errorf("embedded trimmer: %w", err)
	}
	return t, nil
}

// Run trims every Interval and records the end offsets every
// RecordInterval until ctx ends, then records them once more. A failed
// round is logged and retried at the next one: trimming is an
// optimisation, and the end offsets are evidence, never a reason to stop
// serving. One goroutine does both, so the ends file has one writer.
func (t *Trimmer) Run(ctx context.Context) error {
	trim := time.NewTicker(t.cfg.Interval)
	defer trim.Stop()
	rec := time.NewTicker(t.cfg.RecordInterval)
	defer rec.Stop()
	for {
		select {
		case <-ctx.Done():
			t.recordFinal(ctx)
			return nil
		case <-rec.C:
			if err := t.RecordEnds(ctx); err != nil && ctx.Err() == nil {
				t.log.Warn("record end offsets failed; retrying", "err", err)
			}
		case <-trim.C:
			if _, err := t.TrimOnce(ctx); err != nil && ctx.Err() == nil {
				t.log.Warn("embedded log trim failed; retrying next round", "err", err)
			}
		}
	}
}

// recordFinal records the end offsets at shutdown. The broker is still up
// (it is closed after every role), so this is what a clean stop leaves
// even if kfake's own snapshot is not written.
func (t *Trimmer) recordFinal(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalRecordTimeout)
	defer cancel()
	if err := t.RecordEnds(ctx); err != nil {
		t.log.Warn("record end offsets at shutdown failed", "err", err)
	}
}

// RecordEnds writes the end and start offsets of every partition of
// every topic beside the broker's files, when one moved since the last
// write. A partition the broker could not list keeps its recorded
// offsets; a topic the broker no longer has is dropped (a recreated topic
// restarts at 0).
func (t *Trimmer) RecordEnds(ctx context.Context) error {
	if t.cfg.Dir == "" {
		return nil
	}
	adm := t.cfg.Admin
	listedEnds, err := adm.ListEndOffsets(ctx) // no topics: every topic
	if err != nil {
		t.endsWrites["error"].Add(1)
		return fmt.Errorf("list end offsets: %w", err)
	}
	// Listed after the ends: a partition whose start reached the end
	// listed before it held no record at that moment.
	listedStarts, err := adm.ListStartOffsets(ctx)
	if err != nil {
		t.endsWrites["error"].Add(1)
		return fmt.Errorf("list start offsets: %w", err)
	}
	t.endsMu.Lock()
	defer t.endsMu.Unlock()
	ends, starts := keepKnown(listedEnds, t.ends), keepKnown(listedStarts, t.starts)
	if sameEnds(ends, t.ends) && sameEnds(starts, t.starts) {
		t.endsWrites["unchanged"].Add(1)
		return nil
	}
	if err := writeRecorded(t.cfg.Dir, ends, starts); err != nil {
		t.endsWrites["error"].Add(1)
		return err
	}
	t.ends, t.starts = ends, starts
	t.endsWrites["written"].Add(1)
	return nil
}

// keepKnown is the listed offsets, with prev's for partitions the broker
// could not list.
func keepKnown(listed kadm.ListedOffsets, prev map[string]map[int32]int64) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) {
		off := o.Offset
		if o.Err != nil || off < 0 {
			p, ok := prev[o.Topic][o.Partition]
			if !ok {
				return
			}
			off = p
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = off
	})
	return out
}

// TrimResult is what one round did: per topic, the offsets trimmed.
type TrimResult map[string]int64

// TrimOnce runs one round.
func (t *Trimmer) TrimOnce(ctx context.Context) (TrimResult, error) {
	res, err := t.trimOnce(ctx)
	result := "ok"
	if err != nil {
		result = "error"
	}
	t.runs[result].Add(1)
	t.diskSize.Store(dirSize(t.cfg.Dir))
	return res, err
}

func (t *Trimmer) trimOnce(ctx context.Context) (TrimResult, error) {
	adm := t.cfg.Admin
	topics, err := t.deleteTopics(ctx)
	if err != nil || len(topics) == 0 {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	if err := t.RecordEnds(ctx); err != nil {
		t.log.Warn("record end offsets failed", "err", err)
	}
	window, err := adm.ListOffsetsAfterMilli(ctx, t.cfg.Now().Add(-t.cfg.Retain).UnixMilli(), topics...)
	if err == nil {
		err = window.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list offsets of the replay window: %w", err)
	}
	floors, err := t.groupFloors(ctx)
	if err != nil {
		return nil, err
	}
	del := kadm.Offsets{}
	pinned := map[[2]string]int64{}
	retained := map[string]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		s, _ := starts.Lookup(e.Topic, e.Partition)
		target, by := t.target(e, window, floors)
		pinned[[2]string{e.Topic, by}]++
		if target > s.Offset {
			del.Add(kadm.Offset{Topic: e.Topic, Partition: e.Partition, At: target})
			retained[e.Topic] += e.Offset - target
		} else {
			retained[e.Topic] += e.Offset - s.Offset
		}
	})
	t.mu.Lock()
	t.pinned, t.retained = pinned, retained
	t.mu.Unlock()
	if len(del) == 0 {
		return TrimResult{}, nil
	}
	resp, err := adm.DeleteRecords(ctx, del)
	if err != nil {
		return nil, fmt.Errorf("delete records: %w", err)
	}
	res := TrimResult{}
	var errs []error
	resp.Each(func(r kadm.DeleteRecordsResponse) {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("delete records %s/%d: %w", r.Topic, r.Partition, r.Err))
			return
		}
		s, _ := starts.Lookup(r.Topic, r.Partition)
		if n := r.LowWatermark - s.Offset; n > 0 {
			res[r.Topic] += n
			if c, ok := t.trimmed.Load(r.Topic); ok {
				c.(*atomic.Int64).Add(n)
			}
		}
	})
	if len(res) > 0 {
		t.log.Debug("embedded log trimmed", "offsets", res)
	}
	return res, errors.Join(errs...)
}

// target is the offset below which a partition may be deleted, and what
// set it.
func (t *Trimmer) target(e kadm.ListedOffset, window kadm.ListedOffsets, floors map[string]map[int32]int64) (int64, string) {
	target, by := e.Offset-1, byEnd // the last record always stays
	if w, ok := window.Lookup(e.Topic, e.Partition); ok && w.Offset >= 0 && w.Offset < target {
		target, by = w.Offset, byWindow
	}
	if f, ok := floors[e.Topic][e.Partition]; ok {
		if f < 0 {
			return -1, byNoCmt
		}
		if f < target {
			target, by = f, byGroup
		}
	} else if t.requiredOn(e.Topic) {
		return -1, byNoCmt
	}
	return target, by
}

// requiredOn reports whether a required group reads topic.
func (t *Trimmer) requiredOn(topic string) bool {
	for _, ts := range t.cfg.Required {
		for _, x := range ts {
			if x == topic {
				return true
			}
		}
	}
	return false
}

// groupFloors is, per topic and partition, the smallest committed offset
// of any group, or -1 where a required group has none.
func (t *Trimmer) groupFloors(ctx context.Context) (map[string]map[int32]int64, error) {
	adm := t.cfg.Admin
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	groups := listed.Groups()
	for g := range t.cfg.Required {
		if _, ok := listed[g]; !ok {
			groups = append(groups, g)
		}
	}
	fetched := adm.FetchManyOffsets(ctx, groups...)
	floors := map[string]map[int32]int64{}
	for _, g := range groups {
		r, ok := fetched[g]
		if ok && errors.Is(r.Err, kerr.GroupIDNotFound) {
			continue // no such group yet: no commits
		}
		if !ok || r.Err != nil {
			// An unknown commit could be below anything: no trim this round.
			return nil, fmt.Errorf("fetch committed offsets of group %s: %v", g, r.Err)
		}
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			if o.Err != nil || o.At < 0 {
				return
			}
			if floors[o.Topic] == nil {
				floors[o.Topic] = map[int32]int64{}
			}
			if f, ok := floors[o.Topic][o.Partition]; !ok || o.At < f {
				floors[o.Topic][o.Partition] = o.At
			}
		})
	}
	// A required group without a commit would start from the beginning.
	for g, topics := range t.cfg.Required {
		for _, topic := range topics {
			t.markUncommitted(floors, fetched[g].Fetched, topic)
		}
	}
	return floors, nil
}

// markUncommitted sets -1 on the partitions of topic where the group's
// commits (fetched) have none: those partitions are listed by the ends.
func (t *Trimmer) markUncommitted(floors map[string]map[int32]int64, fetched kadm.OffsetResponses, topic string) {
	if floors[topic] == nil {
		floors[topic] = map[int32]int64{}
	}
	for p := range floors[topic] {
		if o, ok := fetched.Lookup(topic, p); !ok || o.Err != nil || o.At < 0 {
			floors[topic][p] = -1
		}
	}
}

// deleteTopics returns the configured topics that are not compacted.
func (t *Trimmer) deleteTopics(ctx context.Context) ([]string, error) {
	cfgs, err := t.cfg.Admin.DescribeTopicConfigs(ctx, t.cfg.Topics...)
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	var out []string
	for _, rc := range cfgs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe topic %s: %w", rc.Name, rc.Err)
		}
		compact := false
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
				compact = true
			}
		}
		if !compact {
			out = append(out, rc.Name)
		}
	}
	return out, nil
}

// dirSize is the bytes of the files under dir.
func dirSize(dir string) int64 {
	if dir == "" {
		return 0
	}
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
