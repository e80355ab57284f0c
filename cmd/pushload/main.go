// Command pushload is pushlog's load tool. Against a running `pushlog
// serve` (--ws is its WebSocket URL, --pid its process for /proc readings):
//
//	pushload rate --ws ws://127.0.0.1:8080/ --pid PID --rate 100 --duration 10s
//
// sends pushes on an open-loop schedule to connected user agents that ack
// every notification and prints push → socket latency quantiles (POST sent
// → notification read; p99 from the scheduled time too) and server CPU per
// push (utime+stime of /proc/PID/stat over the window / accepted pushes).
//
//	pushload idle --ws ws://127.0.0.1:8080/ --pid PID --n 10000
//
// holds N idle connections from child `pushload conns` processes and prints
// server RSS per connection (VmRSS, no forced GC) and idle CPU.
//
//	pushload offline|connected|fresh-jwt --ws ... --pid PID --concurrency 32 --duration 10s
//
// push as fast as the server answers (closed loop) and print accepted/s
// (and delivered/s for connected user agents).
//
// Every push is a real aes128gcm body with real VAPID. Each mode prints a
// human summary and one "RESULT key=value ..." line for scripts
// (deploy/bench/compare.sh). Run the server with push quotas off
// (PUSHLOG_PUSH_QUOTA_VAPID_RATE=-1 PUSHLOG_PUSH_QUOTA_SUBSCRIPTION_RATE=-1),
// or the quotas, not the server, set the pace.
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
	Rate      rateCmd      `cmd:"" help:"Fixed-rate pushes (open loop) to connected user agents: push → socket latency quantiles and server CPU per push."`
	Offline   offlineCmd   `cmd:"" help:"Closed-loop pushes to disconnected user agents (stored): accepted/s, status counts, server CPU per push."`
	Connected connectedCmd `cmd:"" help:"Closed-loop pushes to connected user agents that ack every notification: accepted/s, delivered/s."`
	FreshJWT  freshJWTCmd  `cmd:"" name:"fresh-jwt" help:"Like offline, but every push carries a freshly signed VAPID JWT (npm web-push and pywebpush's default): accepted/s."`
	Idle      idleCmd      `cmd:"" help:"Hold N idle connections from several child processes: server RSS per connection (no forced GC) and idle CPU."`
	Conns     connsCmd     `cmd:"" help:"Open N idle push connections and hold them."`
	Serve     serveCmd     `cmd:"" help:"Run a standalone connection node for measurements."`
	Kafka     kafkaCmd     `cmd:"" help:"The broker alone: records produced at a fixed rate as ingest produces a push (acks=all, no linger) and read back as the owner reads them: produce-ack and produce→fetch latency quantiles, the floor under push → socket on that broker."`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var c cli
	k := kong.Parse(&c,
		kong.Name("pushload"),
		kong.Description("Load tool for pushlog: push rates, latency, CPU per push, memory per connection."),
		kong.BindTo(ctx, (*context.Context)(nil)),
	)
	k.FatalIfErrorf(k.Run())
}
