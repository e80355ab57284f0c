package ops

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/pushlog/pushlog/schema"
)

// TopicCheck configures CheckTopics.
type TopicCheck struct {
	Names schema.Names
	// MaxTTL is the service's --max-ttl: messages and acks must be kept
	// at least MaxTTL plus a day.
	MaxTTL time.Duration
	// Partitions every topic must have; 0 takes the messages topic's
	// count (or DefaultPartitions when it is missing).
	Partitions int32
	// Create creates missing topics (with their specs' configs);
	// otherwise a missing topic is a mismatch.
	Create      bool
	Replication int16 // of created topics (-1: broker default)
	// MinInsyncReplicas is the --min-insync-replicas setting
	// (schema.MinInsyncReplicas): set on created topics and verified on
	// every topic.
	MinInsyncReplicas int16
	// Bootstrap is put into the suggested kafka-configs commands.
	Bootstrap string
}

// TopicReport is the state of one topic.
type TopicReport struct {
	Topic       string     `json:"topic"`
	Partitions  int        `json:"partitions"`
	Cleanup     string     `json:"cleanup_policy"`
	RetentionMS int64      `json:"retention_ms"` // -1: forever
	Replicas    int        `json:"replicas"`
	MinInsync   int        `json:"min_insync_replicas"`
	Created     bool       `json:"created,omitempty"`
	Problems    []Mismatch `json:"problems,omitempty"`
}

// Mismatch is one thing wrong with a topic: what, why it matters and the fix.
type Mismatch struct {
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
}

// OK reports whether no topic has a problem.
func OK(reports []TopicReport) bool {
	for _, r := range reports {
		if len(r.Problems) > 0 {
			return false
		}
	}
	return true
}

// CheckTopics creates (with Create) and verifies every pushlog topic:
// the same partition count everywhere (the owners fold partition p of
// every topic together, so the counts must match), retention of messages
// and acks at least MaxTTL plus a day (a pending message must not fall
// off the log), compaction on channels and presence (latest state per
// UAID, kept forever), deletion elsewhere.
func CheckTopics(ctx context.Context, adm *kadm.Client, c TopicCheck) ([]TopicReport, error) {
	if c.Bootstrap == "" {
		c.Bootstrap = "BROKER:9092"
	}
	minInsync := schema.MinInsyncReplicas(c.MinInsyncReplicas, c.Replication)
	if c.Create {
		// Created with -1, topics get the brokers' default replication.
		var err error
		if minInsync, err = schema.MinInsyncFor(ctx, adm, c.MinInsyncReplicas, c.Replication); err != nil {
			return nil, fmt.Errorf("min.insync.replicas of created topics: %w", err)
		}
	}
	specs := schema.WithMinInsync(c.Names.Specs(c.MaxTTL), minInsync)
	details, err := adm.ListTopics(ctx, c.Names.All()...)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	want := c.Partitions
	if want == 0 {
		want = schema.DefaultPartitions
		if d, ok := details[c.Names.Messages]; ok && d.Err == nil {
			want = int32(len(d.Partitions))
		}
	}
	reports := make([]TopicReport, len(specs))
	var existing []string
	for i, s := range specs {
		r := &reports[i]
		r.Topic = s.Name
		d, ok := details[s.Name]
		if ok && d.Err == nil {
			r.Partitions, r.Replicas = len(d.Partitions), replicas(d)
			existing = append(existing, s.Name)
			continue
		}
		if !c.Create {
			r.Problems = append(r.Problems, Mismatch{
				Problem: fmt.Sprintf("%s does not exist.", s.Name),
				Fix:     "Run `pushlog topics --create` (or start `pushlog serve`, which creates it) with the same --namespace, --partitions and --max-ttl.",
			})
			continue
		}
		resp, err := adm.CreateTopic(ctx, want, c.Replication, s.Configs(), s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return nil, fmt.Errorf("create topic %s: %w", s.Name, err)
		}
		r.Created, r.Partitions = true, int(want)
		existing = append(existing, s.Name)
	}
	if err := waitVisible(ctx, adm, reports); err != nil {
		return nil, err
	}
	configs, err := describeConfigsWait(ctx, adm, existing)
	if err != nil {
		return nil, err
	}
	for i, s := range specs {
		r := &reports[i]
		cfg, ok := configs[s.Name]
		if !ok {
			continue
		}
		r.Cleanup, r.RetentionMS, r.MinInsync = cfg.cleanup, cfg.retentionMS, cfg.minInsync
		if !r.Created && int32(r.Partitions) != want {
			r.Problems = append(r.Problems, partitionMismatch(s.Name, r.Partitions, want, c))
		}
		r.Problems = append(r.Problems, configMismatches(s, cfg, c)...)
		if m, bad := insyncMismatch(s.Name, r.Replicas, cfg.minInsync, c); bad {
			r.Problems = append(r.Problems, m)
		}
	}
	return reports, nil
}

// waitVisible waits until the topics created here are in the metadata, so
// the report (and whatever runs next) sees them, and fills in their
// replica counts.
func waitVisible(ctx context.Context, adm *kadm.Client, reports []TopicReport) error {
	var created []string
	for _, r := range reports {
		if r.Created {
			created = append(created, r.Topic)
		}
	}
	for len(created) > 0 {
		d, err := adm.ListTopics(ctx, created...)
		if err == nil {
			missing := 0
			for _, t := range created {
				if td, ok := d[t]; !ok || td.Err != nil || len(td.Partitions) == 0 {
					missing++
				}
			}
			if missing == 0 {
				for i := range reports {
					if td, ok := d[reports[i].Topic]; ok && reports[i].Created {
						reports[i].Replicas = replicas(td)
					}
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("created topics not visible: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// describeConfigsWait retries while a just-created topic is not known to
// the broker answering yet (KRaft answers CreateTopics before every broker
// has the topic).
func describeConfigsWait(ctx context.Context, adm *kadm.Client, topics []string) (map[string]topicConfig, error) {
	for {
		out, err := describeConfigs(ctx, adm, topics)
		if err == nil || !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type topicConfig struct {
	cleanup     string
	retentionMS int64
	minInsync   int
}

// replicas is a topic's replication factor: the replica count of its
// partitions (the largest, should a reassignment be under way).
func replicas(d kadm.TopicDetail) int {
	n := 0
	for _, p := range d.Partitions {
		n = max(n, len(p.Replicas))
	}
	return n
}

// describeConfigs reads cleanup.policy and retention.ms (effective values:
// topic overrides or the broker defaults).
func describeConfigs(ctx context.Context, adm *kadm.Client, topics []string) (map[string]topicConfig, error) {
	out := make(map[string]topicConfig, len(topics))
	if len(topics) == 0 {
		return out, nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe configs of %s: %w", rc.Name, rc.Err)
		}
		tc := topicConfig{cleanup: "delete", retentionMS: 7 * 24 * 3600 * 1000, minInsync: 1} // Kafka's defaults
		for _, kv := range rc.Configs {
			if kv.Value == nil {
				continue
			}
			switch kv.Key {
			case "cleanup.policy":
				tc.cleanup = *kv.Value
			case "retention.ms":
				if v, err := strconv.ParseInt(*kv.Value, 10, 64); err == nil {
					tc.retentionMS = v
				}
			case "min.insync.replicas":
				if v, err := strconv.Atoi(*kv.Value); err == nil {
					tc.minInsync = v
				}
			}
		}
		out[rc.Name] = tc
	}
	return out, nil
}

func partitionMismatch(topic string, got int, want int32, c TopicCheck) Mismatch {
	m := Mismatch{Problem: fmt.Sprintf(
		"%s has %d partitions but the other pushlog topics have %d: co-partitioning breaks (a UAID's messages, acks and registrations would hash to different partition numbers, and its owner would never see some of them).",
		topic, got, want)}
	if int32(got) < want {
		m.Fix = fmt.Sprintf("Stop every pushlog role, then `kafka-topics.sh --bootstrap-server %s --alter --topic %s --partitions %d` "+
			"(growing partitions moves keys: only safe while nothing is pending; otherwise recreate the namespace and replay).", c.Bootstrap, topic, want)
	} else {
		m.Fix = fmt.Sprintf("Kafka cannot shrink partitions: create the other topics with %d partitions too (a fresh --namespace with --partitions %d), or delete %s and recreate it with %d partitions while %s holds nothing pending.",
			got, got, topic, want, c.Names.Messages)
	}
	return m
}

func configMismatches(s schema.TopicSpec, cfg topicConfig, c TopicCheck) []Mismatch {
	var out []Mismatch
	alter := func(kv string) string {
		return fmt.Sprintf("kafka-configs.sh --bootstrap-server %s --alter --entity-type topics --entity-name %s --add-config %s", c.Bootstrap, s.Name, kv)
	}
	policies := strings.Split(cfg.cleanup, ",")
	hasCompact, hasDelete := false, false
	for _, p := range policies {
		switch strings.TrimSpace(p) {
		case "compact":
			hasCompact = true
		case "delete":
			hasDelete = true
		}
	}
	if s.Compact {
		if !hasCompact || hasDelete {
			out = append(out, Mismatch{
				Problem: fmt.Sprintf("%s has cleanup.policy=%s but must be compact only: it holds the latest state per UAID, which must never be deleted by age.", s.Name, cfg.cleanup),
				Fix:     "`" + alter("cleanup.policy=compact") + "`",
			})
		}
		return out
	}
	if hasCompact {
		out = append(out, Mismatch{
			Problem: fmt.Sprintf("%s has cleanup.policy=%s but must be delete: it is an event log, and compaction would keep only the last event per UAID.", s.Name, cfg.cleanup),
			Fix:     "`" + alter("cleanup.policy=delete") + "`",
		})
	}
	if s.Name == c.Names.Messages || s.Name == c.Names.Acks {
		min := (c.MaxTTL + 24*time.Hour).Milliseconds()
		if cfg.retentionMS >= 0 && cfg.retentionMS < min {
			out = append(out, Mismatch{
				Problem: fmt.Sprintf("%s keeps records %s (retention.ms=%d), less than the max TTL %s plus a day: pending messages (or their acks) could be deleted before they expire.",
					s.Name, time.Duration(cfg.retentionMS)*time.Millisecond, cfg.retentionMS, c.MaxTTL),
				Fix: "`" + alter("retention.ms="+strconv.FormatInt(min, 10)) + "`",
			})
		}
	}
	return out
}

// insyncMismatch checks a topic's min.insync.replicas against its
// replication factor rf and the setting. Pushes are appended with acks=all:
// min.insync.replicas is how many brokers hold a message before it is
// answered 201, and how many must be up for pushes to be accepted at all.
func insyncMismatch(topic string, rf, got int, c TopicCheck) (Mismatch, bool) {
	fix := func(n int) string {
		return fmt.Sprintf("`kafka-configs.sh --bootstrap-server %s --alter --entity-type topics --entity-name %s --add-config min.insync.replicas=%d`", c.Bootstrap, topic, n)
	}
	switch want := int(c.MinInsyncReplicas); {
	case rf > 0 && got > rf:
		return Mismatch{
			Problem: fmt.Sprintf("%s has min.insync.replicas=%d but only %d replicas: every append fails (NOT_ENOUGH_REPLICAS) and every push is answered 503.", topic, got, rf),
			Fix:     fix(max(1, min(rf-1, 2))),
		}, true
	case want > 0 && rf > 0 && want > rf:
		return Mismatch{
			Problem: fmt.Sprintf("--min-insync-replicas is %d but %s has only %d replicas: with that value every append would fail.", want, topic, rf),
			Fix:     fmt.Sprintf("Start pushlog with --min-insync-replicas %d (or -1 for the broker's default), or add replicas with kafka-reassign-partitions.sh.", max(1, min(rf-1, 2))),
		}, true
	case want > 0 && got != want:
		return Mismatch{
			Problem: fmt.Sprintf("%s has min.insync.replicas=%d but --min-insync-replicas is %d.", topic, got, want),
			Fix:     fix(want) + " (or start pushlog with --min-insync-replicas " + strconv.Itoa(got) + ")",
		}, true
	case want == int(schema.MinInsyncAuto) && rf >= 3 && got < 2:
		return Mismatch{
			Problem: fmt.Sprintf("%s has %d replicas but min.insync.replicas=%d: a push is answered 201 once a single broker has it, and losing that broker loses the message.", topic, rf, got),
			Fix:     fix(2) + " (or pass --min-insync-replicas -1 to accept the broker's setting)",
		}, true
	case want == int(schema.MinInsyncAuto) && rf >= 3 && got >= rf:
		return Mismatch{
			Problem: fmt.Sprintf("%s has min.insync.replicas=%d and %d replicas: one broker down stops every push.", topic, got, rf),
			Fix:     fix(2) + " (or pass --min-insync-replicas " + strconv.Itoa(got) + " to keep it deliberately)",
		}, true
	}
	return Mismatch{}, false
}
