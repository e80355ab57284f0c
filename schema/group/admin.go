package group

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

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
// Admin answers a failed dial by replacing its client with a fresh one,
// which finds the current coordinator, and running the request again.
//
// One request runs at a time (a waiting caller gives up when its context
// ends): it is meant for one periodic caller, such as a routing table or
// a lag monitor. The client is made by the first request, so an Admin
// that never runs holds nothing.
type Admin struct {
	opts []kgo.Opt
	sem  chan struct{} // holds the turn; guards cl and closed
	cl   *kgo.Client

	closed bool
}

// adminDialRetries is how many times a request that failed to dial runs
// again on the fresh client: the dead broker may still be one of the
// seeds, and a fresh client asks a random one where the coordinator is.
const adminDialRetries = 4

// NewAdmin makes an Admin over clients built from opts; it checks opts by
// building one, and does no I/O.
func NewAdmin(opts ...kgo.Opt) (*Admin, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	cl.Close()
	return &Admin{opts: slices.Clone(opts), sem: make(chan struct{}, 1)}, nil
}

// Do runs fn with the admin client. When fn fails to dial a broker, the
// client is replaced and fn runs again, up to adminDialRetries times, so
// fn must be safe to repeat (reads are). The last error is returned.
func (a *Admin) Do(ctx context.Context, fn func(*kadm.Client) error) error {
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.sem }()
	if a.closed {
		return errors.New("admin client closed")
	}
	if err := a.ensure(); err != nil {
		return err
	}
	err := fn(kadm.NewClient(a.cl))
	for retry := 0; retry < adminDialRetries && err != nil && IsDialError(err); retry++ {
		if retry == 0 {
			// The first retry runs at once, on a fresh client.
			if ctx.Err() != nil {
				return err
			}
			a.cl.Close()
			a.cl = nil
			if err := a.ensure(); err != nil {
				return err
			}
		} else {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(retry) * 50 * time.Millisecond):
			}
		}
		err = fn(kadm.NewClient(a.cl))
	}
	return err
}

// ensure makes the client if there is none; the caller holds the turn.
func (a *Admin) ensure() error {
	if a.cl != nil {
		return nil
	}
	cl, err := kgo.NewClient(a.opts...)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	a.cl = cl
	return nil
}

// Close closes the client, after a request in flight; Do fails afterwards.
func (a *Admin) Close() {
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	a.closed = true
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
