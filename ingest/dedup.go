package ingest

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// dedupMinWindow is the shortest time a settled append is remembered, so
// the retry of a TTL 0 push (or one with a TTL of a few seconds) after a 503
// is still recognised.
const dedupMinWindow = time.Minute

// dedupEntryBytes is the measured heap of one settled index entry (map
// slot, entry, queue slot: 126 bytes at 100,000 entries); the channel of a
// pending entry is freed when it settles.
const dedupEntryBytes = 128

// dedupKey is two 64-bit maphashes of (uaid, channel, body) under two
// process-random seeds. The index is in memory and per process, so the
// key needs no stable format; a push body is up to 4 KiB, where SHA-256
// cost about 2 µs per push and the runtime's AES hash a tenth of it. A
// collision only ever answers a push to the same subscription as a retry
// of another: the seeds are secret and senders cannot predict each
// other's encrypted bodies.
type dedupKey [16]byte

// dedupSeeds are drawn once at start and never change.
var dedupSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func dedupKeyOf(uaid, channelID string, body []byte) dedupKey {
	var k dedupKey
	for i, seed := range dedupSeeds {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteString(uaid)
		h.WriteByte(0)
		h.WriteString(channelID)
		h.WriteByte(0)
		h.Write(body)
		binary.LittleEndian.PutUint64(k[8*i:], h.Sum64())
	}
	return k
}

// dedupEntry is one push being appended (pending) or appended (settled).
// Fields other than done are written under the index lock before done is
// closed, and read by waiters after it is.
type dedupEntry struct {
	done      chan struct{} // closed when settled; nil once settled (frees it)
	settled   bool
	ok        bool // settled and durably written
	partition int32
	offset    int64
	ttl       int64     // applied TTL of the original, echoed to a retry
	expires   time.Time // settled: forgotten after this
}

// dedupIndex recognises a sender's retry of a push this process already
// appended or still has in flight (issue 11 finding 6: a 503 after a
// produce timeout may be written anyway). Entries are bounded in count and
// evicted oldest first. It is per process: a retry that lands on another
// ingest node is not recognised.
type dedupIndex struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	m     map[dedupKey]*dedupEntry
	order []dedupSlot // insertion order; may hold replaced or dropped entries

	hits      atomic.Int64 // retries answered with the original's Location
	waits     atomic.Int64 // retries that found the original in flight
	evictions atomic.Int64
	entries   atomic.Int64
}

type dedupSlot struct {
	k dedupKey
	e *dedupEntry
}

func newDedupIndex(max int, now func() time.Time) *dedupIndex {
	return &dedupIndex{max: max, now: now, m: make(map[dedupKey]*dedupEntry)}
}

// claim returns the live entry for k (owner false: a retry, wait on it) or
// registers a new pending entry owned by the caller, who must settle it.
// The returned done channel is the entry's (nil when already settled).
func (d *dedupIndex) claim(k dedupKey, ttl int64) (e *dedupEntry, done <-chan struct{}, owner bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.m[k]; e != nil {
		if !e.settled {
			d.waits.Add(1)
			return e, e.done, false
		}
		if e.ok && !d.now().After(e.expires) {
			return e, nil, false
		}
		delete(d.m, k) // failed or expired
	}
	e = &dedupEntry{done: make(chan struct{}), ttl: ttl}
	d.m[k] = e
	d.order = append(d.order, dedupSlot{k, e})
	// Bound the live entries, not the slots: slots of forgotten entries
	// (refused, failed, expired, replaced) must not push live ones out, or
	// a burst of refused pushes empties the index (reviewer's finding).
	for len(d.m) > d.max {
		d.evictOldest()
	}
	if len(d.order) > 2*d.max {
		d.compact()
	}
	d.entries.Store(int64(len(d.m)))
	return e, e.done, true
}

// live reports whether k has an entry a claim would wait on or answer
// from (pending, or written and not expired).
func (d *dedupIndex) live(k dedupKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.m[k]
	return e != nil && (!e.settled || e.ok && !d.now().After(e.expires))
}

// evictOldest drops the oldest live entry, discarding dead slots before it.
func (d *dedupIndex) evictOldest() {
	for len(d.order) > 0 {
		s := d.order[0]
		d.order[0] = dedupSlot{}
		d.order = d.order[1:]
		if d.m[s.k] == s.e {
			delete(d.m, s.k)
			d.evictions.Add(1)
			return
		}
	}
}

// compact drops the slots of forgotten entries, keeping the order: the
// queue stays within 2*max slots however many entries were forgotten.
func (d *dedupIndex) compact() {
	live := make([]dedupSlot, 0, len(d.m))
	for _, s := range d.order {
		if d.m[s.k] == s.e {
			live = append(live, s)
		}
	}
	d.order = live
}

// slots is the length of the insertion-order queue (tests).
func (d *dedupIndex) slots() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.order)
}

// settle records the outcome of e's append: written at partition/offset,
// or not written at all (err != nil: kgo fails an idempotent record only
// when it was not written), which forgets it so a retry appends again.
func (d *dedupIndex) settle(k dedupKey, e *dedupEntry, partition int32, offset int64, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.settled, e.ok = true, err == nil
	e.partition, e.offset = partition, offset
	e.expires = d.now().Add(max(time.Duration(e.ttl)*time.Second, dedupMinWindow))
	if !e.ok && d.m[k] == e {
		delete(d.m, k)
		d.entries.Store(int64(len(d.m)))
	}
	close(e.done)
	e.done = nil
}

// result reads a settled entry (after its done channel closed).
func (d *dedupIndex) result(e *dedupEntry) (ok bool, partition int32, offset int64, ttl int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return e.ok, e.partition, e.offset, e.ttl
}

func (d *dedupIndex) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}
