package group

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Admin is an admin client for a long-running caller's group requests
// (describe a group, fetch its committed offsets) that survives the death
// of the group's coordinator.
//
// franz-go (v1.22.3) caches each group's coordinator. Its sharded group
// requests (OffsetFetch, DescribeGroups) do not drop that cache entry when
// the coordinator cannot be dialled, only on a coordinator error code from
// a live broker, so once the coordinator's broker is dead every later
// request dials it again, until it returns: hours, if it never does.
// Admin answers a failed dial by replacing its client with a fresh one
// (which finds the current coordinator) and running the request once more.
//
// Do holds the client for the whole request, so requests are serialised:
// it is meant for periodic callers (a routing table, a lag monitor).
type Admin struct {
	opts []kgo.Opt

	mu sync.Mutex
	cl *kgo.Client
}

// NewAdmin makes an Admin over a client built from opts. It does no I/O.
func NewAdmin(opts ...kgo.Opt) (*Admin, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	return &Admin{opts: opts, cl: cl}, nil
}

// Do runs fn with the admin client. When fn fails to dial a broker the
// client is replaced and fn runs once more with the new one; its error is
// returned then.
func (a *Admin) Do(ctx context.Context, fn func(*kadm.Client) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cl == nil {
		return errors.New("admin client closed")
	}
	err := fn(kadm.NewClient(a.cl))
	if err == nil || !IsDialError(err) || ctx.Err() != nil {
		return err
	}
	fresh, ferr := kgo.NewClient(a.opts...)
	if ferr != nil {
		return errors.Join(err, fmt.Errorf("admin client: %w", ferr))
	}
	a.cl.Close()
	a.cl = fresh
	return fn(kadm.NewClient(a.cl))
}

// Close closes the client; Do fails afterwards.
func (a *Admin) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cl != nil {
		a.cl.Close()
		a.cl = nil
	}
}

// IsDialError reports whether err is a failure to connect to a broker, as
// franz-go reports it (a *net.OpError of a dial, wrapped).
func IsDialError(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && ne.Op == "dial"
}
