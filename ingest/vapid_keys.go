package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"fmt"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// vapidKeyCacheBytes bounds the parsed-key cache. A sender that signs
// every push signs them all with one key, so a few thousand keys cover
// every sender of a node; a client sending a new key per push only
// evicts (each key costs its parse, as it did uncached).
const vapidKeyCacheBytes = 1 << 20

// vapidKeyEntryBytes is the accounted heap of one cached key: the
// *ecdsa.PublicKey with its two big.Int coordinates and the key bytes it
// is kept under, its SHA-256, the LRU's list element and map slot
// (TestVAPIDKeyEntryBytes measures it).
const vapidKeyEntryBytes = 512

// vapidKey is a sender's public key, parsed and hashed once.
type vapidKey struct {
	pub  *ecdsa.PublicKey
	hash [sha256.Size]byte // SHA-256 of the raw 65-byte key (v2 endpoints, quotas, events)
}

// vapidKeys caches parsed keys by their raw bytes, least recently used
// evicted first.
type vapidKeys struct {
	cache     *lru.Cache[[keyLen]byte, *vapidKey]
	evictions atomic.Int64
}

func newVAPIDKeys(maxBytes int64) *vapidKeys {
	k := &vapidKeys{}
	size := int(max(maxBytes/vapidKeyEntryBytes, 1))
	// NewWithEvict only fails for a size < 1.
	k.cache, _ = lru.NewWithEvict(size, func([keyLen]byte, *vapidKey) { k.evictions.Add(1) })
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
	key := &vapidKey{pub: pub, hash: sha256.Sum256(raw[:])}
	k.cache.Add(raw, key)
	return key, nil
}

func (k *vapidKeys) entries() int64 { return int64(k.cache.Len()) }
func (k *vapidKeys) bytes() int64   { return k.entries() * vapidKeyEntryBytes }
