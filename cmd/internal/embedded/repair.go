package embedded

import (
	"errors"
	"fmt"
	"io"
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

// repairSegment rewrites one segment (when damaged) and its index. It
// streams: memory holds the index and one batch in flight, not the
// segment, whatever the segment's size.
func repairSegment(p *segPlan) error {
	var idx []byte
	if p.damaged() {
		var err error
		if idx, err = rebuildSegment(p, p.fallbackTS()); err != nil {
			return err
		}
	} else {
		for _, b := range p.scan.batches {
			e := indexEntry(b.h)
			idx = append(idx, e[:]...)
		}
	}
	return writeAtomic(p.idxPath, idx)
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

// rebuildSegment rewrites p's file with its valid batches in file order
// and a hole batch wherever offsets were lost, copying batch by batch, and
// returns the new file's index.
func rebuildSegment(p *segPlan, fallbackTS int64) ([]byte, error) {
	src, err := os.Open(p.path)
	switch {
	case errors.Is(err, os.ErrNotExist): // an emptied partition's end: holes only
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", p.path, err)
	default:
		defer src.Close()
	}
	var idx []byte
	err = writeAtomicWith(p.path, func(w io.Writer) error {
		ts, epoch := p.prevTS, p.epoch
		if ts < 0 {
			ts = fallbackTS
		}
		bi, si := 0, 0
		for bi < len(p.scan.batches) || si < len(p.scan.bad) {
			// A span sorts before a batch at the same position: it covers
			// the offsets before that batch.
			if si < len(p.scan.bad) && (bi == len(p.scan.batches) || p.scan.bad[si].pos <= p.scan.batches[bi].pos) {
				sp := p.scan.bad[si]
				end := sp.next
				if end < 0 {
					end = p.tailEnd
				}
				for first := sp.first; first < end; {
					n := min(end-first, 1<<31-1) // LastOffsetDelta is an int32
					hole := holeBatch(first, first+n, epoch, ts)
					if _, err := w.Write(hole); err != nil {
						return err
					}
					h, _ := parseHeader(hole)
					e := indexEntry(h)
					idx = append(idx, e[:]...)
					first += n
				}
				si++
				continue
			}
			b := p.scan.batches[bi]
			if src == nil {
				return fmt.Errorf("%s changed while repairing", p.path)
			}
			if n, err := io.Copy(w, io.NewSectionReader(src, b.pos, b.h.size())); err != nil || n != b.h.size() {
				return fmt.Errorf("%s changed while repairing (%d of %d bytes at %d): %v", p.path, n, b.h.size(), b.pos, err)
			}
			e := indexEntry(b.h)
			idx = append(idx, e[:]...)
			ts, epoch = b.h.MaxTimestamp, b.h.Epoch
			bi++
		}
		return nil
	})
	return idx, err
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
