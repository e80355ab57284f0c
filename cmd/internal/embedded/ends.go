package embedded

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
)

// endsFile records, beside the broker's files, the end offset of every
// partition as the broker last reported it. kfake writes its own record of
// them (snapshot.json) only at a clean shutdown; after a crash this file
// is what tells verification how far a damaged tail reached, and that a
// tail cut exactly at a batch boundary (or a deleted newest segment) lost
// records at all. The trimmer rewrites it every RecordInterval (1 s) when
// an end moved, so what it cannot vouch for is the records acknowledged in
// the last interval before a crash.
const endsFile = "pushlog-ends.json"

type endsDoc struct {
	Version    int                         `json:"version"`
	Partitions map[string]map[string]int64 `json:"partitions"`
	// Starts are the log start offsets recorded with the ends: a partition
	// whose start had reached its end was emptied on purpose (retention,
	// DeleteRecords), and no segment file is then what is expected.
	Starts map[string]map[string]int64 `json:"starts,omitempty"`
}

// readEnds returns the recorded end offsets; a missing or unreadable file
// records nothing (it is evidence, never required).
func readEnds(dir string) map[string]map[int32]int64 {
	ends, _ := readRecorded(dir)
	return ends
}

// readRecorded returns the recorded end and start offsets.
func readRecorded(dir string) (ends, starts map[string]map[int32]int64) {
	raw, err := os.ReadFile(filepath.Join(dir, endsFile))
	if err != nil {
		return fromDoc(nil), fromDoc(nil)
	}
	var doc endsDoc
	if json.Unmarshal(raw, &doc) != nil {
		return fromDoc(nil), fromDoc(nil)
	}
	return fromDoc(doc.Partitions), fromDoc(doc.Starts)
}

// fromDoc decodes one map of the file; partitions that do not parse are
// left out.
func fromDoc(in map[string]map[string]int64) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	for t, parts := range in {
		out[t] = map[int32]int64{}
		for p, off := range parts {
			if n, err := strconv.ParseInt(p, 10, 32); err == nil {
				out[t][int32(n)] = off
			}
		}
	}
	return out
}

// toDoc encodes one map of the file.
func toDoc(in map[string]map[int32]int64) map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for t, parts := range in {
		out[t] = map[string]int64{}
		for p, off := range parts {
			out[t][strconv.Itoa(int(p))] = off
		}
	}
	return out
}

// writeEnds records ends (and no starts).
func writeEnds(dir string, ends map[string]map[int32]int64) error {
	return writeRecorded(dir, ends, nil)
}

// writeRecorded records ends and starts atomically (written, fsynced,
// renamed): a crash leaves the previous file or the new one, never a mix.
func writeRecorded(dir string, ends, starts map[string]map[int32]int64) error {
	doc := endsDoc{Version: 1, Partitions: toDoc(ends)}
	if len(starts) > 0 {
		doc.Starts = toDoc(starts)
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode end offsets: %w", err)
	}
	return writeAtomic(filepath.Join(dir, endsFile), raw)
}

// sameEnds reports whether a and b record the same end offsets.
func sameEnds(a, b map[string]map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for t, pa := range a {
		pb, ok := b[t]
		if !ok || !maps.Equal(pa, pb) {
			return false
		}
	}
	return true
}

// writeAtomic replaces path with data: temp file, fsync, rename, fsync of
// the directory.
func writeAtomic(path string, data []byte) error {
	return writeAtomicBuffered(path, 0, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeAtomicWith replaces path with what fill writes, as writeAtomic
// does, buffered: fill may write any amount in small pieces.
func writeAtomicWith(path string, fill func(io.Writer) error) error {
	return writeAtomicBuffered(path, 1<<20, fill)
}

// writeAtomicBuffered is writeAtomicWith with a buffer of size bytes, or
// none for 0: the end offsets are rewritten every second under traffic,
// and a 1 MiB buffer per write for a few kilobytes of JSON made a MiB of
// garbage a second (the recorder was 3.7% of the server's CPU at 100
// pushes/s).
func writeAtomicBuffered(path string, size int, fill func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	var w io.Writer = f
	var bw *bufio.Writer
	if size > 0 {
		bw = bufio.NewWriterSize(f, size)
		w = bw
	}
	err = fill(w)
	if err == nil && bw != nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
