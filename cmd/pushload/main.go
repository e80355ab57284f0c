// Command pushload is a load tool for the pushlog connection node.
//
//	pushload conns --url ws://127.0.0.1:8080/ --n 5000 --hold 60s
//
// opens N WebSocket connections (hello + one register each, 20 at a time),
// reports when all are up ("READY ..."), holds them idle and prints a
// summary. One process can hold about 19,000 sockets (open files are capped
// at 20,000 per process): run several for more.
//
//	pushload serve --listen 127.0.0.1:8080 --debug 127.0.0.1:8081
//
// runs a connection node on an in-process link and an in-process Kafka
// (kfake, records discarded) so connection memory can be measured without
// the rest of pushlog; /debug/gc and /debug/stats on the debug address help
// the measurement (connector/memmeasure.sh).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	Conns connsCmd `cmd:"" help:"Open N idle push connections and hold them."`
	Serve serveCmd `cmd:"" help:"Run a standalone connection node for measurements."`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cli
	k := kong.Parse(&c,
		kong.Name("pushload"),
		kong.Description("Load and memory tool for the pushlog WebSocket connection node."),
		kong.BindTo(ctx, (*context.Context)(nil)),
	)
	k.FatalIfErrorf(k.Run())
}
