package embedded

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testBatch encodes a batch of n records starting at first.
func testBatch(first int64, n int, value string) []byte {
	var recs []byte
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(value)}
		recs = r.AppendTo(recs)
	}
	b := kmsg.RecordBatch{FirstOffset: first, Magic: 2, LastOffsetDelta: int32(n - 1), FirstTimestamp: 1000, MaxTimestamp: 1000,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(n), Records: recs}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:12], uint32(len(raw)-batchPrefixSize))
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], crc32c))
	return raw
}

// FuzzScanSegment feeds arbitrary bytes to the segment parser: it must
// not panic, its spans and batches must tile the file in order, and a
// repair built from any scan must scan clean.
func FuzzScanSegment(f *testing.F) {
	seg := append(append(testBatch(0, 1, "a"), testBatch(1, 3, "bb")...), testBatch(4, 1, "c")...)
	f.Add(seg, int64(0), true)
	f.Add(seg[:len(seg)-5], int64(0), true)
	f.Add(append(append([]byte{}, seg[:70]...), seg[90:]...), int64(0), false)
	f.Add(append(testBatch(7, 2, "x"), holeBatch(9, 12, 0, 5)...), int64(7), true)
	f.Add([]byte{}, int64(3), true)
	f.Fuzz(func(t *testing.T, raw []byte, base int64, contiguous bool) {
		if base < 0 || base > 1<<40 {
			return
		}
		s := scanSegment(raw, base, contiguous)
		var pos int64
		bi, si := 0, 0
		for bi < len(s.batches) || si < len(s.bad) {
			if si < len(s.bad) && (bi == len(s.batches) || s.bad[si].pos <= s.batches[bi].pos) {
				sp := s.bad[si]
				if sp.pos != pos || sp.end < sp.pos || sp.end > int64(len(raw)) || sp.next >= 0 && sp.next < sp.first {
					t.Fatalf("span %+v at %d", sp, pos)
				}
				pos = sp.end
				si++
				continue
			}
			b := s.batches[bi]
			if b.pos != pos || b.pos+b.h.size() > int64(len(raw)) {
				t.Fatalf("batch at %d, expected %d", b.pos, pos)
			}
			pos += b.h.size()
			bi++
		}
		if pos != int64(len(raw)) {
			t.Fatalf("scan covered %d of %d bytes", pos, len(raw))
		}
		p := segPlan{scan: s, contiguous: contiguous, prevTS: -1}
		if t := p.openTail(); t != nil {
			p.tailEnd = t.first + 1
		}
		p.path = filepath.Join(t.TempDir(), "0.dat")
		if err := os.WriteFile(p.path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		idx, err := rebuildSegment(&p, 0)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.ReadFile(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if want := buildIndex(out); !bytes.Equal(idx, want) {
			t.Fatalf("index of the repaired segment: %x, want %x", idx, want)
		}
		r := scanSegment(out, base, contiguous)
		if len(r.bad) > 0 {
			t.Fatalf("repaired segment is damaged: %+v", r.bad)
		}
		if r.end < s.end {
			t.Fatalf("repair lost offsets: end %d, was %d", r.end, s.end)
		}
	})
}

// FuzzScanEntries checks the framed-log parser the same way.
func FuzzScanEntries(f *testing.F) {
	e := frameEntry([]byte(`{"type":"commit"}`))
	f.Add(append(append([]byte{}, e...), e...))
	f.Add(e[:len(e)-1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := scanEntries(raw)
		pos, vi, bi := 0, 0, 0
		for vi < len(s.valid) || bi < len(s.bad) {
			var r [2]int
			if bi < len(s.bad) && (vi == len(s.valid) || s.bad[bi][0] < s.valid[vi][0]) {
				r = s.bad[bi]
				bi++
			} else {
				r = s.valid[vi]
				vi++
			}
			if r[0] != pos || r[1] <= r[0] || r[1] > len(raw) {
				t.Fatalf("range %v at %d", r, pos)
			}
			pos = r[1]
		}
		if pos != len(raw) {
			t.Fatalf("covered %d of %d", pos, len(raw))
		}
	})
}

// buildIndex is kfake's index for the (valid) batches of raw.
func buildIndex(raw []byte) []byte {
	var idx []byte
	for pos := int64(0); pos < int64(len(raw)); {
		h, err := checkBatch(raw[pos:])
		if err != nil {
			break
		}
		e := indexEntry(h)
		idx = append(idx, e[:]...)
		pos += h.size()
	}
	return idx
}
