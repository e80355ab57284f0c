package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// nodeIDSlots bounds how many processes sharing one data directory (with
// --kafka-brokers several may) each keep a stable id of their own.
const nodeIDSlots = 16

// validNodeID is what a node-id file may hold (it names the node in
// presence events, analytics and status).
var validNodeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// nodeIDLock holds a node id file's lock for the process's life: two
// processes on one data directory must not share an id.
type nodeIDLock struct{ f *os.File }

func (l *nodeIDLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // releases the flock
	l.f = nil
	return err
}

// stableNodeID returns the node id kept in the data directory, creating it
// (hostname and a random suffix) on the first start: the id then stays the
// same across restarts, so "connections by node" does not grow a row per
// restart. The first process on a data directory uses DATA_DIR/node-id;
// further ones sharing it (external Kafka) use node-id.1, node-id.2, ...,
// each locked while its process runs.
func stableNodeID(dataDir string) (string, *nodeIDLock, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", nil, fmt.Errorf("create data directory %s: %w", dataDir, err)
	}
	host, _ := os.Hostname()
	for slot := range nodeIDSlots {
		name := "node-id"
		if slot > 0 {
			name += "." + strconv.Itoa(slot)
		}
		path := filepath.Join(dataDir, name)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return "", nil, fmt.Errorf("open %s: %w", path, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another process on this data directory has it
			}
			return "", nil, fmt.Errorf("lock %s: %w", path, err)
		}
		id, err := readOrCreateNodeID(f, host)
		if err != nil {
			_ = f.Close()
			return "", nil, fmt.Errorf("%s: %w", path, err)
		}
		return id, &nodeIDLock{f: f}, nil
	}
	return "", nil, fmt.Errorf("%d processes already run on data directory %s; give this one --node-id or its own --data-dir", nodeIDSlots, dataDir)
}

// readOrCreateNodeID returns the id in f, or writes a new one when f is
// empty or does not hold a valid id.
func readOrCreateNodeID(f *os.File, host string) (string, error) {
	b := make([]byte, 256)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if id := strings.TrimSpace(string(b[:n])); validNodeID.MatchString(id) {
		return id, nil
	}
	id := newNodeID(host)
	if err := f.Truncate(0); err != nil {
		return "", err
	}
	if _, err := f.WriteAt([]byte(id+"\n"), 0); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return id, nil
}

// newNodeID is the hostname (cleaned to the id alphabet) and a random
// suffix, so that two hosts with the same name still differ.
func newNodeID(host string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '-'
	}, host)
	clean = strings.Trim(clean, "-.")
	if len(clean) > 100 {
		clean = clean[:100]
	}
	if clean == "" {
		clean = "pushlog"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", clean, b)
}
