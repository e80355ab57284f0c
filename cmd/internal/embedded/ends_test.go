package embedded

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
)

// recordedLog writes n records (8 KiB segments) while a trimmer records
// the end offsets every 20 ms, waits until the file shows n, and stops as
// a crash would leave it: no clean-shutdown snapshot.
func recordedLog(t *testing.T, n int) (dir string, tr *Trimmer) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "kafka")
	c := startTest(t, dir, 8<<10)
	defer c.Close()
	cl := client(t, c)
	createTopic(t, cl, testTopic, false)
	tr, err := NewTrimmer(TrimConfig{Admin: kadm.NewClient(cl), Dir: dir, Topics: []string{testTopic},
		Interval: time.Hour, RecordInterval: 20 * time.Millisecond, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- tr.Run(ctx) }()
	produceN(t, cl, testTopic, 0, n)
	waitEnds(t, dir, int64(n))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Close()
	crash(t, dir)
	return dir, tr
}

// waitEnds waits until the ends file records end for testTopic/0.
func waitEnds(t *testing.T, dir string, end int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); readEnds(dir)[testTopic][0] != end; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("recorded ends %v, want %s/0 at %d", readEnds(dir), testTopic, end)
		}
	}
}

// crash removes what only a clean shutdown leaves: the snapshots.
func crash(t *testing.T, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(partDirOf(dir), "snapshot.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// cutAtBatch truncates a segment and its index to their first k batches,
// as consistently as a careful hand (or a filesystem) could: nothing in
// the file itself shows the cut.
func cutAtBatch(t *testing.T, seg string, k int) (firstCut int64) {
	t.Helper()
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	s := scanSegment(raw, 0, true)
	if k >= len(s.batches) {
		t.Fatalf("%s has %d batches, cutting at %d", seg, len(s.batches), k)
	}
	if err := os.Truncate(seg, s.batches[k].pos); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg[:len(seg)-4]+".idx", int64(k)*indexEntrySize); err != nil {
		t.Fatal(err)
	}
	return s.batches[k].h.FirstOffset
}

func TestRecordedEndsCatchCutsAtBatchBoundaries(t *testing.T) {
	const n = 150
	tests := []struct {
		name string
		// damage returns the first lost offset.
		damage func(t *testing.T, dir string) int64
	}{
		{name: "last segment cut at a batch boundary", damage: func(t *testing.T, dir string) int64 {
			segs := segments(t, dir)
			return cutAtBatch(t, segs[len(segs)-1], 3)
		}},
		{name: "last segment cut to its first batch boundary (empty file)", damage: func(t *testing.T, dir string) int64 {
			segs := segments(t, dir)
			return cutAtBatch(t, segs[len(segs)-1], 0)
		}},
		{name: "newest segment files deleted", damage: func(t *testing.T, dir string) int64 {
			segs := segments(t, dir)
			last := segs[len(segs)-1]
			raw, _ := os.ReadFile(last)
			h, _ := parseHeader(raw)
			for _, f := range []string{last, last[:len(last)-4] + ".idx"} {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
			}
			return h.FirstOffset
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := recordedLog(t, n)
			if r, err := Verify(dir); err != nil || r.Err() != nil {
				t.Fatalf("undamaged log: %v %v", err, r.Err())
			}
			if len(segments(t, dir)) < 3 {
				t.Fatalf("want 3+ segments")
			}
			offset := tc.damage(t, dir)
			records := n - offset

			_, err := Start(Config{Dir: dir})
			var de *DamageError
			if !errors.As(err, &de) {
				t.Fatalf("start on damaged log: %v, want a DamageError", err)
			}
			if len(de.Report.Damage) != 1 {
				t.Fatalf("damage: %v", de.Report.Damage)
			}
			// At least: records acknowledged after the last recording
			// may have been lost too.
			d := de.Report.Damage[0]
			if d.Offset != offset || d.Records != records || d.Bound != AtLeast || d.Topic != testTopic {
				t.Fatalf("damage %+v, want offset %d, at least %d records", d, offset, records)
			}
			if !strings.Contains(err.Error(), "cut at a batch boundary, or newer segment files deleted") {
				t.Errorf("error does not say what happened: %v", err)
			}
			if _, err := Repair(dir); err != nil {
				t.Fatalf("repair: %v", err)
			}
			c := startTest(t, dir, 8<<10)
			defer c.Close()
			got, next := consumeAll(t, c, testTopic)
			if int64(len(got)) != n-records || next != n {
				t.Errorf("after repair: %d records, next offset %d; want %d and %d", len(got), next, n-records, n)
			}
		})
	}
}

// The window the recorder leaves, stated as a test: records acknowledged
// after the last recording, then cut exactly at a batch boundary after a
// crash, are not detected. With RecordInterval (1 s) that is at most the
// last second's records.
func TestRecordedEndsWindow(t *testing.T) {
	dir := makeLog(t, 20, 0)
	if err := writeEnds(dir, map[string]map[int32]int64{testTopic: {0: 17}}); err != nil {
		t.Fatal(err)
	}
	crash(t, dir)
	cutAtBatch(t, segments(t, dir)[0], 18) // 18 and 19 were never recorded
	if r, err := Verify(dir); err != nil || r.Err() != nil {
		t.Fatalf("verify: %v %v (if this now detects the cut, the window is closed: update the README)", err, r.Err())
	}
	cutAtBatch(t, segments(t, dir)[0], 16) // 16 was recorded
	if r, err := Verify(dir); err != nil || len(r.Damage) != 1 || r.Damage[0].Offset != 16 || r.Damage[0].Records != 1 {
		t.Fatalf("verify: %v %+v", err, r.Damage)
	}
}

func TestRecordEndsWritesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "kafka")
	c := startTest(t, dir, 0)
	defer c.Close()
	cl := client(t, c)
	createTopic(t, cl, testTopic, false)
	createTopic(t, cl, "pushlog.channels", true)
	reg := prometheus.NewRegistry()
	tr, err := NewTrimmer(TrimConfig{Admin: kadm.NewClient(cl), Dir: dir, Topics: []string{testTopic}, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	produceN(t, cl, testTopic, 0, 5)
	for range 3 {
		if err := tr.RecordEnds(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if w, u := tr.endsWrites["written"].Load(), tr.endsWrites["unchanged"].Load(); w != 1 || u != 2 {
		t.Errorf("written %d, unchanged %d; want 1 and 2", w, u)
	}
	ends, starts := readRecorded(dir)
	if ends[testTopic][0] != 5 || starts[testTopic][0] != 0 {
		t.Errorf("recorded ends %v, starts %v", ends, starts)
	}
	if _, ok := ends["pushlog.channels"]; !ok {
		t.Errorf("compacted topic not recorded: %v", ends)
	}
	if n, err := testutil.GatherAndCount(reg, "pushlog_embedded_end_offsets_recordings_total"); err != nil || n != 3 {
		t.Errorf("recordings metric: %d series, %v", n, err)
	}
	// A new trimmer on the same directory starts from the file: nothing
	// moved, nothing written.
	tr2, err := NewTrimmer(TrimConfig{Admin: kadm.NewClient(cl), Dir: dir, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr2.RecordEnds(ctx); err != nil || tr2.endsWrites["written"].Load() != 0 {
		t.Errorf("second trimmer rewrote unchanged ends: %v", err)
	}
}

// A partition emptied on purpose (retention, DeleteRecords) and then a
// crash: the recorded start shows it, so it is not damage.
func TestEmptiedPartitionAfterCrash(t *testing.T) {
	ctx := context.Background()
	dir := makeLog(t, 20, 0)
	c := startTest(t, dir, 0)
	cl := client(t, c)
	adm := kadm.NewClient(cl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: testTopic, Partition: 0, At: 20})
	if _, err := adm.DeleteRecords(ctx, offs); err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrimmer(TrimConfig{Admin: adm, Dir: dir, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.RecordEnds(ctx); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	c.Close()
	crash(t, dir)
	r, err := Verify(dir)
	if err != nil || r.Err() != nil || len(r.EndFixes) != 1 {
		t.Fatalf("verify: %v %v %v", err, r.Err(), r.EndFixes)
	}
	c = startTest(t, dir, 0)
	defer c.Close()
	if got, next := consumeAll(t, c, testTopic); len(got) != 0 || next != 20 {
		t.Fatalf("after restart: records %v, next offset %d, want none and 20", got, next)
	}
}

func TestSegmentBytesCapped(t *testing.T) {
	for _, tc := range []struct {
		bytes int64
		ok    bool
	}{{0, true}, {MaxSegmentBytes, true}, {MaxSegmentBytes + 1, false}, {1 << 30, false}, {-1, false}} {
		c, err := Start(Config{Dir: filepath.Join(t.TempDir(), "kafka"), SegmentBytes: tc.bytes})
		if c != nil {
			c.Close()
		}
		if (err == nil) != tc.ok || err != nil && !strings.Contains(err.Error(), "out of range") {
			t.Errorf("segment bytes %d: %v", tc.bytes, err)
		}
	}
}
