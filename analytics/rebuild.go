package analytics

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Rebuilding a range of days: every raw table and rollup is partitioned by
// `date` (the event's UTC day), so a day is removed with ALTER TABLE …
// DROP PARTITION, which ClickHouse 18.16 and current versions both run
// instantly and atomically per table (ALTER … DELETE is an asynchronous
// mutation on both, and would leave the rollups' sums behind). The raw
// rows are then inserted again; the materialized views refill the rollups
// from them. Rebuilds therefore work in whole UTC days.

// RollupTables are the tables fed by materialized views, partitioned by
// date like the raw tables.
var RollupTables = []string{"sender_minute"}

// DayTables returns every table holding per-day data: the raw tables of
// the given names plus every rollup.
func DayTables(raw []string) []string {
	return append(append([]string(nil), raw...), RollupTables...)
}

// DayOf returns the day number (days since the epoch, UTC) of t.
func DayOf(t time.Time) int32 { return int32(t.UTC().Unix() / 86400) }

// DayLiteral renders a day as a Date literal ('2006-01-02').
func DayLiteral(day int32) string { return "'" + DayTime(day).Format(time.DateOnly) + "'" }

// DropDays removes the days' partitions of tables. Dropping a partition
// that does not exist is not an error.
func DropDays(ctx context.Context, conn driver.Conn, db string, tables []string, days []int32) error {
	if err := ValidateDatabase(db); err != nil {
		return err
	}
	for _, t := range tables {
		for _, d := range days {
			q := fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %s", db, t, DayLiteral(d))
			if err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("drop %s of %s.%s: %w", DayLiteral(d), db, t, err)
			}
		}
	}
	return nil
}

// CountDays counts a table's rows in days; for rollups pass a sum
// expression such as "sum(accepted)", else "count()".
func CountDays(ctx context.Context, conn driver.Conn, db, table, expr string, days []int32) (uint64, error) {
	if err := ValidateDatabase(db); err != nil {
		return 0, err
	}
	q := fmt.Sprintf("SELECT toUInt64(%s) FROM %s.%s WHERE date IN (%s)", expr, db, table, dayList(days))
	var n uint64
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s.%s: %w", db, table, err)
	}
	return n, nil
}

// RowsBelow counts a raw table's rows in days whose Kafka offset is below
// before[partition]: rows a rebuild could not restore once Kafka has
// deleted those offsets.
func RowsBelow(ctx context.Context, conn driver.Conn, db, table string, days []int32, before map[int32]int64) (uint64, error) {
	if len(before) == 0 {
		return 0, nil
	}
	var conds []string
	for p, o := range before {
		conds = append(conds, fmt.Sprintf("(kafka_partition = %d AND kafka_offset < %d)", p, o))
	}
	q := fmt.Sprintf("SELECT count() FROM %s.%s WHERE date IN (%s) AND (%s)", db, table, dayList(days), strings.Join(conds, " OR "))
	var n uint64
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s.%s: %w", db, table, err)
	}
	return n, nil
}

func dayList(days []int32) string {
	parts := make([]string, len(days))
	for i, d := range days {
		parts[i] = DayLiteral(d)
	}
	return strings.Join(parts, ", ")
}
