package embedded

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// Repair verifies dir and rewrites what is damaged: each damaged segment
// keeps every valid batch, and the offsets of lost records are covered by
// an empty batch (no records) so they are never handed out again; indexes
// are rebuilt from the batches; damaged entries of groups.log and pids.log
// are dropped; partitions' snapshot.json files are removed so the broker
// recomputes their offsets from the files. The report lists what was
// dropped. Damage outside the partitions and logs (a JSON file) cannot be
// repaired: Repair then changes nothing and returns an error.
func Repair(dir string) (*Report, error) {
	r, err := Verify(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range r.Damage {
		if d.Topic == "" && !slices.ContainsFunc(r.logs, func(l logPlan) bool { return l.path == d.File }) {
			return r, fmt.Errorf("%s cannot be repaired: restore it from a backup", d.File)
		}
	}
	for i := range r.plan {
		if err := repairSegment(&r.plan[i]); err != nil {
			return r, err
		}
	}
	for _, l := range r.logs {
		if err := repairLog(l); err != nil {
			return r, err
		}
	}
	for _, s := range r.snapshots {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return r, fmt.Errorf("remove %s: %w", s, err)
		}
	}
	return r, nil
}

// repairSegment rewrites one segment (when damaged) and its index.
func repairSegment(p *segPlan) error {
	raw, err := os.ReadFile(p.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // missing: an emptied partition's end
		return fmt.Errorf("read %s: %w", p.path, err)
	}
	if p.damaged() {
		if raw, err = rebuildSegment(p, raw, p.fallbackTS()); err != nil {
			return err
		}
		if err := writeAtomic(p.path, raw); err != nil {
			return err
		}
	}
	return writeAtomic(p.idxPath, buildIndex(raw))
}

// fallbackTS is the timestamp of a hole with no valid batch before it in
// the partition: the first valid batch's, else the file's modification time.
func (p *segPlan) fallbackTS() int64 {
	if len(p.scan.batches) > 0 {
		return p.scan.batches[0].h.FirstTimestamp
	}
	if fi, err := os.Stat(p.path); err == nil {
		return fi.ModTime().UnixMilli()
	}
	return 0
}

// rebuildSegment lays out the valid batches of raw in file order with a
// hole batch wherever offsets were lost.
func rebuildSegment(p *segPlan, raw []byte, fallbackTS int64) ([]byte, error) {
	out := make([]byte, 0, len(raw))
	ts, epoch := p.prevTS, p.epoch
	if ts < 0 {
		ts = fallbackTS
	}
	bi, si := 0, 0
	for bi < len(p.scan.batches) || si < len(p.scan.bad) {
		// A span sorts before a batch at the same position: it covers the
		// offsets before that batch.
		if si < len(p.scan.bad) && (bi == len(p.scan.batches) || p.scan.bad[si].pos <= p.scan.batches[bi].pos) {
			sp := p.scan.bad[si]
			end := sp.next
			if end < 0 {
				end = p.tailEnd
			}
			for first := sp.first; first < end; {
				n := min(end-first, 1<<31-1) // LastOffsetDelta is an int32
				out = append(out, holeBatch(first, first+n, epoch, ts)...)
				first += n
			}
			si++
			continue
		}
		b := p.scan.batches[bi]
		if int64(len(raw)) < b.pos+b.h.size() {
			return nil, fmt.Errorf("%s changed while repairing", p.path)
		}
		out = append(out, raw[b.pos:b.pos+b.h.size()]...)
		ts, epoch = b.h.MaxTimestamp, b.h.Epoch
		bi++
	}
	return out, nil
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

// repairLog keeps the valid entries of a framed log.
func repairLog(l logPlan) error {
	raw, err := os.ReadFile(l.path)
	if err != nil {
		return fmt.Errorf("read %s: %w", l.path, err)
	}
	var out []byte
	for _, v := range l.scan.valid {
		if v[1] > len(raw) {
			return fmt.Errorf("%s changed while repairing", l.path)
		}
		out = append(out, raw[v[0]:v[1]]...)
	}
	return writeAtomic(l.path, out)
}
