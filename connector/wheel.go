package connector

import (
	"sync"
	"time"

	"github.com/pushlog/pushlog/connector/protocol"
)

// wheel is a coarse timer wheel for the connections' timeouts (hello, idle
// Ping, Pong). Each open connection sits in the slot of the first tick
// after its next timeout could fall due, so the sweeper looks only at the
// connections of the slots that passed instead of every connection every
// tick (issue 17: 10,000 idle sockets cost a scan per second before). Reads
// do not move a connection: its check fires at the old time, finds it not
// due (the client was heard from since) and puts it where it belongs now.
//
// Its times are the wheel's clock (at): nanoseconds since epoch on the
// monotonic clock, never the wall clock's, so a wall-clock step (NTP, a
// changed date) neither fires every timeout at once nor postpones them.
type wheel struct {
	tick  int64     // slot width, nanoseconds
	epoch time.Time // with a monotonic reading (time.Now's)

	mu    sync.Mutex
	slots map[int64][]*conn
	cur   int64 // the last slot taken
}

// newWheel starts a wheel whose clock reads 0 at epoch, which must carry a
// monotonic reading (time.Now()).
func newWheel(tick time.Duration, epoch time.Time) *wheel {
	return &wheel{tick: max(int64(tick), 1), epoch: epoch, slots: map[int64][]*conn{}}
}

// at is t on the wheel's clock: t.Sub(epoch), which Go takes from the
// monotonic readings when both carry one (time.Now's and a Ticker's times
// do), so a wall-clock step moves nothing. The sweeper's times come a tick
// or more after epoch, so a Ping it stamps is never 0 ("none sent").
func (w *wheel) at(t time.Time) int64 { return int64(t.Sub(w.epoch)) }

// schedule puts c in the slot after at (the wheel's clock), and never in
// one already taken. A closed connection is not scheduled: close removes it
// after marking it closed, so one of the two always sees the other.
func (w *wheel) schedule(c *conn, at int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(c)
	if c.proto.Phase() == stateClosed {
		return
	}
	k := max(at/w.tick+1, w.cur+1)
	s := w.slots[k]
	c.slot, c.slotIdx = k, int32(len(s))
	w.slots[k] = append(s, c)
}

// remove takes c out of the wheel (it closed).
func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	w.removeLocked(c)
	w.mu.Unlock()
}

func (w *wheel) removeLocked(c *conn) {
	if c.slot == 0 {
		return
	}
	s := w.slots[c.slot]
	last := len(s) - 1
	if i := int(c.slotIdx); i < last {
		s[i] = s[last]
		s[i].slotIdx = int32(i)
	}
	s[last] = nil
	if last == 0 {
		delete(w.slots, c.slot)
	} else {
		w.slots[c.slot] = s[:last]
	}
	c.slot = 0
}

// expired takes the connections of every slot up to now out of the wheel.
func (w *wheel) expired(now int64) []*conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*conn
	for k := now / w.tick; w.cur < k; {
		w.cur++
		if s, ok := w.slots[w.cur]; ok {
			for _, c := range s {
				c.slot = 0
			}
			out = append(out, s...)
			delete(w.slots, w.cur)
		}
	}
	return out
}

// nextCheck is when c's next timeout could fall due (the wheel's clock),
// by the same rules as protocol.Client.Tick, which decides.
func nextCheck(env *protocol.Env, c *conn) int64 {
	l := c.liveness()
	switch {
	case c.proto.Phase() == protocol.AwaitHello:
		// Its hello may come any moment, and from then on the idle Ping
		// counts: the earlier of the two.
		return l.Since + int64(min(env.HelloTimeout, env.PingInterval))
	case l.PingSent != 0:
		return l.PingSent + int64(env.PongTimeout)
	default:
		return l.LastRecv + int64(env.PingInterval)
	}
}
