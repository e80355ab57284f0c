// Command pushlog is the pushlog push service (every server role), its
// operator commands, and small client tools for trying it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	Log         logFlags         `embed:"" prefix:"log-"`
	VersionFlag kong.VersionFlag `name:"version" help:"Print the version and commit, and exit."`

	Serve     serveCmd     `cmd:"" help:"Run the push service (embedded Kafka unless KAFKA_BROKERS is set)."`
	Keys      keysCmd      `cmd:"" help:"Generate a VAPID key pair for an application server."`
	Listen    listenCmd    `cmd:"" help:"Connect as a user agent, subscribe, and print (decrypted) pushes."`
	Send      sendCmd      `cmd:"" help:"Encrypt and send a push to a subscription, signed with VAPID."`
	Analytics analyticsCmd `cmd:"" help:"ClickHouse analytics: migrations and reports."`
	Replay    replayCmd    `cmd:"" help:"Re-drive delivery from a time or offsets: rewind the stopped connectors group (messages and acks)."`
	Status    statusCmd    `cmd:"" help:"Nodes, partition owners, consumer lag, connections, pending messages and breakers of a deployment."`
	Topics    topicsCmd    `cmd:"" help:"Verify the topics (partitions, retention, compaction) and explain each mismatch; --create creates missing ones."`
	Broadcast broadcastCmd `cmd:"" help:"Set or list the broadcasts (megaphone) every connector node serves: 'broadcast set ID=VERSION...', 'broadcast list'."`
	Import    importCmd    `cmd:"" help:"Import users from another push service (autopush: Redis) so browsers keep their subscriptions."`
	Repair    repairCmd    `cmd:"" help:"Verify the embedded broker's files and drop damaged records (serve refuses to start on damage); reports what it drops."`
	Health    healthCmd    `cmd:"" help:"Exit 0 when a pushlog listener's heartbeat answers 200, 1 otherwise (a container healthcheck: the image has no curl)."`
	Version   versionCmd   `cmd:"" help:"Print the version and commit."`
}

// exitParse is the exit code of a command line that does not parse
// (kong's own code for parse errors).
const exitParse = 80

func newParser(c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("pushlog"),
		kong.Description("An event-sourced WebPush service on Kafka."),
		kong.Vars{"version": readBuildVersion().String()},
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
	)
}

// parseErrorLine is the one line a parse error prints: the error and where
// to look, not the whole help.
func parseErrorLine(err error) string {
	hint := "pushlog --help"
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		if n := pe.Context.Selected(); n != nil {
			hint = n.FullPath() + " --help"
		}
	}
	return fmt.Sprintf("pushlog: %v (see %s)", err, hint)
}

func main() {
	var c cli
	parser, err := newParser(&c, os.Stdout, os.Stderr, os.Exit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushlog:", err)
		os.Exit(1)
	}
	kctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, parseErrorLine(err))
		os.Exit(exitParse)
	}
	logger, err := c.Log.logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushlog:", err)
		os.Exit(exitParse)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(logger)
	if err := kctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "pushlog:", err)
		os.Exit(1)
	}
}
