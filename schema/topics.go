package schema

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Topic names. All but broadcasts are keyed by UAID and co-partitioned;
// broadcasts is keyed by broadcast id and read whole by every connector
// (it has the same partition count so that one count fits every topic).
const (
	TopicMessages      = "pushlog.messages"
	TopicAcks          = "pushlog.acks"
	TopicRegistrations = "pushlog.registrations"
	TopicChannels      = "pushlog.channels"
	TopicPresence      = "pushlog.presence"
	TopicBroadcasts    = "pushlog.broadcasts"
)

// DefaultPartitions is the partition count of every topic unless configured.
const DefaultPartitions = 12

// RegistrationsRetention keeps registration events for a week; older state
// lives in the compacted channels topic.
const RegistrationsRetention = 7 * 24 * time.Hour

// TopicSpec is how one topic must be configured.
type TopicSpec struct {
	Name      string
	Compact   bool
	Retention time.Duration // for delete topics; 0 for compacted ones
	// MinInsyncReplicas is the topic's min.insync.replicas (see
	// MinInsyncReplicas); 0 leaves the broker's default.
	MinInsyncReplicas int16
}

// Configs returns the Kafka topic configs of the spec.
func (s TopicSpec) Configs() map[string]*string {
	cfg := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	if !s.Compact {
		cfg["cleanup.policy"] = kadm.StringPtr("delete")
		cfg["retention.ms"] = kadm.StringPtr(strconv.FormatInt(s.Retention.Milliseconds(), 10))
	}
	if s.MinInsyncReplicas > 0 {
		cfg["min.insync.replicas"] = kadm.StringPtr(strconv.Itoa(int(s.MinInsyncReplicas)))
	}
	return cfg
}

// MinInsyncAuto is the default of the --min-insync-replicas setting: 2 on
// topics replicated 3 times or more, the broker's default otherwise.
// MinInsyncBroker (-1) always leaves the broker's default.
const (
	MinInsyncAuto   int16 = 0
	MinInsyncBroker int16 = -1
)

// MinInsyncReplicas resolves the --min-insync-replicas setting for topics
// with replication factor replication (-1: the broker's default, unknown
// here) to the min.insync.replicas to set, 0 meaning the broker's default.
// Producers write with acks=all, so this is how many brokers hold a record
// before its push is answered 201: with 3 replicas, 2 lets one broker fail
// without stopping pushes or losing an acknowledged one.
func MinInsyncReplicas(setting, replication int16) int16 {
	switch {
	case setting > 0:
		return setting
	case setting == MinInsyncAuto && replication >= 3:
		return 2
	}
	return 0
}

// MinInsyncFor is MinInsyncReplicas for topics created with replication
// (-1 or 0: the broker's default). With the auto setting and the broker's
// default replication it asks the brokers what that default is: deciding
// on -1 alone left min.insync.replicas unset on a cluster that replicates
// 3 times, which `pushlog topics` then flagged.
func MinInsyncFor(ctx context.Context, adm *kadm.Client, setting, replication int16) (int16, error) {
	if setting == MinInsyncAuto && replication <= 0 {
		rf, err := DefaultReplication(ctx, adm)
		if err != nil {
			return 0, err
		}
		replication = rf
	}
	return MinInsyncReplicas(setting, replication), nil
}

// DefaultReplication is the replication factor of a topic created with
// replication -1: the brokers' default.replication.factor (Kafka's own
// default 1), at most the number of brokers (Kafka refuses more).
func DefaultReplication(ctx context.Context, adm *kadm.Client) (int16, error) {
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return 0, fmt.Errorf("broker metadata: %w", err)
	}
	if len(meta.Brokers) == 0 {
		return 0, errors.New("broker metadata: no brokers")
	}
	// Static broker configs are only described for a named broker.
	rcs, err := adm.DescribeBrokerConfigs(ctx, meta.Brokers[0].NodeID)
	if err == nil {
		var rc kadm.ResourceConfig
		rc, err = rcs.On(strconv.Itoa(int(meta.Brokers[0].NodeID)), nil)
		if err == nil {
			err = rc.Err
		}
		if err == nil {
			return defaultReplicationOf(rc.Configs, len(meta.Brokers))
		}
	}
	return 0, fmt.Errorf("describe broker %d configs (default.replication.factor): %w", meta.Brokers[0].NodeID, err)
}

// defaultReplicationOf reads default.replication.factor from a broker's
// configs, capped at the broker count.
func defaultReplicationOf(configs []kadm.Config, brokers int) (int16, error) {
	rf := 1 // Kafka's default when the broker does not report it
	for _, c := range configs {
		if c.Key != "default.replication.factor" || c.Value == nil {
			continue
		}
		n, err := strconv.Atoi(*c.Value)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("default.replication.factor %q: not a positive count", *c.Value)
		}
		rf = n
	}
	return int16(min(rf, brokers, math.MaxInt16)), nil
}

// WithMinInsync returns specs with min.insync.replicas set to n (0: the
// broker's default).
func WithMinInsync(specs []TopicSpec, n int16) []TopicSpec {
	out := make([]TopicSpec, len(specs))
	for i, s := range specs {
		s.MinInsyncReplicas = n
		out[i] = s
	}
	return out
}

// Topics returns every topic pushlog uses. Message and ack retention must
// outlive the longest TTL by a day so no pending message falls off the log.
func Topics(maxTTL time.Duration) []TopicSpec {
	msgRetention := maxTTL + 24*time.Hour
	return []TopicSpec{
		{Name: TopicMessages, Retention: msgRetention},
		{Name: TopicAcks, Retention: msgRetention},
		{Name: TopicRegistrations, Retention: RegistrationsRetention},
		{Name: TopicChannels, Compact: true},
		{Name: TopicPresence, Compact: true},
		{Name: TopicBroadcasts, Compact: true},
	}
}

// ErrPartitionMismatch means an existing topic has another partition count
// than configured; co-partitioning would break, so pushlog refuses to run.
var ErrPartitionMismatch = errors.New("topic partition count mismatch")

// EnsureTopics creates missing topics with their configs and verifies that
// existing ones have the expected partition count.
func EnsureTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec, partitions int32, replication int16) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	for _, s := range specs {
		d, ok := details[s.Name]
		if ok && d.Err == nil {
			if got := int32(len(d.Partitions)); got != partitions {
				return fmt.Errorf("%w: %s has %d partitions, configured %d", ErrPartitionMismatch, s.Name, got, partitions)
			}
			continue
		}
		// Another process may create it at the same moment: that is fine,
		// the partition count is verified below like any existing topic.
		resp, err := adm.CreateTopic(ctx, partitions, replication, s.Configs(), s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", s.Name, err)
		}
	}
	return waitTopics(ctx, adm, names, partitions)
}

// waitTopics polls metadata until every topic is visible with a leader for
// each partition: a real (KRaft) broker answers CreateTopics before its
// metadata shows the topic, and the roles started next use it at once.
func waitTopics(ctx context.Context, adm *kadm.Client, names []string, partitions int32) error {
	for {
		details, err := adm.ListTopics(ctx, names...)
		if err == nil {
			err = topicsReady(details, names, partitions)
		}
		if err == nil || errors.Is(err, ErrPartitionMismatch) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for topics: %w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// topicsReady reports the first topic that is not usable yet, or a
// partition count mismatch (which waiting will not fix).
func topicsReady(details kadm.TopicDetails, names []string, partitions int32) error {
	for _, n := range names {
		d, ok := details[n]
		switch {
		case !ok:
			return fmt.Errorf("topic %s not visible yet", n)
		case d.Err != nil:
			return fmt.Errorf("topic %s: %w", n, d.Err)
		case len(d.Partitions) == 0:
			return fmt.Errorf("topic %s has no partitions yet", n)
		case int32(len(d.Partitions)) != partitions:
			return fmt.Errorf("%w: %s has %d partitions, configured %d", ErrPartitionMismatch, n, len(d.Partitions), partitions)
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("topic %s/%d has no leader yet (%v)", n, p.Partition, p.Err)
			}
		}
	}
	return nil
}
