package embedded

import (
	"context"
	"encoding/json"

	"errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// batchesOverlapping counts the valid batches of a segment file that
// overlap bytes [from, to).
func batchesOverlapping(t *testing.T, path string, from, to int64) (n int64, first int64) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first = -1
	for pos := int64(0); pos < int64(len(raw)); {
		h, err := checkBatch(raw[pos:])
		if err != nil {
			t.Fatalf("%s is damaged before the test damages it: %v", path, err)
		}
		if pos < to && pos+h.size() > from {
			n += int64(h.NumRecords)
			if first < 0 {
				first = h.FirstOffset
			}
		}
		pos += h.size()
	}
	return n, first
}

func TestDamageDetectedAndRepaired(t *testing.T) {
	const n = 300
	tests := []struct {
		name string
		// damage damages the log in dir and returns the expected first
		// affected offset and record count.
		damage  func(t *testing.T, dir string) (offset, records int64)
		bound   string
		segSize int64
	}{
		{name: "cut 37 bytes off the end", bound: Exactly, damage: func(t *testing.T, dir string) (int64, int64) {
			seg := segments(t, dir)[0]
			if err := os.Truncate(seg, fileSize(t, seg)-37); err != nil {
				t.Fatal(err)
			}
			return n - 1, 1
		}},
		{name: "flip 16 bytes in the middle", bound: Exactly, damage: func(t *testing.T, dir string) (int64, int64) {
			seg := segments(t, dir)[0]
			mid := fileSize(t, seg) / 2
			recs, first := batchesOverlapping(t, seg, mid, mid+16)
			flip(t, seg, mid, 16)
			return first, recs
		}},
		{name: "flip 16 bytes over a batch boundary", bound: Exactly, damage: func(t *testing.T, dir string) (int64, int64) {
			seg := segments(t, dir)[0]
			raw, _ := os.ReadFile(seg)
			h, _ := parseHeader(raw)
			at := 5*h.size() - 8 // straddles batches 4 and 5, hitting 5's offset and length
			recs, first := batchesOverlapping(t, seg, at, at+16)
			flip(t, seg, at, 16)
			return first, recs
		}},
		{name: "truncate to zero", bound: Exactly, damage: func(t *testing.T, dir string) (int64, int64) {
			if err := os.Truncate(segments(t, dir)[0], 0); err != nil {
				t.Fatal(err)
			}
			return 0, n
		}},
		{name: "truncate to zero after a crash (no snapshot)", bound: AtLeast, damage: func(t *testing.T, dir string) (int64, int64) {
			if err := os.Remove(filepath.Join(partDirOf(dir), "snapshot.json")); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(segments(t, dir)[0], 0); err != nil {
				t.Fatal(err)
			}
			return 0, n // the index still lists 300 batches
		}},
		{name: "cut 37 bytes off the end after a crash, recorded ends", bound: AtLeast, damage: func(t *testing.T, dir string) (int64, int64) {
			_ = os.Remove(filepath.Join(partDirOf(dir), "snapshot.json"))
			_ = os.Remove(segments(t, dir)[0][:len(segments(t, dir)[0])-4] + ".idx")
			if err := writeEnds(dir, map[string]map[int32]int64{testTopic: {0: n}}); err != nil {
				t.Fatal(err)
			}
			seg := segments(t, dir)[0]
			if err := os.Truncate(seg, fileSize(t, seg)-37); err != nil {
				t.Fatal(err)
			}
			return n - 1, 1
		}},
		{name: "middle segment truncated to zero", bound: Exactly, segSize: 8 << 10, damage: func(t *testing.T, dir string) (int64, int64) {
			segs := segments(t, dir)
			if len(segs) < 3 {
				t.Fatalf("want 3+ segments, have %d", len(segs))
			}
			raw, _ := os.ReadFile(segs[1])
			var recs int64
			for pos := int64(0); pos < int64(len(raw)); {
				h, _ := parseHeader(raw[pos:])
				recs += int64(h.NumRecords)
				pos += h.size()
			}
			first, _ := parseHeader(raw)
			if err := os.Truncate(segs[1], 0); err != nil {
				t.Fatal(err)
			}
			return first.FirstOffset, recs
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := makeLog(t, n, tc.segSize)
			if r, err := Verify(dir); err != nil || r.Err() != nil {
				t.Fatalf("undamaged log: %v %v", err, r.Err())
			}
			offset, records := tc.damage(t, dir)

			// Detected: start refuses, naming the file, offset and count.
			_, err := Start(Config{Dir: dir})
			var de *DamageError
			if !errors.As(err, &de) {
				t.Fatalf("start on damaged log: %v, want a DamageError", err)
			}
			if len(de.Report.Damage) != 1 {
				t.Fatalf("damage: %v", de.Report.Damage)
			}
			d := de.Report.Damage[0]
			if d.Offset != offset || d.Records != records || d.Bound != tc.bound || d.Topic != testTopic || !strings.HasSuffix(d.File, ".dat") {
				t.Fatalf("damage %+v, want offset %d, %s %d records", d, offset, tc.bound, records)
			}
			if !strings.Contains(err.Error(), d.File) || !strings.Contains(err.Error(), "pushlog repair") {
				t.Errorf("error does not name the file and the repair: %v", err)
			}

			// Repaired: the report says what was dropped; start works;
			// every other record is there; no offset is reused.
			rr, err := Repair(dir)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			if !slices.Equal(rr.Damage, de.Report.Damage) {
				t.Errorf("repair reported %v, verify %v", rr.Damage, de.Report.Damage)
			}
			if r, err := Verify(dir); err != nil || r.Err() != nil || len(r.IndexFixes) > 0 {
				t.Fatalf("after repair: %v %v %v", err, r.Err(), r.IndexFixes)
			}
			c := startTest(t, dir, tc.segSize)
			defer c.Close()
			got, next := consumeAll(t, c, testTopic)
			if int64(len(got)) != n-records {
				t.Errorf("read %d records after repair, want %d", len(got), n-records)
			}
			for _, o := range got {
				if o >= offset && o < offset+records {
					t.Errorf("read offset %d, reported dropped", o)
				}
			}
			if next != n {
				t.Errorf("first new offset %d, want %d (offsets of lost records must not be reused)", next, n)
			}
		})
	}
}

func TestCleanLogVerifies(t *testing.T) {
	dir := makeLog(t, 50, 4<<10)
	// A crash leaves no snapshot and may leave the last index entry
	// unwritten: lossless, fixed at start, not damage.
	_ = os.Remove(filepath.Join(partDirOf(dir), "snapshot.json"))
	segs := segments(t, dir)
	idx := segs[len(segs)-1][:len(segs[len(segs)-1])-4] + ".idx"
	if err := os.Truncate(idx, fileSize(t, idx)-indexEntrySize); err != nil {
		t.Fatal(err)
	}
	r, err := Verify(dir)
	if err != nil || r.Err() != nil {
		t.Fatalf("verify: %v %v", err, r.Err())
	}
	if r.Records != 50 || len(r.IndexFixes) != 1 {
		t.Fatalf("records %d, index fixes %v", r.Records, r.IndexFixes)
	}
	c := startTest(t, dir, 4<<10)
	c.Close()
	if r, _ := Verify(dir); len(r.IndexFixes) != 0 || r.Err() != nil {
		t.Fatalf("after start: %v %v", r.IndexFixes, r.Err())
	}
}

func TestDamagedGroupsLog(t *testing.T) {
	dir := makeLog(t, 5, 0)
	log := filepath.Join(dir, "groups.log")
	e1 := frameEntry([]byte(`{"type":"commit","g":"a","t":"x","o":5}`))
	e2 := frameEntry([]byte(`{"type":"commit","g":"b","t":"x","o":7}`))
	bad := append([]byte{}, e2...)
	bad[len(bad)-2] ^= 0xff
	if err := os.WriteFile(log, slices.Concat(e1, bad, e2), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Verify(dir)
	if err != nil || len(r.Damage) != 1 || r.Damage[0].File != log || r.Damage[0].Bytes != int64(len(bad)) {
		t.Fatalf("verify: %v %+v", err, r.Damage)
	}
	if _, err := Repair(dir); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(log)
	if !slices.Equal(got, slices.Concat(e1, e2)) {
		t.Errorf("repaired groups.log keeps %q", got)
	}
}

func TestDamagedJSONIsNotRepaired(t *testing.T) {
	dir := makeLog(t, 5, 0)
	if err := os.WriteFile(filepath.Join(dir, "topics.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "topics.json") {
		t.Fatalf("start: %v", err)
	}
	if _, err := Repair(dir); err == nil || !strings.Contains(err.Error(), "backup") {
		t.Fatalf("repair: %v", err)
	}
}

// flip inverts n bytes of path at off.
func flip(t *testing.T, path string, off, n int64) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := off; i < off+n; i++ {
		raw[i] ^= 0xff
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// frameEntry frames data as kfake's log entries.
func frameEntry(data []byte) []byte {
	b := make([]byte, entryHeaderSize+len(data))
	putLE32(b[0:4], uint32(2+len(data)))
	b[8] = 1
	copy(b[10:], data)
	putLE32(b[4:8], crcOf(b[8:]))
	return b
}

func TestEmptiedPartitionKeepsItsEndOffset(t *testing.T) {
	dir := makeLog(t, 20, 0)
	// Retention deleted every record (as kfake does after retention.ms
	// on an idle partition), then a clean shutdown.
	c := startTest(t, dir, 0)
	adm := kadm.NewClient(client(t, c))
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: testTopic, Partition: 0, At: 20})
	if _, err := adm.DeleteRecords(context.Background(), offs); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if m, _ := filepath.Glob(filepath.Join(partDirOf(dir), "*.dat")); len(m) != 0 {
		t.Fatalf("segments left: %v", m)
	}
	r, err := Verify(dir)
	if err != nil || r.Err() != nil || len(r.EndFixes) != 1 {
		t.Fatalf("verify: %v %v %v", err, r.Err(), r.EndFixes)
	}
	c = startTest(t, dir, 0)
	defer c.Close()
	if got, next := consumeAll(t, c, testTopic); len(got) != 0 || next != 20 {
		t.Fatalf("after restart: records %v, next offset %d, want none and 20 (offsets never restart)", got, next)
	}
}

func TestCompactionAfterSnapshotIsNotDamage(t *testing.T) {
	const topic = "pushlog.channels"
	dir := filepath.Join(t.TempDir(), "kafka")
	c := startTest(t, dir, 0)
	cl := client(t, c)
	createTopic(t, cl, topic, true)
	// The first record's key is never written again: compaction keeps it,
	// so the segment keeps its name and only shrinks.
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte("first"), Value: []byte("record-000000-")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	produceN(t, cl, topic, 1, 49) // 7 keys: compaction keeps 7 of them
	cl.Close()
	c.Close()
	snap := filepath.Join(dir, "partitions", topic+"-0", "snapshot.json")
	stale, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	// Compaction rewrites the segment smaller; a crash then leaves the
	// older snapshot.
	c = startTest(t, dir, 0)
	c.Compact()
	c.Close()
	if fi, err := os.Stat(filepath.Join(dir, "partitions", topic+"-0", "0.dat")); err != nil || fi.Size() >= 50*200 {
		t.Fatalf("compaction did not shrink the segment in place: %v", err)
	}
	if err := os.WriteFile(snap, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err := Verify(dir); err != nil || r.Err() != nil {
		t.Fatalf("verify after compaction: %v %v", err, r.Err())
	}
}

func TestSnapshotAfterCrash(t *testing.T) {
	const n = 120
	dir := makeLog(t, n, 8<<10)
	snap := filepath.Join(partDirOf(dir), "snapshot.json")
	clean, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	// A crash leaves no (or a stale) snapshot: kfake would replay the
	// whole partition into memory.
	if err := os.Remove(snap); err != nil {
		t.Fatal(err)
	}
	r, err := Verify(dir)
	if err != nil || r.Err() != nil || len(r.freshSnaps) != 1 {
		t.Fatalf("verify: %v %v, %d fresh snapshots", err, r.Err(), len(r.freshSnaps))
	}
	var want, got partSnapshot
	_ = json.Unmarshal(clean, &want)
	got.HighWatermark, got.LogStartOffset = r.freshSnaps[0].snap.HighWatermark, r.freshSnaps[0].snap.LogStartOffset
	for _, s := range r.freshSnaps[0].snap.Segments {
		got.Segments = append(got.Segments, struct {
			BaseOffset int64 `json:"base_offset"`
			Size       int64 `json:"size"`
		}{s.BaseOffset, s.Size})
	}
	if got.HighWatermark != want.HighWatermark || got.LogStartOffset != want.LogStartOffset || !slices.Equal(got.Segments, want.Segments) {
		t.Fatalf("fresh snapshot %+v, kfake's own %+v", got, want)
	}
	c := startTest(t, dir, 8<<10)
	defer c.Close()
	if _, err := os.Stat(snap); err != nil {
		t.Fatalf("no snapshot written: %v", err)
	}
	if recs, next := consumeAll(t, c, testTopic); len(recs) != n || next != n {
		t.Fatalf("after start from the written snapshot: %d records, next offset %d", len(recs), next)
	}
}
