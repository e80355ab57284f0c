package group

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// killableDialer dials for kgo clients and can make a broker's address
// behave like a crashed broker: its connections closed, dials refused.
type killableDialer struct {
	mu    sync.Mutex
	dead  map[string]bool
	conns map[string][]net.Conn
}

func (d *killableDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead[addr] {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		d.conns[addr] = append(d.conns[addr], c)
	}
	return c, err
}

func (d *killableDialer) kill(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead[addr] = true
	for _, c := range d.conns[addr] {
		_ = c.Close()
	}
}

// TestAdminSurvivesDeadCoordinator: after the broker coordinating a group
// crashes, a group request through Admin reaches the group's new
// coordinator.
func TestAdminSurvivesDeadCoordinator(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(1, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	d := &killableDialer{dead: map[string]bool{}, conns: map[string][]net.Conn{}}
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.Dialer(d.dial), kgo.RetryTimeout(3 * time.Second)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const grp = "g"
	a, err := NewAdmin(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fetch := func(adm *kadm.Client) error {
		res, err := adm.FetchOffsets(ctx, grp)
		if err != nil {
			return err
		}
		if o, ok := res.Lookup(testTopic, 0); !ok || o.At != 7 {
			return fmt.Errorf("committed %+v, want 7", o)
		}
		return nil
	}
	if err := a.Do(ctx, func(adm *kadm.Client) error {
		off := kadm.Offsets{}
		off.AddOffset(testTopic, 0, 7, -1)
		if _, err := adm.CommitOffsets(ctx, grp, off); err != nil {
			return err
		}
		return fetch(adm) // caches the coordinator
	}); err != nil {
		t.Fatal(err)
	}

	coord := c.CoordinatorFor(grp)
	var addr string
	if err := a.Do(ctx, func(adm *kadm.Client) error {
		brokers, err := adm.ListBrokers(ctx)
		for _, b := range brokers {
			if b.NodeID == coord {
				addr = net.JoinHostPort(b.Host, fmt.Sprint(b.Port))
			}
		}
		return err
	}); err != nil || addr == "" {
		t.Fatalf("coordinator %d's address: %q, %v", coord, addr, err)
	}
	d.kill(addr)
	if err := c.RemoveNode(coord); err != nil {
		t.Fatal(err)
	}
	if now := c.CoordinatorFor(grp); now == coord {
		t.Fatalf("coordinator still %d", now)
	}

	calls := 0
	err = a.Do(ctx, func(adm *kadm.Client) error { calls++; return fetch(adm) })
	if err != nil {
		t.Fatalf("fetch offsets after the coordinator died: %v (%d calls)", err, calls)
	}
	t.Logf("after the coordinator died: %d call(s)", calls) // 2 with franz-go v1.22.3
}

func TestAdminDo(t *testing.T) {
	dialErr := fmt.Errorf("unable to dial: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	other := errors.New("GROUP_AUTHORIZATION_FAILED")
	for _, tc := range []struct {
		name      string
		errs      []error // returned by successive calls
		wantCalls int
		wantErr   error
		newClient bool
	}{
		{name: "ok", errs: []error{nil}, wantCalls: 1},
		{name: "other error: no retry", errs: []error{other}, wantCalls: 1, wantErr: other},
		{name: "dial error: fresh client", errs: []error{dialErr, nil}, wantCalls: 2, newClient: true},
		{name: "dial errors, then another error", errs: []error{dialErr, dialErr, other}, wantCalls: 3, wantErr: other, newClient: true},
		{name: "dial errors throughout: the last is returned", errs: []error{dialErr, dialErr, dialErr, dialErr, dialErr}, wantCalls: 1 + adminDialRetries, wantErr: dialErr, newClient: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAdmin(kgo.SeedBrokers("127.0.0.1:1"))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if a.cl != nil {
				t.Fatal("a client before the first request")
			}
			var seen []*kadm.Client
			var first *kgo.Client
			err = a.Do(context.Background(), func(adm *kadm.Client) error {
				if len(seen) == 0 {
					first = a.cl
				}
				seen = append(seen, adm)
				return tc.errs[len(seen)-1]
			})
			if len(seen) != tc.wantCalls || !errors.Is(err, tc.wantErr) {
				t.Fatalf("%d calls, err %v; want %d, %v", len(seen), err, tc.wantCalls, tc.wantErr)
			}
			if (a.cl != first) != tc.newClient {
				t.Fatalf("client replaced: %v, want %v", a.cl != first, tc.newClient)
			}
		})
	}
}

// TestAdminTurns: one request at a time; a caller waiting for its turn
// gives up when its context ends; Close waits for the request in flight
// and Do fails afterwards.
func TestAdminTurns(t *testing.T) {
	a, err := NewAdmin(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- a.Do(context.Background(), func(*kadm.Client) error { close(inside); <-release; return nil })
	}()
	<-inside
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.Do(ctx, func(*kadm.Client) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for the turn: %v", err)
	}
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close did not wait for the request in flight")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-closed
	if err := a.Do(context.Background(), func(*kadm.Client) error { return nil }); err == nil {
		t.Fatal("Do after Close succeeded")
	}
	if _, err := NewAdmin(kgo.SeedBrokers()); err == nil {
		t.Fatal("NewAdmin without seed brokers succeeded")
	}
}

func TestIsDialError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("dial"), false},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, false},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("fetch committed offsets: unable to dial: %w", &net.OpError{Op: "dial", Err: syscall.ETIMEDOUT}), true},
	} {
		if got := IsDialError(tc.err); got != tc.want {
			t.Errorf("IsDialError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
