package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/pushlog/pushlog/cmd/ops"
)

type topicsCmd struct {
	kafkaFlags  `embed:""`
	Create      bool          `help:"Create missing topics (otherwise a missing topic is reported as a mismatch)."`
	Partitions  int32         `env:"PUSHLOG_PARTITIONS" help:"Partitions every topic must have (default: the messages topic's count, or 12 when creating)."`
	MaxTTL      time.Duration `default:"720h" env:"PUSHLOG_MAX_TTL" help:"The service's --max-ttl: messages and acks must be retained at least this plus a day."`
	Replication int16         `default:"-1" env:"PUSHLOG_REPLICATION" help:"Replication factor of created topics (-1: broker default)."`
	MinInsync   int16         `name:"min-insync-replicas" default:"0" env:"PUSHLOG_MIN_INSYNC_REPLICAS" help:"The service's --min-insync-replicas: set on created topics and verified on all (0: 2 where topics have 3 or more replicas; -1: the broker's default, only checked to be possible)."`
	JSON        bool          `help:"Print the report as JSON."`
}

// errMismatch makes the command exit non-zero after printing its report.
var errMismatch = errors.New("topics do not match what pushlog needs (see above)")

func (c *topicsCmd) Run(ctx context.Context) error {
	if c.MaxTTL < time.Second {
		return fmt.Errorf("--max-ttl: %s is below 1s", c.MaxTTL)
	}
	adm, names, closeFn, err := c.admin()
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reports, err := ops.CheckTopics(ctx, adm, ops.TopicCheck{
		Names: names, MaxTTL: c.MaxTTL, Partitions: c.Partitions,
		Create: c.Create, Replication: c.Replication, MinInsyncReplicas: c.MinInsync, Bootstrap: c.KafkaBrokers[0],
	})
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"namespace": names.Namespace, "ok": ops.OK(reports), "topics": reports}); err != nil {
			return err
		}
	} else {
		printTopics(os.Stdout, reports)
	}
	if !ops.OK(reports) {
		return errMismatch
	}
	return nil
}

func printTopics(w io.Writer, reports []ops.TopicReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tREPLICAS\tMIN ISR\tCLEANUP\tRETENTION\tSTATE")
	for _, r := range reports {
		state := "ok"
		switch {
		case len(r.Problems) > 0:
			state = "MISMATCH"
		case r.Created:
			state = "created"
		}
		ret := "forever"
		if r.RetentionMS >= 0 {
			ret = (time.Duration(r.RetentionMS) * time.Millisecond).String()
		}
		if r.Cleanup == "compact" {
			ret = "-"
		}
		if r.Cleanup == "" { // missing
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t%s\n", r.Topic, state)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Topic, r.Partitions, r.Replicas, r.MinInsync, r.Cleanup, ret, state)
	}
	_ = tw.Flush()
	for _, r := range reports {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "\n%s\n  fix: %s\n", p.Problem, p.Fix)
		}
	}
}
