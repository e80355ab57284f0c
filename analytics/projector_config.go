package analytics

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// DefaultGroup is the consumer group of the analytics projector.
const DefaultGroup = "pushlog-analytics"

// Defaults of ProjectorConfig.
const (
	// DefaultBatchRows and DefaultBatchBytes: ClickHouse writes a part
	// per insert whatever its size, so large batches are what make
	// projection fast; the byte bound keeps memory bounded when rows are
	// large (at most two batches are held: one being stored, one being
	// collected).
	DefaultBatchRows     = 100_000
	DefaultBatchBytes    = 32 << 20
	DefaultBatchInterval = time.Second
	DefaultRetryMax      = 5 * time.Second
	DefaultOpTimeout     = 30 * time.Second
)

// ProjectorConfig configures an Projector.
type ProjectorConfig struct {
	// ClientOpts connect to Kafka (seed brokers, TLS, SASL, logger). The
	// projector adds its own consumer options to them.
	ClientOpts []kgo.Opt
	// Conn is the ClickHouse connection; when nil, Run opens Addr (host:port
	// of the native protocol) and closes it when it returns.
	Conn driver.Conn
	Addr string
	// Database holds the analytics tables; empty means DefaultDatabase.
	Database string
	// Group is the consumer group; empty means DefaultGroup.
	Group string
	// BatchRows, BatchBytes and BatchInterval bound a batch: it is written
	// when it has BatchRows rows, holds BatchBytes of rows in memory (an
	// estimate) or its first record is BatchInterval old. The next batch
	// is collected while one is written.
	BatchRows     int
	BatchBytes    int
	BatchInterval time.Duration
	// RetryMax caps the back-off between ClickHouse retries (default 5 s).
	RetryMax time.Duration
	// OpTimeout bounds one ClickHouse statement (default 30 s).
	OpTimeout time.Duration
	// StartAfter is where a partition starts when the database has nothing
	// of it yet: its first record produced at or after this time. Zero
	// means the start of the log (a new database gets the whole history
	// Kafka still has).
	StartAfter time.Time
	// SkipMigrate leaves the schema alone; by default Run applies
	// Migrate first (idempotent).
	SkipMigrate bool
	Logger      *slog.Logger
	// Metrics registers the projector's series (batches, records, rows,
	// failures); nil: no metrics. The ClickHouse breaker's state is
	// BreakerState, reported where the process's registry is built.
	Metrics prometheus.Registerer
	// Names are the topic names; zero means schema.DefaultNames().
	Names schema.Names
}

// withDefaults checks c and fills in the defaults of its zero fields.
func (c ProjectorConfig) withDefaults() (ProjectorConfig, error) {
	if len(c.ClientOpts) == 0 {
		return c, errors.New("analytics projector: no Kafka client options (seed brokers)")
	}
	if c.Conn == nil && c.Addr == "" {
		return c, errors.New("analytics projector: no ClickHouse connection or address")
	}
	if c.BatchRows < 0 || c.BatchBytes < 0 || c.BatchInterval < 0 || c.RetryMax < 0 || c.OpTimeout < 0 {
		return c, errors.New("analytics projector: negative batch size, interval, back-off or timeout")
	}
	c.Database = cmp.Or(c.Database, DefaultDatabase)
	if err := ValidateDatabase(c.Database); err != nil {
		return c, fmt.Errorf("analytics projector: %w", err)
	}
	if c.Names.Messages == "" {
		c.Names = schema.DefaultNames()
	}
	c.Group = cmp.Or(c.Group, c.Names.Group("analytics"))
	c.BatchRows = cmp.Or(c.BatchRows, DefaultBatchRows)
	c.BatchBytes = cmp.Or(c.BatchBytes, DefaultBatchBytes)
	c.BatchInterval = cmp.Or(c.BatchInterval, DefaultBatchInterval)
	c.RetryMax = cmp.Or(c.RetryMax, DefaultRetryMax)
	c.OpTimeout = cmp.Or(c.OpTimeout, DefaultOpTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c, nil
}
