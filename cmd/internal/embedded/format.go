// Package embedded runs pushlog's embedded Kafka broker (franz-go's kfake,
// persisted under the data directory) safely: it locks the data directory,
// verifies every file of the broker before the broker reads them (the
// broker itself silently drops whatever follows a damaged batch), repairs
// damage only when asked, and trims settled prefixes of the log so memory
// and disk follow what must be kept.
//
// The on-disk format it reads is kfake's (pkg/kfake/persist.go):
//
//	kafka/meta.json, topics.json, ...          JSON, written atomically
//	kafka/groups.log, pids.log                  framed entries [len u32le][crc32c u32le][ver u16le][data]
//	kafka/partitions/<escaped topic>-<p>/
//	    <base>.dat   Kafka RecordBatch v2 wire bytes, back to back; <base> is the first batch's offset
//	    <base>.idx   15 bytes per batch: [ver][crc low byte][epoch i32le][maxEarlierTs i64le][flags]
//	    snapshot.json  high watermark, log start and segment sizes, written at clean shutdown
package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kmsg"
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// RecordBatch v2 header layout (big-endian), as Kafka stores it.
const (
	batchHeaderSize = 61 // through NumRecords
	batchPrefixSize = 12 // FirstOffset + Length: Length counts the bytes after it
	minBatchLength  = batchHeaderSize - batchPrefixSize
	// maxBatchLength bounds a batch read from disk: kfake refuses more than
	// 1 GiB; a larger length is damage, never a reason to allocate.
	maxBatchLength = 1 << 30
	attrTxn        = 0x0010
	attrControl    = 0x0020
)

// batchHeader is the fixed part of a RecordBatch.
type batchHeader struct {
	FirstOffset     int64
	Length          int32
	Epoch           int32
	Magic           int8
	CRC             uint32
	Attributes      int16
	LastOffsetDelta int32
	FirstTimestamp  int64
	MaxTimestamp    int64
	ProducerID      int64
	NumRecords      int32
}

// size is the batch's whole size in bytes.
func (h batchHeader) size() int64 { return batchPrefixSize + int64(h.Length) }

// end is one past the batch's last offset.
func (h batchHeader) end() int64 { return h.FirstOffset + int64(h.LastOffsetDelta) + 1 }

// parseHeader reads the header at the start of b; ok is false when b is
// shorter than a header.
func parseHeader(b []byte) (h batchHeader, ok bool) {
	if len(b) < batchHeaderSize {
		return h, false
	}
	be := binary.BigEndian
	h.FirstOffset = int64(be.Uint64(b[0:8]))
	h.Length = int32(be.Uint32(b[8:12]))
	h.Epoch = int32(be.Uint32(b[12:16]))
	h.Magic = int8(b[16])
	h.CRC = be.Uint32(b[17:21])
	h.Attributes = int16(be.Uint16(b[21:23]))
	h.LastOffsetDelta = int32(be.Uint32(b[23:27]))
	h.FirstTimestamp = int64(be.Uint64(b[27:35]))
	h.MaxTimestamp = int64(be.Uint64(b[35:43]))
	h.ProducerID = int64(be.Uint64(b[43:51]))
	h.NumRecords = int32(be.Uint32(b[57:61]))
	return h, true
}

// plausible reports whether a header read from undamaged-looking bytes can
// frame a batch: used to trust a truncated batch's header for counting.
func (h batchHeader) plausible() bool {
	return h.Magic == 2 && h.Length >= minBatchLength && h.Length <= maxBatchLength &&
		h.FirstOffset >= 0 && h.LastOffsetDelta >= 0 && h.NumRecords >= 0 &&
		int64(h.NumRecords) <= int64(h.LastOffsetDelta)+1
}

var (
	errShortBatch = errors.New("truncated record batch")
	errBadFraming = errors.New("implausible record batch header")
	errBadCRC     = errors.New("record batch CRC mismatch")
)

// checkBatch validates the batch at the start of b: header, length within
// b, CRC-32C, and that kmsg (what kfake uses) decodes it. It returns the
// header whatever the outcome when b holds one.
func checkBatch(b []byte) (batchHeader, error) {
	h, ok := parseHeader(b)
	if !ok {
		return h, errShortBatch
	}
	if !h.plausible() {
		return h, errBadFraming
	}
	if h.size() > int64(len(b)) {
		return h, errShortBatch
	}
	raw := b[:h.size()]
	if crc32.Checksum(raw[21:], crc32c) != h.CRC {
		return h, errBadCRC
	}
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(raw); err != nil {
		return h, fmt.Errorf("decode record batch: %w", err)
	}
	return h, nil
}

// holeBatch encodes a batch with no records covering offsets [first, end):
// what a repair leaves where records were lost, so those offsets are never
// handed out again (message ids and acks name messages by offset) and
// consumers skip them as they skip compacted-away offsets (KAFKA-5443).
func holeBatch(first, end int64, epoch int32, ts int64) []byte {
	b := kmsg.RecordBatch{
		FirstOffset:          first,
		PartitionLeaderEpoch: epoch,
		Magic:                2,
		LastOffsetDelta:      int32(end - first - 1),
		FirstTimestamp:       ts,
		MaxTimestamp:         ts,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           0,
	}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:12], uint32(len(raw)-batchPrefixSize))
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], crc32c))
	return raw
}

// Index entries (.idx), one per batch.
const indexEntrySize = 15

// indexEntry encodes kfake's index entry for a batch.
func indexEntry(h batchHeader) [indexEntrySize]byte {
	var e [indexEntrySize]byte
	e[0] = 1 // kfake's persist version
	binary.LittleEndian.PutUint32(e[2:6], uint32(h.Epoch))
	binary.LittleEndian.PutUint64(e[6:14], uint64(h.MaxTimestamp)) // recomputed by kfake on load
	// Data batches of a transaction are written inTx; kfake settles them
	// from the control batches when it replays.
	if h.Attributes&attrTxn != 0 && h.Attributes&attrControl == 0 {
		e[14] = 1
	}
	e[1] = byte(crc32.Checksum(e[2:], crc32c))
	return e
}

// indexEntryOK reports whether e is a well-formed index entry.
func indexEntryOK(e []byte) bool {
	return len(e) >= indexEntrySize && e[0] == 1 && byte(crc32.Checksum(e[2:indexEntrySize], crc32c)) == e[1]
}

// Framed log entries (groups.log, pids.log).
const entryHeaderSize = 10

// entryAt validates the framed entry at the start of b and returns its size.
func entryAt(b []byte) (int, bool) {
	if len(b) < entryHeaderSize {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n < 2 || uint64(n)+8 > uint64(len(b)) {
		return 0, false
	}
	// kfake writes version 1 entries of JSON: a cheap filter that keeps
	// resynchronising after damage from checksumming garbage.
	if binary.LittleEndian.Uint16(b[8:10]) != 1 || n > 2 && b[10] != '{' {
		return 0, false
	}
	if crc32.Checksum(b[8:8+n], crc32c) != binary.LittleEndian.Uint32(b[4:8]) {
		return 0, false
	}
	return 8 + int(n), true
}
