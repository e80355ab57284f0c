package protocol

import (
	"bytes"
	"slices"
	"time"

	"github.com/pushlog/pushlog/connector/link"
)

// Per-client bounds the machine enforces. The settings (MaxChannels and the
// rates) come in Env; these are constants, because no real client comes
// near them (a client message is also bounded in bytes by the socket).
const (
	// MaxBroadcastEntries bounds the broadcasts map of a hello or a
	// broadcast_subscribe: Firefox follows one or two Megaphone ids, and
	// unknown ids are echoed back under "errors", so the reply grows with
	// the request.
	MaxBroadcastEntries = 64
	// MaxBroadcastField bounds a broadcast id and a version in bytes
	// ("remote-settings/monitor_changes", "\"1700000000000\"").
	MaxBroadcastField = 128
	// MaxAckUpdates bounds the updates of one ack: Firefox sends one per
	// notification; each update may write an Acked event.
	MaxAckUpdates = 100
	// MaxUnacked bounds the delivered-but-unacked refs remembered per
	// client (acks of them are free of the message rate).
	MaxUnacked = 1024
)

// Limit names: the label of a Refused effect (and of the refusals metric).
const (
	LimitChannels      = "channels"          // register past MaxChannels: status 413
	LimitRegistrations = "registration_rate" // register/unregister past MaxRegistrationsPerMinute: status 429
	LimitMessages      = "message_rate"      // any message past MaxMessagesPerMinute: close 4774
	LimitBroadcasts    = "broadcasts"        // broadcasts map too big: close 1008
	LimitAckUpdates    = "ack_updates"       // ack with too many updates: close 1008
)

// Rate is a token bucket kept as one number (the generic cell rate
// algorithm): tat is the time, in unix nanoseconds, at which the bucket
// would be full again. A bucket of n tokens refilled over period allows n
// back to back, then one every period/n. The time is always passed in.
type Rate struct{ tat int64 }

// Allow takes cost tokens at now (unix nanoseconds) if the bucket has them.
func (g *Rate) Allow(now int64, n int, period time.Duration, cost int) bool {
	if cost <= 0 {
		return true
	}
	interval := int64(period) / int64(n)
	tat := max(g.tat, now)
	next := tat + int64(cost)*interval
	if next-now > int64(period) {
		return false
	}
	g.tat = next
	return true
}

// Clock turns times into the nanoseconds a Rate counts: since Epoch on
// the monotonic clock, so a wall-clock step (NTP, a resumed VM) neither
// refills the buckets nor empties them for as long as the clock went back
// (which refused every client until then). Epoch must carry time.Now's
// monotonic reading; a zero Epoch (tests that give their own times)
// counts Unix nanoseconds.
type Clock struct{ Epoch time.Time }

// Nanos is now on the clock.
func (c Clock) Nanos(now time.Time) int64 {
	if c.Epoch.IsZero() {
		return now.UnixNano()
	}
	return int64(now.Sub(c.Epoch))
}

// Full reports whether the bucket is full again at now: the same as a
// bucket never used, so a table of buckets may forget it.
func (g *Rate) Full(now int64) bool { return g.tat <= now }

// chanSet is the UAID's registered channels as one socket knows them:
// the owner's list at hello plus this socket's own registers and
// unregisters. Sorted, 16 bytes per channel, nothing before hello.
type chanSet struct {
	ids [][16]byte
	// partial: the owner's list may miss channels (an older owner, or
	// more than the node link carries), so an unregister of a channel not
	// here is written anyway.
	partial bool
}

func newChanSet(info link.UAIDInfo) chanSet {
	if !info.Valid {
		return chanSet{}
	}
	ids := slices.Clone(info.Channels)
	slices.SortFunc(ids, cmpID)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		ids = nil
	}
	return chanSet{ids: slices.Clip(ids), partial: info.Partial}
}

func cmpID(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) }

func (s *chanSet) has(id [16]byte) bool {
	_, ok := slices.BinarySearchFunc(s.ids, id, cmpID)
	return ok
}

func (s *chanSet) add(id [16]byte) {
	i, ok := slices.BinarySearchFunc(s.ids, id, cmpID)
	if !ok {
		s.ids = slices.Insert(s.ids, i, id)
	}
}

func (s *chanSet) remove(id [16]byte) {
	if i, ok := slices.BinarySearchFunc(s.ids, id, cmpID); ok {
		s.ids = slices.Delete(s.ids, i, i+1)
		if len(s.ids) == 0 {
			s.ids = nil // a slice never shrinks: drop it
		}
	}
}

// broadcastsTooBig reports whether a client's broadcasts map exceeds the
// bounds.
func broadcastsTooBig(m map[string]string) bool {
	if len(m) > MaxBroadcastEntries {
		return true
	}
	for id, v := range m {
		if len(id) > MaxBroadcastField || len(v) > MaxBroadcastField {
			return true
		}
	}
	return false
}
