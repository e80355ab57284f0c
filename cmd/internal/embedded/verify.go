package embedded

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds of a damage's record count.
const (
	Exactly = "exactly"
	AtLeast = "at least"
	UpTo    = "up to" // compacted topics: the offsets are known, not how many held records
)

// Damage is one damaged part of the broker's files.
type Damage struct {
	File      string // the damaged file
	Topic     string // "" for a file outside the partitions
	Partition int32
	Offset    int64 // first affected offset (-1 outside the partitions)
	End       int64 // one past the last affected offset
	Records   int64 // affected records, bounded by Bound
	Bound     string
	Bytes     int64 // damaged bytes a repair drops
	Reason    string
}

func (d Damage) String() string {
	if d.Topic == "" {
		return fmt.Sprintf("%s: %s (%d bytes)", d.File, d.Reason, d.Bytes)
	}
	return fmt.Sprintf("%s: %s/%d offsets %d..%d: %s %d records affected (%s; %d damaged bytes)",
		d.File, d.Topic, d.Partition, d.Offset, d.End-1, d.Bound, d.Records, d.Reason, d.Bytes)
}

// Report is what verifying (or repairing) the broker's directory found.
type Report struct {
	Dir        string
	Files      int
	Batches    int64
	Records    int64
	Damage     []Damage
	IndexFixes []string // lossless: index entries that were (or will be) rewritten
	EndFixes   []string // lossless: emptied partitions whose end offset is kept by an empty batch
	plan       []segPlan
	logs       []logPlan
	snapshots  []string // partition snapshot.json files a repair removes
	freshSnaps []snapWrite
}

// Err is nil when nothing is damaged, else an error naming every damage
// and the repair command.
func (r *Report) Err() error {
	if len(r.Damage) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the embedded Kafka data in %s is damaged; refusing to start so that nothing is lost silently:", r.Dir)
	for _, d := range r.Damage {
		b.WriteString("\n  ")
		b.WriteString(d.String())
	}
	fmt.Fprintf(&b, "\nRestore the directory from a backup, or run `pushlog repair --data-dir %s` to drop the damaged records (it reports exactly what it drops; their offsets are never reused).", filepath.Dir(r.Dir))
	return &DamageError{Report: r, msg: b.String()}
}

// DamageError is the error of a damaged directory.
type DamageError struct {
	Report *Report
	msg    string
}

func (e *DamageError) Error() string { return e.msg }

// segPlan is one segment file's scan, with the tail's evidence resolved.
type segPlan struct {
	path, idxPath string
	topic         string
	partition     int32
	contiguous    bool
	scan          segScan
	idxFix        bool // the index needs rewriting (lossless unless damaged)
	tailEnd       int64
	prevTS        int64 // timestamp for holes: the partition's last valid batch before
	epoch         int32
}

func (p *segPlan) damaged() bool { return len(p.scan.bad) > 0 }

// logPlan is a framed log file's scan.
type logPlan struct {
	path string
	scan entriesScan
}

// recorded is a partition's offsets as last recorded by the trimmer.
type recorded struct {
	end   int64 // 0: none recorded
	start int64 // -1: none recorded
}

// partSnapshot is the part of kfake's partition snapshot.json we read.
type partSnapshot struct {
	HighWatermark  int64 `json:"high_watermark"`
	LogStartOffset int64 `json:"log_start_offset"`
	Segments       []struct {
		BaseOffset int64 `json:"base_offset"`
		Size       int64 `json:"size"`
	} `json:"segments"`
}

// topicsFile is the part of kfake's topics.json we read.
type topicsFile struct {
	Topics []struct {
		Name    string            `json:"name"`
		Configs map[string]string `json:"configs"`
	} `json:"topics"`
}

// Verify checks every file of the broker directory dir without changing
// anything. A missing directory is empty and valid.
func Verify(dir string) (*Report, error) {
	r := &Report{Dir: dir}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	compact, err := r.verifyTop(dir)
	if err != nil {
		return nil, err
	}
	ends, starts := readRecorded(dir)
	pdirs, err := os.ReadDir(filepath.Join(dir, "partitions"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "partitions"), err)
	}
	for _, e := range pdirs {
		if !e.IsDir() {
			continue
		}
		topic, part, ok := parsePartDir(e.Name())
		if !ok {
			continue
		}
		rec := recorded{end: ends[topic][part], start: -1}
		if s, ok := starts[topic][part]; ok {
			rec.start = s
		}
		if err := r.verifyPartition(filepath.Join(dir, "partitions", e.Name()), topic, part, !compact[topic], rec); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// verifyTop checks the files beside the partitions and returns which
// topics are compacted.
func (r *Report) verifyTop(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	compact := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		if e.IsDir() || strings.HasSuffix(name, ".tmp") || name == endsFile {
			continue // kfake discards .tmp files (interrupted atomic writes); the ends file is only evidence
		}
		switch {
		case strings.HasSuffix(name, ".log"):
			raw, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", path, err)
			}
			r.Files++
			s := scanEntries(raw)
			for _, b := range s.bad {
				r.Damage = append(r.Damage, Damage{File: path, Offset: -1, Bytes: int64(b[1] - b[0]),
					Reason: fmt.Sprintf("damaged entries at bytes %d..%d (checksum or framing)", b[0], b[1])})
			}
			if len(s.bad) > 0 {
				r.logs = append(r.logs, logPlan{path: path, scan: s})
			}
		case strings.HasSuffix(name, ".json"):
			raw, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", path, err)
			}
			r.Files++
			if !json.Valid(raw) {
				r.Damage = append(r.Damage, Damage{File: path, Offset: -1, Bytes: int64(len(raw)), Reason: "not valid JSON (restore it from a backup)"})
				continue
			}
			if name == "topics.json" {
				var tf topicsFile
				if err := json.Unmarshal(raw, &tf); err == nil {
					for _, t := range tf.Topics {
						compact[t.Name] = strings.Contains(t.Configs["cleanup.policy"], "compact")
					}
				}
			}
		}
	}
	return compact, nil
}

// parsePartDir splits kfake's "<escaped topic>-<partition>".
func parsePartDir(name string) (string, int32, bool) {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 {
		return "", 0, false
	}
	p, err := strconv.ParseInt(name[i+1:], 10, 32)
	if err != nil || p < 0 {
		return "", 0, false
	}
	topic, err := url.PathUnescape(name[:i])
	if err != nil {
		return "", 0, false
	}
	return topic, int32(p), true
}

// verifyPartition scans one partition's segments and resolves how far
// each damaged tail reached from the evidence kept elsewhere: the next
// segment's base offset, the clean-shutdown snapshot, the end offsets the
// trimmer records, and the index's batch count.
func (r *Report) verifyPartition(pdir, topic string, part int32, contiguous bool, rec recorded) error {
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return fmt.Errorf("read %s: %w", pdir, err)
	}
	var bases []int64
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".dat"); ok {
			if b, err := strconv.ParseInt(name, 10, 64); err == nil {
				bases = append(bases, b)
			}
		}
	}
	slices.Sort(bases)
	snap, snapOK := readSnapshot(filepath.Join(pdir, "snapshot.json"))
	sizes := map[int64]int64{}
	for _, s := range snap.Segments {
		sizes[s.BaseOffset] = s.Size
	}
	if len(bases) == 0 {
		r.checkEmpty(pdir, topic, part, contiguous, snap, snapOK, rec)
		return nil
	}
	// The snapshot describes the files exactly unless they were written
	// since; compaction rewrites compacted topics' files smaller, so only
	// a delete-policy partition's sizes are evidence.
	current := snapOK && contiguous && len(snap.Segments) == len(bases)
	plans := make([]segPlan, 0, len(bases))
	for _, base := range bases {
		p, err := scanFile(pdir, topic, part, base, contiguous)
		if err != nil {
			return err
		}
		if sz, ok := sizes[base]; !ok || p.scan.size > sz {
			current = false // written since the snapshot: it says nothing exact
		}
		plans = append(plans, p)
	}
	var prevTS int64 = -1
	var epoch int32
	for i := range plans {
		p := &plans[i]
		p.prevTS, p.epoch = prevTS, epoch
		if n := len(p.scan.batches); n > 0 {
			last := p.scan.batches[n-1].h
			prevTS, epoch = last.MaxTimestamp, last.Epoch
		}
		exact := contiguous
		var end int64
		switch {
		case i+1 < len(plans):
			end = plans[i+1].scan.base
		case current:
			end = snap.HighWatermark
		default:
			exact = false
			end = max(snap.HighWatermark, rec.end)
		}
		// Index entries beyond the batches: the batches were written
		// (kfake writes the segment first) and are gone. Only countable
		// when no damage inside the file hides how many it held.
		lostBatches := p.idxBatches() - int64(len(p.scan.batches))
		if len(p.scan.bad) > 0 && p.openTail() == nil || len(p.scan.bad) > 1 {
			lostBatches = 0
		}
		if p.openTail() == nil {
			var why string
			switch {
			case current && p.scan.size < sizes[p.scan.base]:
				why = fmt.Sprintf("file is %d bytes shorter than at the last clean shutdown", sizes[p.scan.base]-p.scan.size)
			case lostBatches > 0:
				why = "file ends before its last batches"
			case end > p.scan.end && i+1 == len(plans):
				why = fmt.Sprintf("the log had reached offset %d (recorded end offsets or clean-shutdown snapshot) but its last segment ends at %d: cut at a batch boundary, or newer segment files deleted", end, p.scan.end)
			case end > p.scan.end && contiguous:
				why = "offsets missing at the end of the segment"
			}
			if why != "" {
				p.scan.bad = append(p.scan.bad, badSpan{pos: p.scan.size, end: p.scan.size, first: p.scan.end, next: -1, reason: why})
			}
		}
		if end-p.scan.end > maxOffsetJump {
			end = p.scan.end // evidence that cannot be true is no evidence
		}
		var ev []string
		if t := p.openTail(); t != nil {
			if t.guessOK {
				end = max(end, t.guess.end())
			}
			if lostBatches > 0 {
				end = max(end, t.first+lostBatches) // every lost batch held a record
				ev = append(ev, fmt.Sprintf("its index lists %d batches more than remain", lostBatches))
			}
			if end <= t.first && t.pos < t.end {
				end = t.first + 1 // bytes of a batch were written: it held a record
				exact = false
			}
		}
		p.tailEnd = end
		r.addDamage(p, exact, ev)
		r.Files += 2
		r.Batches += int64(len(p.scan.batches))
		for _, b := range p.scan.batches {
			r.Records += int64(b.h.NumRecords)
		}
		if p.damaged() || p.idxFix {
			r.plan = append(r.plan, *p)
			if p.damaged() && snapOK {
				r.snapshots = append(r.snapshots, filepath.Join(pdir, "snapshot.json"))
			}
		}
		if p.idxFix && !p.damaged() {
			r.IndexFixes = append(r.IndexFixes, p.idxPath)
		}
	}
	if snap := freshSnapshot(plans, snap, snapOK); snap != nil {
		r.freshSnaps = append(r.freshSnaps, snapWrite{path: filepath.Join(pdir, "snapshot.json"), snap: *snap})
	}
	return nil
}

// openTail is the last damage when it runs to the end of the file.
func (p *segPlan) openTail() *badSpan {
	if n := len(p.scan.bad); n > 0 && p.scan.bad[n-1].next < 0 {
		return &p.scan.bad[n-1]
	}
	return nil
}

// idxBatches is how many batches the index file lists.
func (p *segPlan) idxBatches() int64 {
	fi, err := os.Stat(p.idxPath)
	if err != nil {
		return 0
	}
	return fi.Size() / indexEntrySize
}

// addDamage turns p's bad spans into Damage entries.
func (r *Report) addDamage(p *segPlan, exact bool, evidence []string) {
	for i := range p.scan.bad {
		sp := &p.scan.bad[i]
		end, bound := sp.next, Exactly
		if end < 0 {
			end = max(p.tailEnd, sp.first)
			if !exact {
				bound = AtLeast
			}
		}
		if !p.contiguous {
			bound = UpTo
		}
		reason := sp.reason
		if sp.next < 0 && len(evidence) > 0 {
			reason += "; " + strings.Join(evidence, "; ")
		}
		if end == sp.first && sp.pos == sp.end {
			continue
		}
		r.Damage = append(r.Damage, Damage{
			File: p.path, Topic: p.topic, Partition: p.partition,
			Offset: sp.first, End: end, Records: end - sp.first, Bound: bound,
			Bytes: sp.end - sp.pos, Reason: reason,
		})
	}
}

// scanFile reads and scans one segment and checks its index.
func scanFile(pdir, topic string, part int32, base int64, contiguous bool) (segPlan, error) {
	p := segPlan{
		path:    filepath.Join(pdir, strconv.FormatInt(base, 10)+".dat"),
		idxPath: filepath.Join(pdir, strconv.FormatInt(base, 10)+".idx"),
		topic:   topic, partition: part, contiguous: contiguous,
	}
	// One segment at a time: memory is bounded by the segment size.
	raw, err := os.ReadFile(p.path)
	if err != nil {
		return p, fmt.Errorf("read %s: %w", p.path, err)
	}
	p.scan = scanSegment(raw, base, contiguous)
	idx, err := os.ReadFile(p.idxPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return p, fmt.Errorf("read %s: %w", p.idxPath, err)
	}
	if int64(len(idx)) != int64(len(p.scan.batches))*indexEntrySize {
		p.idxFix = true
	}
	for i := range p.scan.batches {
		off := i * indexEntrySize
		if off+indexEntrySize > len(idx) || !indexEntryOK(idx[off:]) {
			p.idxFix = true
			break
		}
	}
	return p, nil
}

// readSnapshot reads a partition's snapshot.json.
func readSnapshot(path string) (partSnapshot, bool) {
	var s partSnapshot
	raw, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(raw, &s) != nil {
		return s, false
	}
	return s, true
}

// checkEmpty handles a partition directory without segments. kfake
// restarts such a partition's offsets at zero, and offsets name messages
// (ids, acks) and registrations (snapshots): where the log is known to
// have reached an end offset, an empty batch just below it keeps it. That
// is lossless when the clean-shutdown snapshot, or the offsets recorded
// since, show every record was deleted on purpose (retention); otherwise
// files are missing: damage.
func (r *Report) checkEmpty(pdir, topic string, part int32, contiguous bool, snap partSnapshot, snapOK bool, rec recorded) {
	recordedEnd := rec.end
	end := recordedEnd
	if snapOK {
		end = max(end, snap.HighWatermark)
	}
	if end <= 0 {
		return
	}
	base := end - 1
	p := segPlan{
		path:    filepath.Join(pdir, strconv.FormatInt(base, 10)+".dat"),
		idxPath: filepath.Join(pdir, strconv.FormatInt(base, 10)+".idx"),
		topic:   topic, partition: part, contiguous: contiguous,
		scan:    segScan{base: base, end: base, bad: []badSpan{{first: base, next: -1}}},
		tailEnd: end, prevTS: time.Now().UnixMilli(),
	}
	emptiedAtSnap := snapOK && len(snap.Segments) == 0 && snap.LogStartOffset >= snap.HighWatermark && snap.HighWatermark >= recordedEnd
	emptiedAtRecord := rec.start >= recordedEnd && recordedEnd >= end // end is the larger of the two
	if emptiedAtSnap || emptiedAtRecord {
		p.scan.bad[0].reason = "emptied by retention"
		r.plan = append(r.plan, p)
		r.EndFixes = append(r.EndFixes, fmt.Sprintf("%s/%d at offset %d", topic, part, end))
		return
	}
	p.scan.bad[0].reason = fmt.Sprintf("no segment files, but the log had reached offset %d", end)
	r.plan = append(r.plan, p)
	r.Damage = append(r.Damage, Damage{File: p.path, Topic: topic, Partition: part, Offset: base, End: end,
		Records: 1, Bound: AtLeast, Reason: p.scan.bad[0].reason})
	if snapOK {
		r.snapshots = append(r.snapshots, filepath.Join(pdir, "snapshot.json"))
	}
}
