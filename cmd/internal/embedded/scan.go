package embedded

import (
	"encoding/binary"
	"fmt"
)

// maxOffsetJump bounds the offsets a damaged range may span: more than a
// few billion records missing between two batches is garbage that happens
// to checksum, not a log.
const maxOffsetJump = 1 << 32

// batchInfo is one valid batch of a segment file.
type batchInfo struct {
	pos int64
	h   batchHeader
}

// badSpan is a damaged part of a segment file: bytes [pos, end) hold no
// valid batch, and offsets from first on are missing up to next (the first
// offset of the valid batch after it), or to an end that only evidence
// outside the file can tell when next is -1 (the damage runs to the end).
type badSpan struct {
	pos, end int64
	first    int64
	next     int64
	reason   string
	// guess is the header of the first damaged batch when it framed
	// plausibly and started where it should (a truncated last batch).
	guess   batchHeader
	guessOK bool
}

// segScan is what scanning one segment file found.
type segScan struct {
	base    int64
	size    int64
	batches []batchInfo
	bad     []badSpan
	end     int64 // one past the last valid offset, base when none
}

// scanSegment checks every batch of a segment's bytes: framing, CRC, and
// that offsets only grow (contiguous: each batch starts where the previous
// ended, as on a topic without compaction). After damage it resynchronises
// on the next batch that validates, so one damaged batch costs only its
// own records.
func scanSegment(raw []byte, base int64, contiguous bool) segScan {
	s := segScan{base: base, size: int64(len(raw)), end: base}
	pos := int64(0)
	for pos < int64(len(raw)) {
		h, err := checkBatch(raw[pos:])
		if err == nil && h.FirstOffset < s.end {
			err = fmt.Errorf("batch offset %d is below the expected %d", h.FirstOffset, s.end)
		}
		if err == nil && h.FirstOffset-s.end > maxOffsetJump {
			err = fmt.Errorf("batch offset %d jumps implausibly far past the expected %d", h.FirstOffset, s.end)
		}
		if err == nil {
			if contiguous && h.FirstOffset > s.end {
				s.bad = append(s.bad, badSpan{pos: pos, end: pos, first: s.end, next: h.FirstOffset, reason: "offsets missing between batches"})
			}
			s.batches = append(s.batches, batchInfo{pos: pos, h: h})
			s.end = h.end()
			pos += h.size()
			continue
		}
		sp := badSpan{pos: pos, end: int64(len(raw)), first: s.end, next: -1, reason: err.Error()}
		if hh, ok := parseHeader(raw[pos:]); ok && hh.plausible() && hh.FirstOffset == s.end {
			sp.guess, sp.guessOK = hh, true
		} else if len(raw)-int(pos) < batchHeaderSize && len(raw)-int(pos) >= 8 &&
			int64(binary.BigEndian.Uint64(raw[pos:pos+8])) == s.end {
			sp.reason = "truncated record batch header"
		}
		if q, ok := resync(raw, pos+1, s.end); ok {
			sp.end = q
			h, _ := parseHeader(raw[q:])
			sp.next = h.FirstOffset
			s.end = h.FirstOffset // the span covers the offsets up to it
			pos = q
		} else {
			pos = int64(len(raw))
		}
		s.bad = append(s.bad, sp)
	}
	return s
}

// resync finds the first position at or after from where a valid batch
// starting at or after offset min begins.
func resync(raw []byte, from, min int64) (int64, bool) {
	for q := from; q+batchHeaderSize <= int64(len(raw)); q++ {
		if raw[q+16] != 2 { // magic: cheap filter before parsing
			continue
		}
		h, ok := parseHeader(raw[q:])
		if !ok || !h.plausible() || h.FirstOffset < min || h.FirstOffset-min > maxOffsetJump || q+h.size() > int64(len(raw)) {
			continue
		}
		if _, err := checkBatch(raw[q:]); err == nil {
			return q, true
		}
	}
	return 0, false
}

// entriesScan is what scanning a framed log file found.
type entriesScan struct {
	valid [][2]int // byte ranges of valid entries
	bad   [][2]int // damaged byte ranges
}

// scanEntries checks a framed log (groups.log, pids.log), resynchronising
// after damage on the next entry whose CRC validates.
func scanEntries(raw []byte) entriesScan {
	var s entriesScan
	pos := 0
	for pos < len(raw) {
		if n, ok := entryAt(raw[pos:]); ok {
			s.valid = append(s.valid, [2]int{pos, pos + n})
			pos += n
			continue
		}
		q := pos + 1
		for ; q < len(raw); q++ {
			if _, ok := entryAt(raw[q:]); ok {
				break
			}
		}
		s.bad = append(s.bad, [2]int{pos, q})
		pos = q
	}
	return s
}
