package analytics

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationsTable records which migrations a database has.
const MigrationsTable = "pushlog_migrations"

// Migration is one versioned step of the schema.
type Migration struct {
	Version    uint32
	Name       string   // file name, e.g. "0001_raw_tables.sql"
	Statements []string // with {db} still in place
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	return loadMigrations(migrationFiles, "migrations")
}

func loadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	seen := map[uint32]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		v, err := migrationVersion(e.Name())
		if err != nil {
			return nil, err
		}
		if prev, ok := seen[v]; ok {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		stmts := SplitStatements(string(body))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s has no statements", e.Name())
		}
		out = append(out, Migration{Version: v, Name: e.Name(), Statements: stmts})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// migrationVersion parses the numeric prefix of "0001_name.sql".
func migrationVersion(name string) (uint32, error) {
	prefix, _, ok := strings.Cut(name, "_")
	if !ok {
		return 0, fmt.Errorf("migration %s: want NNNN_name.sql", name)
	}
	v, err := strconv.ParseUint(prefix, 10, 32)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("migration %s: want a positive version prefix", name)
	}
	return uint32(v), nil
}

// SplitStatements splits SQL text into statements at semicolons that end a
// line, dropping "--" comment lines. The migrations and queries are ours,
// so this simple rule (no semicolon inside a string at a line end) holds.
func SplitStatements(sql string) []string {
	var out []string
	var cur []string
	flush := func() {
		s := strings.TrimSpace(strings.Join(cur, "\n"))
		s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
		if s != "" {
			out = append(out, s)
		}
		cur = cur[:0]
	}
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur = append(cur, line)
		if strings.HasSuffix(trimmed, ";") {
			flush()
		}
	}
	flush()
	return out
}

// expand puts the database name into a statement.
func expand(stmt, db string) string { return strings.ReplaceAll(stmt, "{db}", db) }

// Migrate creates db if missing and applies, in version order, every
// embedded migration it has not applied yet, recording each in
// pushlog_migrations. Every statement is idempotent (IF NOT EXISTS), so a
// run interrupted between a migration's statements and its record is
// simply completed by the next run.
func Migrate(ctx context.Context, conn driver.Conn, db string) error {
	migs, err := Migrations()
	if err != nil {
		return err
	}
	return migrate(ctx, conn, db, migs)
}

func migrate(ctx context.Context, conn driver.Conn, db string, migs []Migration) error {
	if err := ValidateDatabase(db); err != nil {
		return err
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	ddl := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s (version UInt32, name String, applied_at DateTime) "+
		"ENGINE = MergeTree() ORDER BY version", db, MigrationsTable)
	if err := conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create %s.%s: %w", db, MigrationsTable, err)
	}
	applied, err := AppliedMigrations(ctx, conn, db)
	if err != nil {
		return err
	}
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		for i, stmt := range m.Statements {
			if err := conn.Exec(ctx, expand(stmt, db)); err != nil {
				return fmt.Errorf("migration %s statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := recordMigration(ctx, conn, db, m); err != nil {
			return err
		}
	}
	return nil
}

func recordMigration(ctx context.Context, conn driver.Conn, db string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.%s (version, name, applied_at)", db, MigrationsTable))
	if err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	if err := b.Append(m.Version, m.Name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("record migration %s: %w", m.Name, err)
	}
	return nil
}

// AppliedMigrations returns the versions recorded in db.
func AppliedMigrations(ctx context.Context, conn driver.Conn, db string) (map[uint32]bool, error) {
	if err := ValidateDatabase(db); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT DISTINCT version FROM %s.%s", db, MigrationsTable))
	if err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", db, MigrationsTable, err)
	}
	defer rows.Close()
	out := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s.%s: %w", db, MigrationsTable, err)
		}
		out[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", db, MigrationsTable, err)
	}
	return out, nil
}
