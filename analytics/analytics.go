// Package analytics is pushlog's ClickHouse side: the versioned migrations
// that create the raw event tables and per-minute rollups (analytics.go,
// migrate.go), the event → row mapping that must agree with them
// (rows.go), the writer helpers (writer.go), the analytics projector that
// folds the pushlog topics into those tables exactly once (projector*.go,
// a member of schema/group), rebuilds (rebuild.go) and the dashboard
// queries (report.go).
//
// Everything here runs on Debian's ClickHouse 18.16 and on current
// ClickHouse, through clickhouse-go v2's native protocol. Every statement
// names its database explicitly, so a connection's default database does
// not matter.
package analytics

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pushlog/pushlog/schema"
)

// DefaultDatabase is the database pushlog uses when none is configured.
const DefaultDatabase = "pushlog"

// Raw table names. One row per event; see migrations/0001_raw_tables.sql.
const (
	TableAccepted      = "accepted"
	TableDeleted       = "deleted"
	TableDelivered     = "delivered"
	TableAcked         = "acked"
	TableNacked        = "nacked"
	TableExpired       = "expired"
	TableDropped       = "dropped"
	TableRegistrations = "registrations"
	TableConnections   = "connections"
)

// CommonColumns start every raw table. Writers supply them from Row's own
// fields; Row.Values holds the rest (Table.Columns).
var CommonColumns = []string{"date", "time", "time_ms", "event_id", "uaid", "kafka_partition", "kafka_offset"}

// refColumns describe a message by its MessageRef.
var refColumns = []string{"channel_id", "msg_partition", "msg_offset", "accepted_ms", "vapid_sub", "latency_ms"}

// Table describes one raw table: the topic its events come from and its
// own columns after CommonColumns, in insert order.
type Table struct {
	Name    string
	Topic   string
	Columns []string
}

func withRef(cols ...string) []string {
	return append(append([]string(nil), refColumns...), cols...)
}

var tables = []Table{
	{TableAccepted, schema.TopicMessages, []string{
		"channel_id", "vapid_sub", "vapid_key_hash", "key_bound", "payload_bytes",
		"encoding", "ttl_s", "urgency", "has_topic"}},
	{TableDeleted, schema.TopicMessages, withRef()},
	{TableDelivered, schema.TopicAcks, withRef("node", "conn_id", "attempt")},
	{TableAcked, schema.TopicAcks, withRef("code")},
	{TableNacked, schema.TopicAcks, withRef("code")},
	{TableExpired, schema.TopicAcks, withRef()},
	{TableDropped, schema.TopicAcks, withRef("reason", "reason_code")},
	{TableRegistrations, schema.TopicRegistrations, []string{"action", "channel_id", "key_hash", "code", "reason"}},
	{TableConnections, schema.TopicPresence, []string{
		"action", "node", "conn_id", "link_addr", "since_ms", "user_agent", "duration_ms"}},
}

// Tables returns every raw table.
func Tables() []Table { return append([]Table(nil), tables...) }

// LookupTable returns the raw table called name.
func LookupTable(name string) (Table, bool) {
	for _, t := range tables {
		if t.Name == name {
			return t, true
		}
	}
	return Table{}, false
}

// TablesOf returns the names of the raw tables fed by topic.
func TablesOf(topic string) []string {
	var out []string
	for _, t := range tables {
		if t.Topic == topic {
			out = append(out, t.Name)
		}
	}
	return out
}

// Topics returns the topics the raw tables are fed from.
func Topics() []string {
	return []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations, schema.TopicPresence}
}

var dbName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ErrBadDatabase rejects database names that would need quoting; names are
// spliced into SQL, so only plain identifiers are allowed.
var ErrBadDatabase = errors.New("invalid ClickHouse database name: want letters, digits and _, not starting with a digit")

// ValidateDatabase checks a database name.
func ValidateDatabase(db string) error {
	if !dbName.MatchString(db) {
		return fmt.Errorf("%w: %q", ErrBadDatabase, db)
	}
	return nil
}

// Open connects to ClickHouse at addr (host:port of the native protocol)
// and checks that it answers. db is only validated: it may not exist yet
// (Migrate creates it), and every statement of this package names it.
func Open(ctx context.Context, addr, db string) (driver.Conn, error) {
	if err := ValidateDatabase(db); err != nil {
		return nil, err
	}
	if addr == "" {
		return nil, errors.New("clickhouse: no address given (CLICKHOUSE_ADDR, host:port of the native protocol)")
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.Native,
		DialTimeout: 5 * time.Second,
		// LZ4 is understood by 18.16 and keeps 10,000-row blocks small.
		Compression:     &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("clickhouse %s: ping: %w", addr, err)
	}
	return conn, nil
}
