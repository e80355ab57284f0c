package embedded

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultSegmentBytes is the embedded broker's segment size. Trimming
// frees disk and the broker's per-batch index only a whole segment at a
// time, so a segment is the slack above what must be kept, per partition:
// kfake's 100 MiB default lets 60 partitions hold 6 GiB of settled
// records (and their index) until a segment fills; 1 MiB holds at most
// 60 MiB, at about a thousand files for an hour of 200 pushes/s.
const DefaultSegmentBytes = 1 << 20

// MaxSegmentBytes caps SegmentBytes. Verification at start reads one
// segment at a time, whole: the cap bounds that memory (repair streams).
// Trimming and the per-batch index favour small segments anyway.
const MaxSegmentBytes = 64 << 20

// Config configures the embedded broker.
type Config struct {
	Dir          string // the broker's directory (DATA_DIR/kafka)
	Port         int    // 0: any free port
	Fsync        bool
	SegmentBytes int64 // 0 means DefaultSegmentBytes
	Logger       *slog.Logger
	// Local, when set, also lets in-process clients in through pipes
	// (see Local); the TCP listener is there either way.
	Local *Local
}

// Start verifies the broker's directory and starts the broker on it. On
// damage it refuses with a *DamageError naming each damaged file, the
// offsets and how many records are affected; lossless index problems are
// fixed and logged. The caller holds the data directory's lock.
func Start(cfg Config) (*kfake.Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	if cfg.SegmentBytes < 0 || cfg.SegmentBytes > MaxSegmentBytes {
		return nil, fmt.Errorf("embedded kafka segment size %d is out of range 1..%d (64 MiB): verification reads a segment into memory at start", cfg.SegmentBytes, MaxSegmentBytes)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.Dir, err)
	}
	r, err := Verify(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", cfg.Dir, err)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if err := fixIndexes(r); err != nil {
		return nil, err
	}
	if err := writeSnapshots(r); err != nil {
		return nil, err
	}
	if len(r.freshSnaps) > 0 {
		cfg.Logger.Info("embedded kafka: wrote partition snapshots after an unclean stop, so the broker loads one segment at a time", "partitions", len(r.freshSnaps))
	}
	if len(r.EndFixes) > 0 {
		cfg.Logger.Warn("embedded kafka: kept the end offsets of partitions emptied by retention (kfake would restart them at zero)", "partitions", r.EndFixes)
	}
	if len(r.IndexFixes) > 0 {
		cfg.Logger.Warn("embedded kafka: rebuilt index files from their segments (no record was lost)", "files", r.IndexFixes)
	}
	cfg.Logger.Info("embedded kafka verified", "dir", cfg.Dir, "files", r.Files, "batches", r.Batches, "records", r.Records)
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(cfg.Port),
		kfake.DataDir(cfg.Dir),
		kfake.ClusterID("pushlog-embedded"),
		kfake.BrokerConfigs(map[string]string{"log.segment.bytes": strconv.FormatInt(cfg.SegmentBytes, 10)}),
		kfake.WithLogger(kfakeLogger{cfg.Logger}),
	}
	if cfg.Fsync {
		opts = append(opts, kfake.SyncWrites())
	}
	if cfg.Local != nil {
		opts = append(opts, kfake.ListenFn(cfg.Local.listen))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka in %s: %w", cfg.Dir, err)
	}
	return cluster, nil
}

// fixIndexes rewrites the index files of undamaged segments whose index
// disagrees with them (a crash between kfake's two writes of a batch).
func fixIndexes(r *Report) error {
	for i := range r.plan {
		if p := &r.plan[i]; !p.damaged() && p.idxFix || p.restoresEnd() {
			if err := repairSegment(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// kfakeLogger passes kfake's warnings and errors (persistence failures) to
// slog; its info and debug chatter is dropped.
type kfakeLogger struct{ l *slog.Logger }

func (kfakeLogger) Level() kfake.LogLevel { return kfake.LogLevelWarn }

func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	switch level {
	case kfake.LogLevelError:
		k.l.Error("embedded kafka: " + msg)
	case kfake.LogLevelWarn:
		k.l.Warn("embedded kafka: " + msg)
	}
}

// restoresEnd reports whether p only keeps an emptied partition's end.
func (p *segPlan) restoresEnd() bool {
	return len(p.scan.batches) == 0 && len(p.scan.bad) == 1 && p.scan.bad[0].reason == "emptied by retention"
}
