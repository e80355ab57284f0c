package embedded

import (
	"encoding/json"
	"fmt"
	"time"
)

// After a crash kfake has no snapshot.json that matches a partition's
// files, and it then replays them keeping every decoded batch of every
// partition in memory at once: a restart peaks at about twice the data
// directory. With a matching snapshot it loads one segment at a time.
// Verification has just read every batch, so it writes the snapshot kfake
// would have written (and what its replay would compute), except for
// partitions with transactional batches, whose aborted ranges only kfake's
// replay rebuilds (pushlog writes none).

// kfakeSnapshot is kfake's persistPartSnapshot, version 1.
type kfakeSnapshot struct {
	Version          int            `json:"version"`
	HighWatermark    int64          `json:"high_watermark"`
	LastStableOffset int64          `json:"last_stable_offset"`
	LogStartOffset   int64          `json:"log_start_offset"`
	Epoch            int32          `json:"epoch"`
	LeaderNode       int32          `json:"leader_node,omitempty"`
	MaxTimestamp     int64          `json:"max_timestamp"`
	CreatedAt        time.Time      `json:"created_at"`
	Segments         []kfakeSegment `json:"segments"`
}

type kfakeSegment struct {
	BaseOffset int64 `json:"base_offset"`
	Size       int64 `json:"size"`
	MinEpoch   int32 `json:"min_epoch,omitempty"`
	MaxEpoch   int32 `json:"max_epoch,omitempty"`
}

type snapWrite struct {
	path string
	snap kfakeSnapshot
}

// freshSnapshot is the snapshot of an undamaged partition whose snapshot
// is missing or does not match its files, else nil.
func freshSnapshot(plans []segPlan, old partSnapshot, oldOK bool) *kfakeSnapshot {
	if len(plans) == 0 || oldOK && snapshotMatches(plans, old) {
		return nil
	}
	s := &kfakeSnapshot{Version: 1}
	first := true
	for _, p := range plans {
		if p.damaged() {
			return nil
		}
		seg := kfakeSegment{BaseOffset: p.scan.base, Size: p.scan.size}
		for i, b := range p.scan.batches {
			if b.h.Attributes&attrTxn != 0 {
				return nil
			}
			if i == 0 || b.h.Epoch < seg.MinEpoch {
				seg.MinEpoch = b.h.Epoch
			}
			seg.MaxEpoch = max(seg.MaxEpoch, b.h.Epoch)
			if first {
				s.LogStartOffset, s.CreatedAt, first = b.h.FirstOffset, time.UnixMilli(b.h.FirstTimestamp), false
			}
			s.HighWatermark, s.Epoch = b.h.end(), b.h.Epoch
			s.MaxTimestamp = max(s.MaxTimestamp, b.h.MaxTimestamp)
		}
		s.Segments = append(s.Segments, seg) // empty files too: kfake counts every file

	}
	if first {
		return nil
	}
	// A stale snapshot's log start is still a lower bound of the real one
	// (DeleteRecords only moves it up): better than the first batch.
	if oldOK && old.LogStartOffset > s.LogStartOffset && old.LogStartOffset <= s.HighWatermark {
		s.LogStartOffset = old.LogStartOffset
	}
	s.LastStableOffset = s.HighWatermark
	return s
}

// snapshotMatches is kfake's test of a usable snapshot.
func snapshotMatches(plans []segPlan, s partSnapshot) bool {
	if len(s.Segments) != len(plans) {
		return false
	}
	for i, p := range plans {
		if s.Segments[i].BaseOffset != p.scan.base || s.Segments[i].Size != p.scan.size {
			return false
		}
	}
	return true
}

// writeSnapshots writes the fresh snapshots found by verification.
func writeSnapshots(r *Report) error {
	for _, w := range r.freshSnaps {
		raw, err := json.Marshal(w.snap)
		if err != nil {
			return fmt.Errorf("encode %s: %w", w.path, err)
		}
		if err := writeAtomic(w.path, raw); err != nil {
			return err
		}
	}
	return nil
}
