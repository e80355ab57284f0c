package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/broadcasts"
)

// broadcastCmd changes and lists the broadcasts ("megaphone") every
// connector node serves, through the <namespace>.broadcasts topic.
type broadcastCmd struct {
	Set  broadcastSetCmd  `cmd:"" help:"Set broadcast versions (ID=VERSION ...): connected clients subscribed to an id are told within a second, on every node."`
	List broadcastListCmd `cmd:"" help:"List the broadcast ids and versions."`
}

type broadcastSetCmd struct {
	kafkaFlags `embed:""`
	Versions   []string      `arg:"" name:"ID=VERSION" help:"Broadcast id and version, e.g. remote-settings/monitor_changes=\"1700000000\"."`
	Timeout    time.Duration `default:"30s" help:"Longest wait for Kafka."`
}

type broadcastListCmd struct {
	kafkaFlags `embed:""`
	JSON       bool          `help:"Print {\"broadcasts\":{...}} (Megaphone's shape)."`
	Timeout    time.Duration `default:"30s" help:"Longest wait for Kafka."`
}

func (c *broadcastSetCmd) Run(ctx context.Context) error {
	set, err := parseBroadcastArgs(c.Versions)
	if err != nil {
		return err
	}
	names, opts, cl, err := c.open()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	have, err := broadcasts.Load(ctx, opts, names)
	if err != nil {
		return err
	}
	if n := newIDs(have, set); len(have)+n > schema.MaxBroadcasts {
		return fmt.Errorf("%d new ids would make %d broadcasts, over the bound of %d", n, len(have)+n, schema.MaxBroadcasts)
	}
	if err := broadcasts.Write(ctx, cl, names, set, "cli"); err != nil {
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(set)) {
		state := "unchanged"
		switch old, ok := have[id]; {
		case !ok:
			state = "new"
		case old != set[id]:
			state = "was " + old
		}
		fmt.Printf("%s=%s (%s)\n", id, set[id], state)
	}
	return nil
}

func (c *broadcastListCmd) Run(ctx context.Context) error {
	names, err := c.resolve()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	table, err := broadcasts.Load(ctx, []kgo.Opt{kgo.SeedBrokers(c.KafkaBrokers...), kgo.ClientID("pushlog-ops")}, names)
	if err != nil {
		return err
	}
	if c.JSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"broadcasts": table})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION")
	for _, id := range slices.Sorted(maps.Keys(table)) {
		fmt.Fprintf(tw, "%s\t%s\n", id, table[id])
	}
	return tw.Flush()
}

// parseBroadcastArgs parses ID=VERSION arguments (the id may hold "=" no
// more than Megaphone's ids do: the first "=" splits).
func parseBroadcastArgs(args []string) (map[string]string, error) {
	set := map[string]string{}
	for _, a := range args {
		id, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want ID=VERSION", a)
		}
		if err := schema.ValidBroadcastID(id); err != nil {
			return nil, err
		}
		if err := schema.ValidBroadcastVersion(v); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		set[id] = v
	}
	return set, nil
}

// newIDs counts the ids of set that have does not hold.
func newIDs(have, set map[string]string) int {
	n := 0
	for id := range set {
		if _, ok := have[id]; !ok {
			n++
		}
	}
	return n
}

// broadcastChecks are serve's rules of the broadcast settings.
func (c *serveConfig) broadcastChecks() []check {
	f := fmt.Sprintf
	checks := []check{
		{c.AdminToken != "" && len(c.AdminToken) < 16, "--admin-token: at least 16 bytes"},
		{c.MegaphoneURL != "" && !httpURL(c.MegaphoneURL), f("--megaphone-url: %q must be an absolute http(s) URL", c.MegaphoneURL)},
		{c.MegaphoneURL != "" && c.MegaphoneInterval < 100*time.Millisecond, f("--megaphone-interval: %s is below 100ms", c.MegaphoneInterval)},
		{len(c.Broadcasts) > schema.MaxBroadcasts, f("--broadcasts: more than %d ids", schema.MaxBroadcasts)},
	}
	for _, id := range slices.Sorted(maps.Keys(c.Broadcasts)) {
		if err := schema.ValidBroadcastID(id); err != nil {
			checks = append(checks, check{true, f("--broadcasts: %v", err)})
		} else if err := schema.ValidBroadcastVersion(c.Broadcasts[id]); err != nil {
			checks = append(checks, check{true, f("--broadcasts: %s: %v", id, err)})
		}
	}
	return checks
}

// httpURL reports whether s is an absolute http(s) URL.
func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
