// Package broadcasts folds the compacted <namespace>.broadcasts topic
// (broadcast id -> version, the record format of schema/broadcast.go) into a
// table, and writes changes to it. Every connector node folds the whole
// topic (no consumer group: each reads every partition from the start, then
// tails it); `pushlog broadcast list` reads it once.
//
// It lives under schema, beside schema/group, because the connector, ingest
// (the admin endpoint writes) and cmd all use it and roles may not import
// each other. It imports only the standard library, franz-go and schema.
package broadcasts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// Reasons a record is not folded (Config.OnIgnored).
const (
	IgnoredInvalid   = "invalid"    // an id or version outside the format, or a newer encoding
	IgnoredTableFull = "table_full" // a new id past Config.Max
)

// Config configures a Table.
type Config struct {
	ClientOpts []kgo.Opt // seed brokers etc. (the reader adds its own consume options)
	Names      schema.Names
	// Max bounds the ids held (default schema.MaxBroadcasts): a record of a
	// new id past it is ignored (OnIgnored IgnoredTableFull); changes of
	// held ids and removals still apply.
	Max int
	// OnChange is called from Run's goroutine after a fetch changed the
	// table, with a copy of the whole table and the ids that changed (new
	// or new version; removed ids are only absent from the table).
	OnChange func(table map[string]string, changed map[string]schema.Broadcast)
	// OnIgnored is called for every record not folded, with the reason.
	OnIgnored func(reason string)
	Logger    *slog.Logger
}

// Table is the folded broadcasts topic.
type Table struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.RWMutex
	ids   map[string]string
	ready chan struct{}
	once  sync.Once
}

// New returns a table; nothing is read before Run.
func New(cfg Config) (*Table, error) {
	if cfg.Names.Broadcasts == "" {
		return nil, errors.New("broadcasts: Names.Broadcasts is required")
	}
	if cfg.Max <= 0 {
		cfg.Max = schema.MaxBroadcasts
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Table{cfg: cfg, log: cfg.Logger, ids: map[string]string{}, ready: make(chan struct{})}, nil
}

// Snapshot returns a copy of the table.
func (t *Table) Snapshot() map[string]string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return maps.Clone(t.ids)
}

// Ready is closed once Run has read every partition up to its end as it was
// when Run started.
func (t *Table) Ready() <-chan struct{} { return t.ready }

// Run reads the topic from its start until ctx ends (then it returns nil).
// Kafka errors are retried (logged): the table keeps what it has.
func (t *Table) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(append(slices.Clone(t.cfg.ClientOpts),
		kgo.ConsumeTopics(t.cfg.Names.Broadcasts),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A change reaches clients within a second: a fetch returns as soon
		// as a record arrives, and an idle one is renewed at this period.
		kgo.FetchMaxWait(time.Second),
	)...)
	if err != nil {
		return fmt.Errorf("broadcasts reader: %w", err)
	}
	defer cl.Close()
	targets, err := t.targets(ctx, kadm.NewClient(cl))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	t.markReadyIf(targets)
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return kgo.ErrClientClosed
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.log.Warn("broadcasts fetch error", "topic", topic, "partition", p, "err", err)
		})
		changed := map[string]schema.Broadcast{}
		removed := false
		fetches.EachRecord(func(r *kgo.Record) {
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			b, ok := t.apply(r)
			if !ok {
				return
			}
			if b.Removed {
				delete(changed, b.ID)
				removed = true
				return
			}
			changed[b.ID] = b
		})
		if (len(changed) > 0 || removed) && t.cfg.OnChange != nil {
			t.cfg.OnChange(t.Snapshot(), changed)
		}
		t.markReadyIf(targets)
	}
	return nil
}

func (t *Table) markReadyIf(targets map[int32]int64) {
	if len(targets) == 0 {
		t.once.Do(func() { close(t.ready) })
	}
}

// targets lists, per partition that holds records, the end offset at start.
// Kafka may still be starting or the topic not yet created: it retries
// until ctx ends.
func (t *Table) targets(ctx context.Context, adm *kadm.Client) (map[int32]int64, error) {
	for {
		targets, err := endOffsets(ctx, adm, t.cfg.Names.Broadcasts)
		if err == nil {
			return targets, nil
		}
		t.log.Warn("broadcasts: list end offsets; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("broadcasts: list end offsets: %w", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, err
	}
	if len(ends[topic]) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions yet", topic)
	}
	targets := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); ok && o.Offset > s.Offset {
			targets[o.Partition] = o.Offset
		}
	})
	return targets, nil
}

// apply folds one record; ok reports a change of the table.
func (t *Table) apply(r *kgo.Record) (schema.Broadcast, bool) {
	b, err := schema.DecodeBroadcast(r)
	if err != nil {
		t.log.Warn("broadcasts: record skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
		t.ignored(IgnoredInvalid)
		return b, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old, held := t.ids[b.ID]
	switch {
	case b.Removed:
		if !held {
			return b, false
		}
		delete(t.ids, b.ID)
		return b, true
	case held && old == b.Version:
		return b, false
	case !held && len(t.ids) >= t.cfg.Max:
		t.log.Warn("broadcasts: table full; new id ignored", "id", b.ID, "max", t.cfg.Max)
		t.ignored(IgnoredTableFull)
		return b, false
	}
	t.ids[b.ID] = b.Version
	return b, true
}

func (t *Table) ignored(reason string) {
	if t.cfg.OnIgnored != nil {
		t.cfg.OnIgnored(reason)
	}
}

// Load reads the whole topic once (up to its end as at the call) and
// returns the table; for tools.
func Load(ctx context.Context, clientOpts []kgo.Opt, names schema.Names) (map[string]string, error) {
	t, err := New(Config{ClientOpts: clientOpts, Names: names})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- t.Run(ctx) }()
	select {
	case <-t.Ready():
		cancel()
		<-errc
		return t.Snapshot(), nil
	case err := <-errc:
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("read %s: %w", names.Broadcasts, err)
	}
}

// Write appends id -> version for every entry of m (validated first: none
// is written when one is invalid) and waits until they are durable.
// source names the writer in the records (cli, admin, megaphone, seed).
func Write(ctx context.Context, producer *kgo.Client, names schema.Names, m map[string]string, source string) error {
	recs := make([]*kgo.Record, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		r, err := names.BroadcastRecord(id, m[id], source)
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("write broadcasts: %w", err)
	}
	return nil
}

// Diff returns the entries of want whose version differs from have's.
func Diff(have, want map[string]string) map[string]string {
	out := map[string]string{}
	for id, v := range want {
		if have[id] != v {
			out[id] = v
		}
	}
	return out
}
