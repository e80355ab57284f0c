package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"fmt"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// vapidKeyCacheBytes bounds the parsed-key cache (1,024 keys). A sender that signs
// every push signs them all with one key, so a few thousand keys cover
// every sender of a node; a client sending a new key per push only
// evicts (each key costs its parse, as it did uncached).
const vapidKeyCacheBytes = 1 << 20

// vapidKeyEntryBytes is the accounted heap of one cached key: the
// *ecdsa.PublicKey with its two big.Int coordinates and the key bytes it
// is kept under, its SHA-256, the LRU's list element and map slot
// (TestVAPIDKeyEntryBytes measures about 700 bytes).
const vapidKeyEntryBytes = 1024

// vapidTableBytes bounds the keys' multiplication tables (vapid_p256*.go,
// 148 KiB each on amd64 and arm64: 55 senders that sign every push).
const vapidTableBytes = 8 << 20

// vapidTableAfter is how many valid signatures a key makes before it gets
// a table: building one costs about 80 checks (BenchmarkP256TableBuild,
// 1.6–1.8 ms), so a key earns it by sending twice that many fresh tokens
// (a sender making new keys to make us build tables pays a signature per
// check, and gets at most half again of the checks' CPU), and one that
// signs a single reused token never needs it.
const vapidTableAfter = 160

// vapidKey is a sender's public key, parsed and hashed once.
type vapidKey struct {
	raw      [keyLen]byte
	pub      *ecdsa.PublicKey
	hash     [sha256.Size]byte // SHA-256 of the raw 65-byte key (v2 endpoints, quotas, events)
	valid    atomic.Int64      // signatures verified since the key was cached (or lost its table)
	building atomic.Bool       // a table is being built or held
	table    atomic.Pointer[p256Table]
}

// vapidKeys caches parsed keys by their raw bytes, least recently used
// evicted first, and the tables of the keys that sign most.
type vapidKeys struct {
	cache          *lru.Cache[[keyLen]byte, *vapidKey]
	tables         *lru.Cache[*vapidKey, struct{}]
	evictions      atomic.Int64
	tableEvictions atomic.Int64
}

func newVAPIDKeys(maxBytes, maxTableBytes int64) *vapidKeys {
	k := &vapidKeys{}
	// NewWithEvict only fails for a size < 1.
	k.cache, _ = lru.NewWithEvict(int(max(maxBytes/vapidKeyEntryBytes, 1)),
		func([keyLen]byte, *vapidKey) { k.evictions.Add(1) })
	k.tables, _ = lru.NewWithEvict(int(max(maxTableBytes/p256TableBytes, 1)),
		func(key *vapidKey, _ struct{}) {
			// The key earns a table again from scratch.
			key.table.Store(nil)
			key.valid.Store(0)
			key.building.Store(false)
			k.tableEvictions.Add(1)
		})
	return k
}

// get returns raw parsed, from the cache when it was seen before.
func (k *vapidKeys) get(raw [keyLen]byte) (*vapidKey, error) {
	if key, ok := k.cache.Get(raw); ok {
		return key, nil
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw[:])
	if err != nil {
		return nil, fmt.Errorf("parse VAPID key: %w", err)
	}
	key := &vapidKey{raw: raw, pub: pub, hash: sha256.Sum256(raw[:])}
	k.cache.Add(raw, key)
	return key, nil
}

// verify checks an ES256 signature with key: through its table when it
// has one, else crypto/ecdsa, building the table once the key has made
// vapidTableAfter valid signatures (the request that crosses the line
// pays for it).
func (k *vapidKeys) verify(key *vapidKey, signingInput string, sig *[64]byte) bool {
	if t := key.table.Load(); t != nil {
		k.tables.Get(key) // recency
		return t.verify(signingInput, sig)
	}
	if !verifyES256(key.pub, signingInput, sig) {
		return false
	}
	if key.valid.Add(1) >= vapidTableAfter && key.building.CompareAndSwap(false, true) {
		t, err := newP256Table(key.raw[:])
		if err != nil { // cannot happen: the key parsed
			return true
		}
		key.table.Store(t)
		k.tables.Add(key, struct{}{})
	}
	return true
}

func (k *vapidKeys) entries() int64    { return int64(k.cache.Len()) }
func (k *vapidKeys) tableCount() int64 { return int64(k.tables.Len()) }
func (k *vapidKeys) tableBytes() int64 { return k.tableCount() * p256TableBytes }
