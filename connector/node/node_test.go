package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector"
	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/schema"
)

// recorder notes the shutdown's steps in the order they happen.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) note(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// until is a component that runs until its context ends (or fail returns
// first), then notes "<name> stopped".
func (r *recorder) until(name string, fail <-chan error) func(context.Context) error {
	return func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			r.note(name + " stopped")
			return nil
		case err := <-fail:
			r.note(name + " failed")
			return err
		}
	}
}

// fakeParts are the parts of a cluster node, a single node or a tool's.
func fakeParts(r *recorder, shape string, fail map[string]chan error) parts {
	p := parts{
		sockets: r.until("sockets", fail["sockets"]),
		flush: func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				r.note("flush without a deadline")
			}
			r.note("flush")
			return nil
		},
	}
	if shape == "tool" {
		return p
	}
	p.owner = r.until("owner", fail["owner"])
	p.held = func() { r.note("held") }
	if shape == "single" {
		return p
	}
	p.link = r.until("link", fail["link"])
	p.router = r.until("router", fail["router"])
	p.drain = func(ctx context.Context) {
		if _, ok := ctx.Deadline(); !ok {
			r.note("drain without a deadline")
		}
		r.note("drain")
	}
	return p
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestRunShutdownOrder: cancelling Run's ctx, or a component failing,
// stops every component in the order drain → write the owner's held
// Delivered events → flush → close sockets → leave group → close the node
// link, each only after the one before.
func TestRunShutdownOrder(t *testing.T) {
	tests := []struct {
		name    string
		shape   string // cluster, single, tool
		fails   string // the component that fails; "" cancels ctx
		want    []string
		wantErr string
	}{
		{"cluster", "cluster", "",
			[]string{"router stopped", "drain", "held", "flush", "sockets stopped", "owner stopped", "link stopped"}, ""},
		{"single node", "single", "",
			[]string{"held", "flush", "sockets stopped", "owner stopped"}, ""},
		{"tool link", "tool", "",
			[]string{"flush", "sockets stopped"}, ""},
		{"owner fails", "cluster", "owner",
			[]string{"owner failed", "router stopped", "drain", "held", "flush", "sockets stopped", "link stopped"}, "owner: boom"},
		{"sockets fail", "cluster", "sockets",
			[]string{"sockets failed", "router stopped", "drain", "held", "flush", "owner stopped", "link stopped"}, "connector: boom"},
		{"link fails", "cluster", "link",
			[]string{"link failed", "router stopped", "drain", "held", "flush", "sockets stopped", "owner stopped"}, "link: boom"},
		{"single owner fails", "single", "owner",
			[]string{"owner failed", "held", "flush", "sockets stopped"}, "owner: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			fail := map[string]chan error{tt.fails: make(chan error, 1)}
			n := &Node{
				cfg:   Config{DrainTimeout: time.Second, ShutdownTimeout: 5 * time.Second},
				log:   quiet(),
				parts: fakeParts(r, tt.shape, fail),
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- n.Run(ctx) }()
			time.Sleep(20 * time.Millisecond)
			if ev := r.list(); len(ev) != 0 {
				t.Fatalf("steps before the stop: %v", ev)
			}
			if tt.fails == "" {
				cancel()
			} else {
				fail[tt.fails] <- errors.New("boom")
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			if got := r.list(); !slices.Equal(got, tt.want) {
				t.Fatalf("steps %q, want %q", got, tt.want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Run = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Run = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestRunBoundedShutdown: a component that ignores its context does not
// hold Run past ShutdownTimeout, and a panic is a failure, not a crash.
func TestRunBoundedShutdown(t *testing.T) {
	r := &recorder{}
	block := make(chan struct{})
	defer close(block)
	p := fakeParts(r, "single", nil)
	p.owner = func(context.Context) error { <-block; return nil }
	p.sockets = func(context.Context) error { panic("bad socket") }
	n := &Node{cfg: Config{DrainTimeout: time.Second, ShutdownTimeout: 100 * time.Millisecond}, log: quiet(), parts: p}
	start := time.Now()
	err := n.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "connector: panic: bad socket") ||
		!strings.Contains(err.Error(), "owner still running after the shutdown timeout") {
		t.Fatalf("Run = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s", d)
	}
}

// TestNew: New validates its config and assembles the parts each shape
// needs (nothing dials: the brokers are never reached).
func TestNew(t *testing.T) {
	key := make([]byte, schema.KeySize)
	sealer, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		return ln
	}
	base := func() Config {
		return Config{
			Server:   connector.Config{NodeID: "n1", PublicURL: "http://127.0.0.1:1", Sealer: sealer, Producer: producer},
			Owner:    owner.Config{Producer: producer, Sealer: sealer, Partitions: 4, NodeID: "n1"},
			Listener: listen(),
			Logger:   quiet(),
		}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
		parts   []string // the parts New made
	}{
		{"single node", func(*Config) {}, "", []string{"owner", "sockets", "flush"}},
		{"cluster", func(c *Config) {
			c.Cluster = &Cluster{Listener: listen(), Secret: []byte("0123456789abcdef-secret")}
		}, "", []string{"link", "router", "owner", "sockets", "drain", "flush"}},
		{"tool link", func(c *Config) { c.Link = fakeLink{}; c.Owner = owner.Config{} }, "", []string{"sockets", "flush"}},
		{"no listener", func(c *Config) { c.Listener = nil }, "Listener is required", nil},
		{"no cluster listener", func(c *Config) { c.Cluster = &Cluster{Secret: []byte("0123456789abcdef")} }, "Cluster.Listener", nil},
		{"short secret", func(c *Config) { c.Cluster = &Cluster{Listener: listen(), Secret: []byte("short")} }, "secret", nil},
		{"bad owner", func(c *Config) { c.Owner.Partitions = 0 }, "owner", nil},
		{"bad server", func(c *Config) { c.Server.PublicURL = "ftp://x" }, "PublicURL", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mod(&cfg)
			n, err := New(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := n.parts.names(); !slices.Equal(got, tt.parts) {
				t.Fatalf("parts %v, want %v", got, tt.parts)
			}
		})
	}
}

func (p parts) names() []string {
	var out []string
	for _, x := range []struct {
		name string
		set  bool
	}{
		{"link", p.link != nil}, {"router", p.router != nil}, {"owner", p.owner != nil},
		{"sockets", p.sockets != nil}, {"drain", p.drain != nil}, {"flush", p.flush != nil},
	} {
		if x.set {
			out = append(out, x.name)
		}
	}
	return out
}

// fakeLink stands for a tool's owner; New only stores it.
type fakeLink struct{ link.Link }
