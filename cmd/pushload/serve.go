package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/node"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

type serveCmd struct {
	Listen    string   `default:"127.0.0.1:8080" help:"WebSocket listen address."`
	Debug     string   `help:"Address for /debug/gc and /debug/stats (off when empty)."`
	Brokers   []string `help:"Kafka brokers; empty runs an in-process kfake that discards records."`
	PublicURL string   `default:"http://127.0.0.1:8082" help:"Endpoint base in register replies."`
	LogLevel  string   `default:"warn" enum:"debug,info,warn,error" help:"Log level."`
	// MemProfileRate 1 records every allocation: exact /debug/pprof/heap
	// figures per connection, at a cost in speed.
	MemProfileRate int `help:"runtime.MemProfileRate (0 keeps Go's default)."`
}

func (cmd *serveCmd) Run(ctx context.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cmd.LogLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if cmd.MemProfileRate > 0 {
		runtime.MemProfileRate = cmd.MemProfileRate
	}
	brokers := cmd.Brokers
	if len(brokers) == 0 {
		// Records are discarded so the broker's memory does not grow with
		// the connections being measured.
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BlackholeProduce(),
			kfake.SeedTopics(schema.DefaultPartitions, schema.TopicRegistrations, schema.TopicPresence, schema.TopicAcks, schema.TopicMessages, schema.TopicChannels))
		if err != nil {
			return fmt.Errorf("kfake: %w", err)
		}
		defer cluster.Close()
		brokers = cluster.ListenAddrs()
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer producer.Close()
	key := make([]byte, schema.KeySize)
	_, _ = rand.Read(key)
	sealer, err := schema.NewSealer([][]byte{key})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cmd.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The same connector node as pushlog's, with an in-memory owner.
	n, err := node.New(node.Config{
		Server: connector.Config{
			NodeID:    "pushload",
			PublicURL: cmd.PublicURL,
			Sealer:    sealer,
			Producer:  producer,
			Logger:    log,
		},
		Link:     newMemLink(),
		Listener: ln,
		Logger:   log,
	})
	if err != nil {
		_ = ln.Close()
		return err
	}
	if cmd.Debug != "" {
		dln, err := net.Listen("tcp", cmd.Debug)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("debug listen: %w", err)
		}
		ds := &http.Server{Handler: debugMux(n), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = ds.Serve(dln) }()
		defer ds.Close()
		fmt.Printf("DEBUG http://%s/debug/stats\n", dln.Addr())
	}
	fmt.Printf("LISTENING ws://%s/ pid=%d\n", ln.Addr(), os.Getpid())
	return n.Run(ctx)
}

// debugMux serves /debug/gc (a full GC that returns free memory to the OS,
// so VmRSS reflects live memory), /debug/stats and /debug/pprof/heap.
func debugMux(srv interface{ Connections() int }) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/gc", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/debug/stats", func(w http.ResponseWriter, _ *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"connections": srv.Connections(),
			"goroutines":  runtime.NumGoroutine(),
			"heap_alloc":  ms.HeapAlloc,
			"heap_inuse":  ms.HeapInuse,
			"stack_inuse": ms.StackInuse,
			"sys":         ms.Sys,
		})
	})
	mux.Handle("/debug/pprof/heap", pprof.Handler("heap"))
	return mux
}

// memLink is a trivial in-memory owner: every UAID it attached is known.
type memLink struct {
	mu       sync.Mutex
	known    map[schema.UAID]bool
	sessions map[schema.UAID]link.Session
}

func newMemLink() *memLink {
	return &memLink{known: map[schema.UAID]bool{}, sessions: map[schema.UAID]link.Session{}}
}

func (l *memLink) CheckUAID(ctx context.Context, uaid schema.UAID) (link.UAIDInfo, error) {
	if err := ctx.Err(); err != nil {
		return link.UAIDInfo{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Channels are not tracked here: a partial list makes the connector
	// write every unregister, as before.
	return link.UAIDInfo{Valid: l.known[uaid], Partial: true}, nil
}

func (l *memLink) Attach(ctx context.Context, uaid schema.UAID, s link.Session) error {
	if err := ctx.Err(); err != nil {
		return errors.Join(link.ErrNotOwner, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.known[uaid] = true
	l.sessions[uaid] = s
	return nil
}

func (l *memLink) Detach(uaid schema.UAID, s link.Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessions[uaid] == s {
		delete(l.sessions, uaid)
	}
}

func (l *memLink) Acked(schema.UAID, *pb.MessageRef) {}
