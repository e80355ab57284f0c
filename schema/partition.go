package schema

// Partition returns the partition of key among n partitions exactly as
// Kafka's default partitioner (and franz-go's StickyKeyPartitioner with its
// default hasher) computes it: murmur2 of the key, sign bit cleared, modulo n.
// Every producer and router in pushlog uses it, so any Kafka tool agrees on
// where a UAID lives.
func Partition(key []byte, n int32) int32 {
	if n <= 0 {
		return 0
	}
	return int32((murmur2(key) & 0x7fffffff) % uint32(n))
}

// PartitionOf is Partition for a UAID in its text form (the Kafka key);
// UAID.Partition is the same for the typed value.
func PartitionOf(uaid string, n int32) int32 { return Partition([]byte(uaid), n) }

// murmur2 is the 32-bit MurmurHash2 variant Kafka uses (seed 0x9747b28c).
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
