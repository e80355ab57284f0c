package embedded

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// endsFile records, beside the broker's files, the end offset of every
// partition as last seen by the trimmer. kfake writes its own record of
// them (snapshot.json) only at a clean shutdown; after a crash this file
// is what tells verification how far a damaged tail reached.
const endsFile = "pushlog-ends.json"

type endsDoc struct {
	Version    int                         `json:"version"`
	Partitions map[string]map[string]int64 `json:"partitions"`
}

// readEnds returns the recorded end offsets; a missing or unreadable file
// records nothing (it is evidence, never required).
func readEnds(dir string) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	raw, err := os.ReadFile(filepath.Join(dir, endsFile))
	if err != nil {
		return out
	}
	var doc endsDoc
	if json.Unmarshal(raw, &doc) != nil {
		return out
	}
	for t, parts := range doc.Partitions {
		out[t] = map[int32]int64{}
		for p, end := range parts {
			if n, err := strconv.ParseInt(p, 10, 32); err == nil {
				out[t][int32(n)] = end
			}
		}
	}
	return out
}

// writeEnds records ends atomically, keeping the larger of the recorded
// and the new end of each partition: ends only grow.
func writeEnds(dir string, ends map[string]map[int32]int64) error {
	merged := readEnds(dir)
	doc := endsDoc{Version: 1, Partitions: map[string]map[string]int64{}}
	for t, parts := range ends {
		if merged[t] == nil {
			merged[t] = map[int32]int64{}
		}
		for p, e := range parts {
			merged[t][p] = max(merged[t][p], e)
		}
	}
	for t, parts := range merged {
		doc.Partitions[t] = map[string]int64{}
		for p, e := range parts {
			doc.Partitions[t][strconv.Itoa(int(p))] = e
		}
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode end offsets: %w", err)
	}
	return writeAtomic(filepath.Join(dir, endsFile), raw)
}

// writeAtomic replaces path with data: temp file, fsync, rename, fsync of
// the directory.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = f.Write(data)
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
