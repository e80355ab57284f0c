package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/cmd/internal/embedded"
	"github.com/pushlog/pushlog/schema"
)

// startEmbedded verifies the embedded broker's files (refusing to start
// on damage) and starts the broker. The caller holds the data directory's
// lock.
func startEmbedded(cfg *serveConfig, local *embedded.Local, logger *slog.Logger) (*kfake.Cluster, error) {
	_, portStr, _ := net.SplitHostPort(cfg.EmbeddedAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--embedded-kafka-addr: %w", err)
	}
	if cfg.EmbRetain <= 0 || cfg.EmbTrimEvery <= 0 {
		return nil, fmt.Errorf("--embedded-retain (%s) and --embedded-trim-interval (%s) must be positive", cfg.EmbRetain, cfg.EmbTrimEvery)
	}
	// The cap bounds what verification holds in memory at start: it reads
	// a segment whole.
	if cfg.EmbSegBytes < 64<<10 || cfg.EmbSegBytes > embedded.MaxSegmentBytes {
		return nil, fmt.Errorf("--embedded-segment-bytes: %d is out of range 65536..%d (64 KiB..64 MiB)", cfg.EmbSegBytes, embedded.MaxSegmentBytes)
	}
	dir := filepath.Join(cfg.DataDir, "kafka")
	cluster, err := embedded.Start(embedded.Config{
		Dir: dir, Port: port, Fsync: cfg.Fsync, SegmentBytes: cfg.EmbSegBytes,
		Logger: logger.With("role", "embedded-kafka"), Local: local,
	})
	if err != nil {
		return nil, err
	}
	logger.Info("embedded kafka running", "addr", cluster.ListenAddrs(), "data_dir", dir, "fsync", cfg.Fsync)
	return cluster, nil
}

// startTrimmer runs the embedded log's trimmer: settled prefixes below
// every group's commit and the replay window are deleted, so memory and
// disk follow what must be kept.
func startTrimmer(g *runGroup, cfg *serveConfig, names schema.Names, producer *kgo.Client, met *serveMetrics, logger *slog.Logger) error {
	logTopics := []string{names.Messages, names.Acks, names.Registrations}
	required := map[string][]string{
		names.Group("connectors"): logTopics,
		names.Group("channels"):   {names.Registrations},
	}
	if cfg.ClickHouseAddr != "" {
		required[names.Group("analytics")] = logTopics
	}
	t, err := embedded.NewTrimmer(embedded.TrimConfig{
		Admin:    kadm.NewClient(producer),
		Dir:      filepath.Join(cfg.DataDir, "kafka"),
		Topics:   logTopics,
		Required: required,
		Retain:   cfg.EmbRetain,
		Interval: cfg.EmbTrimEvery,
		Logger:   logger.With("role", "embedded-trim"),
		Metrics:  met.reg,
	})
	if err != nil {
		return err
	}
	// Run may be called again (each round stands alone): supervised.
	g.supervise("embedded-trim", t.Run)
	return nil
}
