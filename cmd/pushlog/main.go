// Command pushlog is the pushlog push service (every server role), its
// operator commands, and small client tools for trying it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type cli struct {
	Log logFlags `embed:"" prefix:"log-"`

	Serve     serveCmd     `cmd:"" help:"Run the push service (embedded Kafka unless KAFKA_BROKERS is set)."`
	Keys      keysCmd      `cmd:"" help:"Generate a VAPID key pair for an application server."`
	Listen    listenCmd    `cmd:"" help:"Connect as a user agent, subscribe, and print (decrypted) pushes."`
	Send      sendCmd      `cmd:"" help:"Encrypt and send a push to a subscription, signed with VAPID."`
	Analytics analyticsCmd `cmd:"" help:"ClickHouse analytics: migrations and reports."`
	Replay    replayCmd    `cmd:"" help:"Re-drive delivery from a time or offsets: rewind the stopped connectors group (messages and acks)."`
	Status    statusCmd    `cmd:"" help:"Nodes, partition owners, consumer lag, connections, pending messages and breakers of a deployment."`
	Topics    topicsCmd    `cmd:"" help:"Verify the topics (partitions, retention, compaction) and explain each mismatch; --create creates missing ones."`
	Repair    repairCmd    `cmd:"" help:"Verify the embedded broker's files and drop damaged records (serve refuses to start on damage); reports what it drops."`
	Version   versionCmd   `cmd:"" help:"Print the version."`
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println(version)
	return nil
}

func main() {
	var c cli
	kctx := kong.Parse(&c,
		kong.Name("pushlog"),
		kong.Description("An event-sourced WebPush service on Kafka."),
		kong.UsageOnError(),
	)
	logger, err := c.Log.logger(os.Stderr)
	kctx.FatalIfErrorf(err)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(logger)
	if err := kctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "pushlog:", err)
		os.Exit(1)
	}
}
