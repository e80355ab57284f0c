// Command pushattack runs the hostile-client attacks of issue 10 against a
// pushlog deployment, each bounded in count and time, and prints a table:
// what was sent, how the server answered, whether it was still up and
// whether another user's pushes still got 201 and arrived.
//
//	pushattack --push-url http://127.0.0.1:8082 --ws-url ws://127.0.0.1:8080/
//	pushattack --attacks channel-flood,lenient --count 2000 --json
//
// It is an operator tool for checking one's own deployment: it attacks
// loopback addresses only, unless --allow-remote is given. It exits 1 when
// an attack left the server down or other users unserved.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/pushlog/pushlog/integration/attack"
)

type cli struct {
	PushURL     string        `default:"http://127.0.0.1:8082" help:"Push API base (ingest)."`
	WSURL       string        `name:"ws-url" default:"ws://127.0.0.1:8080/" help:"WebSocket connection listener."`
	StatsURL    string        `help:"Optional: the server's /debug/stats (its --debug-addr), to report each attack's live-heap change."`
	Attacks     []string      `help:"Attacks to run, in order (default: all). Known: ${attacks}."`
	Count       int           `default:"200" help:"Messages or requests per attack."`
	Duration    time.Duration `default:"60s" help:"Bound on each attack's time."`
	Concurrency int           `default:"16" help:"Sockets or requests at a time (hello flood, HTTP attacks)."`
	HeaderSize  int           `default:"60005" help:"Bytes of the oversized Encryption / Crypto-Key header."`
	SubSize     int           `default:"28000" help:"Bytes of the oversized VAPID sub."`
	TokenSize   int           `default:"4000" help:"Bytes of each distinct VAPID token of vapid-cache."`
	JSON        bool          `help:"Print the results as JSON instead of a table."`
	AllowRemote bool          `help:"Allow targets that are not loopback addresses (only your own deployment)."`
	Verbose     bool          `short:"v" help:"Log each attack's progress on stderr."`
	List        bool          `help:"List the attacks with what each does, and exit."`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cli
	kong.Parse(&c,
		kong.Name("pushattack"),
		kong.Description("Hostile-client attacks against your own pushlog deployment, bounded in count and time."),
		kong.Vars{"attacks": strings.Join(attack.Names(), ", ")},
	)
	healthy, err := c.run(ctx, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushattack:", err)
		os.Exit(2)
	}
	if !healthy {
		os.Exit(1)
	}
}

// run attacks and prints the results; healthy is false when an attack
// left the server down or another user unserved.
func (c *cli) run(ctx context.Context, out, logOut io.Writer) (healthy bool, err error) {
	if c.List {
		for _, n := range attack.Names() {
			fmt.Fprintf(out, "%-22s %s\n", n, attack.Describe(n))
		}
		return true, nil
	}
	level := slog.LevelWarn
	if c.Verbose {
		level = slog.LevelInfo
	}
	r, err := attack.New(c.options(slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))))
	if err != nil {
		return false, err
	}
	results, err := r.Run(ctx, c.Attacks)
	if len(results) > 0 {
		write := attack.WriteTable
		if c.JSON {
			write = attack.WriteJSON
		}
		if werr := write(out, results); werr != nil && err == nil {
			err = werr
		}
	}
	return attack.Healthy(results), err
}

func (c *cli) options(log *slog.Logger) attack.Options {
	return attack.Options{
		PushURL:     c.PushURL,
		WSURL:       c.WSURL,
		StatsURL:    c.StatsURL,
		AllowRemote: c.AllowRemote,
		Count:       c.Count,
		Duration:    c.Duration,
		Concurrency: c.Concurrency,
		HeaderSize:  c.HeaderSize,
		SubSize:     c.SubSize,
		TokenSize:   c.TokenSize,
		Logger:      log,
	}
}
