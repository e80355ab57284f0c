package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// runtimeFileName is written into the data directory by a serve running
// the embedded broker, so that operator commands (status, topics, replay,
// analytics) find it without flags: the embedded broker listens on a port
// chosen at start (--embedded-kafka-addr defaults to port 0), which would
// otherwise show only in a log line. A fixed default port was the other
// choice; it would collide with a local Kafka (9092) or a second data
// directory, and would not carry the namespace or ClickHouse address.
const runtimeFileName = "serve.json"

// runtimeInfo is what a running serve tells operator commands about itself.
type runtimeInfo struct {
	PID            int       `json:"pid"`
	Version        string    `json:"version"`
	NodeID         string    `json:"node_id"`
	Namespace      string    `json:"namespace"`
	KafkaBrokers   []string  `json:"kafka_brokers"`
	Embedded       bool      `json:"embedded"`
	Roles          []string  `json:"roles"`
	HTTPAddr       string    `json:"http_addr,omitempty"`
	WSAddr         string    `json:"ws_addr,omitempty"`
	MetricsAddr    string    `json:"metrics_addr,omitempty"`
	ClickHouseAddr string    `json:"clickhouse_addr,omitempty"`
	ClickHouseDB   string    `json:"clickhouse_db,omitempty"`
	StartedAt      time.Time `json:"started_at"`
}

func runtimePath(dataDir string) string { return filepath.Join(dataDir, runtimeFileName) }

// writeRuntime writes info atomically (a reader never sees half a file)
// and returns a function that removes it again at a clean stop, unless a
// later serve replaced it meanwhile.
func writeRuntime(dataDir string, info runtimeInfo) (remove func(), err error) {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("runtime file: %w", err)
	}
	path := runtimePath(dataDir)
	tmp, err := os.CreateTemp(dataDir, runtimeFileName+".*")
	if err != nil {
		return nil, fmt.Errorf("runtime file: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return nil, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return func() {
		if cur, err := readRuntimeFile(path); err == nil && cur.PID == info.PID {
			_ = os.Remove(path)
		}
	}, nil
}

func readRuntimeFile(path string) (runtimeInfo, error) {
	var info runtimeInfo
	b, err := os.ReadFile(path)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

// errNoServe means no serve announced itself in the data directory.
var errNoServe = errors.New("no running pushlog serve found")

// findServe reads the runtime file of the serve running on dataDir. A file
// left by a serve that died (kill -9, a crash) is reported as stale.
func findServe(dataDir string) (runtimeInfo, error) {
	path := runtimePath(dataDir)
	info, err := readRuntimeFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("%w: %s does not exist (start `pushlog serve`, pass the --data-dir it runs on, or pass --kafka-brokers)", errNoServe, path)
	}
	if err != nil {
		return info, err
	}
	if !processAlive(info.PID) {
		return info, fmt.Errorf("%w: %s is left from pid %d, which is not running any more (start `pushlog serve`, or pass --kafka-brokers)", errNoServe, path, info.PID)
	}
	if len(info.KafkaBrokers) == 0 {
		return info, fmt.Errorf("%s names no Kafka broker", path)
	}
	return info, nil
}

// processAlive reports whether pid exists (signal 0 checks without
// signalling; EPERM means it exists under another user).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
