package projector

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
)

// startReader returns a client that reads topic from its start, with no
// group: ingest's gone set and bridge table rebuild their state from the
// log at every start. what names the reader in errors.
func startReader(opts []kgo.Opt, what, topic string) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(slices.Clone(opts),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s reader: %w", what, topic, err)
	}
	return cl, nil
}

// consumeRecords folds records from cl with apply. With targets it returns
// once every partition in targets reached its offset; without, it runs
// until ctx ends (returning ctx's error). after, when set, runs after each
// poll.
func consumeRecords(ctx context.Context, cl *kgo.Client, log *slog.Logger, targets map[int32]int64, apply func(*kgo.Record), after func()) error {
	for targets == nil || len(targets) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		if fetches.IsClientClosed() {
			return kgo.ErrClientClosed
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if next, ok := targets[r.Partition]; ok && r.Offset+1 >= next {
				delete(targets, r.Partition)
			}
			apply(r)
		})
		if after != nil {
			after()
		}
	}
	return nil
}
