package analytics

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Row is one raw-table row: the columns every raw table shares, taken from
// the event and its Kafka record, plus Values in Table.Columns order.
type Row struct {
	Table     string
	TimeMs    int64  // event time (unix ms); time_ms stores it as is
	EventID   []byte // stored as hex
	UAID      string
	Partition int32 // Kafka partition of the event's record
	Offset    int64 // Kafka offset of the event's record
	Values    []any
}

// maxDateTime is the last second a ClickHouse DateTime (UInt32) holds.
const maxDateTime = 1<<32 - 1

// Time returns the event time clamped to what DateTime can hold, so an
// event with a missing or absurd time still has a row (time_ms keeps the
// original).
func (r *Row) Time() time.Time {
	s := r.TimeMs / 1000
	if r.TimeMs < 0 {
		s = 0
	}
	if s > maxDateTime {
		s = maxDateTime
	}
	return time.Unix(s, 0).UTC()
}

// Day returns the row's partition day: days since the Unix epoch in UTC.
func (r *Row) Day() int32 { return int32(r.Time().Unix() / 86400) }

// DayTime returns midnight UTC of a day number.
func DayTime(day int32) time.Time { return time.Unix(int64(day)*86400, 0).UTC() }

// InsertColumns returns every column of a raw table in insert order.
func InsertColumns(table string) ([]string, error) {
	t, ok := LookupTable(table)
	if !ok {
		return nil, fmt.Errorf("unknown analytics table %q", table)
	}
	return append(append([]string(nil), CommonColumns...), t.Columns...), nil
}

// InsertRows writes rows into one raw table as a single INSERT, which is
// one native block. ClickHouse stores a block that falls into one
// partition (one day) atomically, which is what the projector's
// exactly-once resume relies on: callers group rows by Row.Day.
//
// The INSERT carries a query id starting with InsertQueryPrefix(db), so
// WaitForInserts can tell when no such insert is still running.
func InsertRows(ctx context.Context, conn driver.Conn, db, table string, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	cols, err := InsertColumns(table)
	if err != nil {
		return err
	}
	query := fmt.Sprintf("INSERT INTO %s.%s (%s)", db, table, strings.Join(cols, ", "))
	ctx = clickhouse.Context(ctx, clickhouse.WithQueryID(InsertQueryPrefix(db)+newQuerySuffix()))
	b, err := conn.PrepareBatch(ctx, query)
	if err != nil {
		return fmt.Errorf("insert into %s.%s: prepare: %w", db, table, err)
	}
	for i := range rows {
		r := &rows[i]
		if r.Table != table {
			_ = b.Abort()
			return fmt.Errorf("insert into %s.%s: row for table %q", db, table, r.Table)
		}
		if len(CommonColumns)+len(r.Values) != len(cols) {
			_ = b.Abort()
			return fmt.Errorf("insert into %s.%s: row has %d values, want %d", db, table, len(r.Values), len(cols)-len(CommonColumns))
		}
	}
	columns, err := insertColumns(rows)
	if err != nil {
		_ = b.Abort()
		return fmt.Errorf("insert into %s.%s: %w", db, table, err)
	}
	// Whole columns at once: appending row by row boxed every value and
	// had the driver switch on its type, a fifth of the insert's CPU.
	for i, c := range columns {
		if err := b.Column(i).Append(c); err != nil {
			_ = b.Abort()
			return fmt.Errorf("insert into %s.%s: column %s: %w", db, table, cols[i], err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert into %s.%s: %w", db, table, err)
	}
	return nil
}

// insertColumns turns rows of one table into typed columns in insert
// order: CommonColumns, then Values.
func insertColumns(rows []Row) ([]any, error) {
	n := len(rows)
	var (
		dates, times = make([]time.Time, n), make([]time.Time, n)
		ms, offsets  = make([]int64, n), make([]int64, n)
		ids, uaids   = make([]string, n), make([]string, n)
		partitions   = make([]int32, n)
	)
	for i := range rows {
		r := &rows[i]
		t := r.Time()
		dates[i] = DayTime(int32(t.Unix() / 86400))
		times[i] = t
		ms[i] = r.TimeMs
		ids[i] = hex.EncodeToString(r.EventID)
		uaids[i] = r.UAID
		partitions[i] = r.Partition
		offsets[i] = r.Offset
	}
	out := []any{dates, times, ms, ids, uaids, partitions, offsets}
	for j := range rows[0].Values {
		c, err := valueColumn(rows, j)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// valueColumn is column j of the rows' Values as a typed slice; every row
// must have the first row's type there.
func valueColumn(rows []Row, j int) (any, error) {
	switch rows[0].Values[j].(type) {
	case string:
		return typedColumn[string](rows, j)
	case int32:
		return typedColumn[int32](rows, j)
	case int64:
		return typedColumn[int64](rows, j)
	case uint8:
		return typedColumn[uint8](rows, j)
	case uint32:
		return typedColumn[uint32](rows, j)
	default:
		return nil, fmt.Errorf("value %d has unsupported type %T", j, rows[0].Values[j])
	}
}

func typedColumn[T any](rows []Row, j int) ([]T, error) {
	out := make([]T, len(rows))
	for i := range rows {
		v, ok := rows[i].Values[j].(T)
		if !ok {
			return nil, fmt.Errorf("row at %d/%d: value %d is %T, want %T", rows[i].Partition, rows[i].Offset, j, rows[i].Values[j], v)
		}
		out[i] = v
	}
	return out, nil
}

// InsertQueryPrefix starts the query id of every InsertRows into db.
func InsertQueryPrefix(db string) string { return "pushlog-analytics-" + db + "-" }

func newQuerySuffix() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WaitForInserts returns once every InsertRows into db that ClickHouse is
// running now has finished. An insert whose client went away (a timeout, a
// killed process) can still be stored afterwards; reading what is stored
// before that would make the insert look lost and have it repeated, so
// the projector waits here before it reads stored offsets. Inserts that
// start later are not waited for.
func WaitForInserts(ctx context.Context, conn driver.Conn, db string) error {
	running, err := runningInserts(ctx, conn, db)
	if err != nil {
		return err
	}
	for len(running) > 0 {
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		now, err := runningInserts(ctx, conn, db)
		if err != nil {
			return err
		}
		for id := range running {
			if !now[id] {
				delete(running, id)
			}
		}
	}
	return nil
}

func runningInserts(ctx context.Context, conn driver.Conn, db string) (map[string]bool, error) {
	// LIKE treats "_" in a database name as a wildcard: at worst another
	// database's inserts are waited for too.
	rows, err := conn.Query(ctx, "SELECT query_id FROM system.processes WHERE query_id LIKE "+QuoteString(InsertQueryPrefix(db)+"%"))
	if err != nil {
		return nil, fmt.Errorf("running inserts: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("running inserts: %w", err)
		}
		out[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("running inserts: %w", err)
	}
	return out, nil
}

// StoredKey is one Kafka partition's rows of one day in a raw table.
type StoredKey struct {
	Partition int32
	Day       int32
}

// MaxStoredOffsets returns, per (partition, day), the largest Kafka offset
// stored in table among rows above after[partition]; partitions missing
// from after are not read. The raw tables are ordered by (kafka_partition,
// kafka_offset), so this reads the primary index's neighbourhood only.
func MaxStoredOffsets(ctx context.Context, conn driver.Conn, db, table string, after map[int32]int64) (map[StoredKey]int64, error) {
	out := map[StoredKey]int64{}
	if len(after) == 0 {
		return out, nil
	}
	query := fmt.Sprintf("SELECT kafka_partition, date, max(kafka_offset) FROM %s.%s WHERE %s GROUP BY kafka_partition, date",
		db, table, partitionsAbove("kafka_partition", "kafka_offset", after))
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("stored offsets of %s.%s: %w", db, table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			p   int32
			day time.Time
			off int64
		)
		if err := rows.Scan(&p, &day, &off); err != nil {
			return nil, fmt.Errorf("stored offsets of %s.%s: %w", db, table, err)
		}
		out[StoredKey{Partition: p, Day: int32(day.Unix() / 86400)}] = off
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stored offsets of %s.%s: %w", db, table, err)
	}
	return out, nil
}

// partitionsAbove renders "(p = 0 AND o > 12) OR (p = 3 AND o > -1)" in a
// stable order.
func partitionsAbove(pcol, ocol string, after map[int32]int64) string {
	parts := make([]int32, 0, len(after))
	for p := range after {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	conds := make([]string, len(parts))
	for i, p := range parts {
		conds[i] = fmt.Sprintf("(%s = %d AND %s > %d)", pcol, p, ocol, after[p])
	}
	return strings.Join(conds, " OR ")
}

// ProgressTable is where the projector records how far it has projected.
const ProgressTable = "kafka_progress"

// Progress returns, per partition of topic, the offset of the last record
// fully projected into db; partitions never projected are absent.
func Progress(ctx context.Context, conn driver.Conn, db, topic string, partitions []int32) (map[int32]int64, error) {
	out := map[int32]int64{}
	if len(partitions) == 0 {
		return out, nil
	}
	list := make([]string, len(partitions))
	for i, p := range partitions {
		list[i] = strconv.Itoa(int(p))
	}
	query := fmt.Sprintf("SELECT partition, max(offset) FROM %s.%s WHERE topic = %s AND partition IN (%s) GROUP BY partition",
		db, ProgressTable, QuoteString(topic), strings.Join(list, ", "))
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", db, ProgressTable, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			p   int32
			off int64
		)
		if err := rows.Scan(&p, &off); err != nil {
			return nil, fmt.Errorf("read %s.%s: %w", db, ProgressTable, err)
		}
		out[p] = off
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", db, ProgressTable, err)
	}
	return out, nil
}

// SaveProgress records topic → partition → offset of the last record fully
// projected. Writing the same or an older offset again is harmless: readers
// take the maximum.
func SaveProgress(ctx context.Context, conn driver.Conn, db string, offsets map[string]map[int32]int64) error {
	n := 0
	for _, ps := range offsets {
		n += len(ps)
	}
	if n == 0 {
		return nil
	}
	b, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (topic, partition, offset, time)", db, ProgressTable))
	if err != nil {
		return fmt.Errorf("save progress: prepare: %w", err)
	}
	now := time.Now().UTC()
	for topic, ps := range offsets {
		for p, off := range ps {
			if err := b.Append(topic, p, off, now); err != nil {
				_ = b.Abort()
				return fmt.Errorf("save progress: %w", err)
			}
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("save progress: %w", err)
	}
	return nil
}

// QuoteString renders s as a ClickHouse string literal.
func QuoteString(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) + 2)
	sb.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '\'':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case 0:
			sb.WriteString(`\0`)
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('\'')
	return sb.String()
}
