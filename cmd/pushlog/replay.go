package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"golang.org/x/term"

	"github.com/pushlog/pushlog/connector/replay"
)

type replayCmd struct {
	kafkaFlags `embed:""`
	Since      string        `xor:"from" required:"" help:"Replay messages produced at or after this time (RFC 3339, or a duration ago such as 2h)."`
	Offsets    string        `xor:"from" required:"" help:"Replay from explicit messages offsets: partition:offset,..."`
	Partitions []int32       `help:"Only these partitions (with --since); default all."`
	DryRun     bool          `help:"Print what would be replayed, per partition, and change nothing."`
	Force      bool          `help:"Do not ask for confirmation (required when stdin is not a terminal)."`
	ClockSkew  time.Duration `default:"5m" help:"Largest clock difference between ingest and connector nodes; acks are rewound this much further back."`
}

func (r *replayCmd) Run(ctx context.Context) error {
	req, err := r.request(time.Now())
	if err != nil {
		return err
	}
	names, opts, cl, err := r.open()
	if err != nil {
		return err
	}
	defer cl.Close()
	req.Names = names
	adm := kadm.NewClient(cl)
	plan, err := replay.MakePlan(ctx, adm, replay.KafkaRecordTimer(opts), req)
	live := errors.Is(err, replay.ErrGroupLive)
	if err != nil && !live {
		return fmt.Errorf("replay: %w", err)
	}
	plan.Print(os.Stdout)
	if r.DryRun {
		if live {
			fmt.Println("note: the group has live members; the replay itself would be refused:", err)
		}
		return nil
	}
	if live {
		return fmt.Errorf("replay refused: %w", err)
	}
	moves := false
	for _, pp := range plan.Parts {
		moves = moves || pp.Moves()
	}
	if !moves {
		fmt.Println("nothing to replay: every chosen partition is already committed at or before the start")
		return nil
	}
	if !r.Force {
		if !confirm("commit these offsets for group " + plan.Group + "?") {
			return errors.New("replay: not confirmed (use --force when not on a terminal)")
		}
	}
	if err := replay.Apply(ctx, adm, plan); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	fmt.Printf("committed; start the connectors: their owners re-fold from these offsets and deliver what is unsettled\n")
	return nil
}

func (r *replayCmd) request(now time.Time) (replay.Request, error) {
	req := replay.Request{Partitions: r.Partitions, ClockSkew: r.ClockSkew}
	if r.ClockSkew < 0 {
		return req, fmt.Errorf("--clock-skew: %s is negative", r.ClockSkew)
	}
	if r.Offsets != "" {
		if len(r.Partitions) > 0 {
			return req, errors.New("--partitions: not with --offsets (the offsets name their partitions)")
		}
		offs, err := replay.ParseOffsets(r.Offsets)
		if err != nil {
			return req, fmt.Errorf("--offsets: %w", err)
		}
		req.Offsets = offs
		return req, nil
	}
	t, err := parseSince(r.Since, now)
	if err != nil {
		return req, fmt.Errorf("--since: %w", err)
	}
	req.Since = t
	return req, nil
}

// parseSince takes an RFC 3339 time, a date (UTC midnight), or a duration
// ago.
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q: a duration must be positive", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2006-01-02T15:04:05Z), a date (2006-01-02, UTC) or a duration ago (90m)", s)
}

// confirm asks on the terminal; without one it answers no.
func confirm(question string) bool {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return false
	}
	fmt.Print(question + " [y/N] ")
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}
