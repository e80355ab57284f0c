package analytics

import (
	"bytes"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pushlog/pushlog/schema"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"comments only", "-- a\n  -- b\n", nil},
		{"one without semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"two", "CREATE TABLE a (x Int8);\n\n-- note\nCREATE TABLE b (\n  y Int8\n);\n",
			[]string{"CREATE TABLE a (x Int8)", "CREATE TABLE b (\n  y Int8\n)"}},
		{"semicolon inside a line stays", "SELECT ';' AS s, 1;\nSELECT 2;",
			[]string{"SELECT ';' AS s, 1", "SELECT 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SplitStatements(tt.in); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMigrationsEmbedded(t *testing.T) {
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) < 2 {
		t.Fatalf("want at least 2 migrations, have %d", len(migs))
	}
	for i, m := range migs {
		if m.Version != uint32(i+1) {
			t.Errorf("migration %s has version %d, want %d (no gaps)", m.Name, m.Version, i+1)
		}
		for _, s := range m.Statements {
			// DROP … IF EXISTS is idempotent too (0003 replaces a view).
			drop := strings.HasPrefix(s, "DROP ") && strings.Contains(s, "IF EXISTS")
			if !strings.Contains(s, "IF NOT EXISTS") && !drop {
				t.Errorf("%s: statement is not idempotent: %.60s", m.Name, s)
			}
			if !strings.Contains(s, "{db}.") {
				t.Errorf("%s: statement does not name its database: %.60s", m.Name, s)
			}
		}
	}
}

// The DDL must stay within what Debian's ClickHouse 18.16 understands.
func TestMigrationsAvoidNewerFeatures(t *testing.T) {
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	banned := regexp.MustCompile(`(?i)\b(LowCardinality|DateTime64|TTL|Nullable|JSON|Map\(|CODEC|Bool)\b`)
	for _, m := range migs {
		for _, s := range m.Statements {
			if loc := banned.FindString(s); loc != "" {
				t.Errorf("%s uses %s, which 18.16 lacks: %.80s", m.Name, loc, s)
			}
		}
	}
}

func TestLoadMigrationsRejectsBadFiles(t *testing.T) {
	tests := []struct {
		name  string
		files fstest.MapFS
	}{
		{"no version", fstest.MapFS{"m/raw.sql": {Data: []byte("SELECT 1;")}}},
		{"zero version", fstest.MapFS{"m/0000_x.sql": {Data: []byte("SELECT 1;")}}},
		{"duplicate version", fstest.MapFS{
			"m/0001_a.sql": {Data: []byte("SELECT 1;")},
			"m/001_b.sql":  {Data: []byte("SELECT 1;")},
		}},
		{"empty", fstest.MapFS{"m/0001_a.sql": {Data: []byte("-- nothing\n")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := loadMigrations(tt.files, "m"); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	migs, err := loadMigrations(fstest.MapFS{
		"m/0002_b.sql":   {Data: []byte("SELECT 2;")},
		"m/0001_a.sql":   {Data: []byte("SELECT 1;")},
		"m/README.md":    {Data: []byte("not sql")},
		"m/0010_c.sql":   {Data: []byte("SELECT 10;")},
		"m/sub/0003.sql": {Data: []byte("ignored")},
	}, "m")
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, m := range migs {
		got = append(got, m.Version)
	}
	if !slices.Equal(got, []uint32{1, 2, 10}) {
		t.Fatalf("order %v", got)
	}
}

// ddlColumns extracts "table -> columns" from CREATE TABLE statements.
func ddlColumns(t *testing.T) map[string][]string {
	t.Helper()
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	head := regexp.MustCompile(`^CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \(`)
	col := regexp.MustCompile(`^\s+(\w+) [A-Z]`)
	out := map[string][]string{}
	for _, m := range migs {
		for _, s := range m.Statements {
			lines := strings.Split(s, "\n")
			h := head.FindStringSubmatch(lines[0])
			if h == nil {
				continue
			}
			for _, l := range lines[1:] {
				if c := col.FindStringSubmatch(l); c != nil {
					out[h[1]] = append(out[h[1]], c[1])
				}
			}
		}
	}
	return out
}

// The Go column lists the projector inserts with must match the DDL.
func TestTablesMatchDDL(t *testing.T) {
	ddl := ddlColumns(t)
	for _, tb := range Tables() {
		cols, err := InsertColumns(tb.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cols, ddl[tb.Name]) {
			t.Errorf("%s: Go columns %v\nDDL columns %v", tb.Name, cols, ddl[tb.Name])
		}
	}
	if _, err := InsertColumns("nope"); err == nil {
		t.Error("unknown table accepted")
	}
}

func TestTablesOfTopics(t *testing.T) {
	seen := map[string]bool{}
	for _, topic := range Topics() {
		names := TablesOf(topic)
		if len(names) == 0 {
			t.Errorf("topic %s feeds no table", topic)
		}
		for _, n := range names {
			seen[n] = true
		}
	}
	for _, tb := range Tables() {
		if !seen[tb.Name] {
			t.Errorf("table %s is fed by no consumed topic (%s)", tb.Name, tb.Topic)
		}
	}
	if got := TablesOf(schema.TopicChannels); got != nil {
		t.Errorf("channels topic feeds %v", got)
	}
}

func TestValidateDatabase(t *testing.T) {
	for _, ok := range []string{"pushlog", "_x", "a1_b2", "P"} {
		if err := ValidateDatabase(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1abc", "a-b", "a.b", "a b", "x;DROP", "`x`", strings.Repeat("a", 65)} {
		if err := ValidateDatabase(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRowTime(t *testing.T) {
	tests := []struct {
		ms   int64
		want time.Time
		day  int32
	}{
		{0, time.Unix(0, 0).UTC(), 0},
		{-5000, time.Unix(0, 0).UTC(), 0},
		{1_700_000_000_999, time.Unix(1_700_000_000, 0).UTC(), 19675},
		{math.MaxInt64, time.Unix(maxDateTime, 0).UTC(), int32(maxDateTime / 86400)},
	}
	for _, tt := range tests {
		r := Row{TimeMs: tt.ms}
		if got := r.Time(); !got.Equal(tt.want) {
			t.Errorf("%d: time %v, want %v", tt.ms, got, tt.want)
		}
		if got := r.Day(); got != tt.day {
			t.Errorf("%d: day %d, want %d", tt.ms, got, tt.day)
		}
		if !DayTime(r.Day()).Equal(r.Time().Truncate(24 * time.Hour)) {
			t.Errorf("%d: DayTime %v", tt.ms, DayTime(r.Day()))
		}
	}
}

func TestQuoteString(t *testing.T) {
	tests := map[string]string{
		"":                 `''`,
		"mailto:a@b.c":     `'mailto:a@b.c'`,
		`it's`:             `'it\'s'`,
		`back\slash`:       `'back\\slash'`,
		"nl\nz\x00\t\r":    `'nl\nz\0\t\r'`,
		`\'; DROP TABLE x`: `'\\\'; DROP TABLE x'`,
	}
	for in, want := range tests {
		if got := QuoteString(in); got != want {
			t.Errorf("QuoteString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestPartitionsAbove(t *testing.T) {
	got := partitionsAbove("p", "o", map[int32]int64{3: -1, 0: 12})
	if want := "(p = 0 AND o > 12) OR (p = 3 AND o > -1)"; got != want {
		t.Fatalf("got %s", got)
	}
}

func TestQueriesEmbedded(t *testing.T) {
	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, q := range qs {
		names = append(names, q.Name)
		if q.Title == q.Name {
			t.Errorf("%s has no -- title: line", q.Name)
		}
		sql, err := q.Render("pushlog", ReportOptions{Since: time.Hour, Sender: "mailto:x@y", Node: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(sql, "{}") {
			t.Errorf("%s: placeholder left: %s", q.Name, sql)
		}
	}
	want := []string{"01_delivery_rate", "02_ack_latency", "03_volume_by_sender", "04_expiry_and_drops", "05_connections"}
	if !slices.Equal(names, want) {
		t.Fatalf("queries %v, want %v", names, want)
	}
	if _, err := LookupQuery("ack_latency"); err != nil {
		t.Error(err)
	}
	if _, err := LookupQuery("02_ack_latency"); err != nil {
		t.Error(err)
	}
	if _, err := LookupQuery("nope"); err == nil {
		t.Error("unknown query found")
	}
}

func TestRender(t *testing.T) {
	q := Query{Name: "x", SQL: "SELECT * FROM {db}.t WHERE date >= toDate({since_date}) AND time >= toDateTime({since}) {sender_filter} {node_filter} LIMIT {limit}"}
	now := func() time.Time { return time.Unix(1_700_003_600, 0) }
	tests := []struct {
		name string
		o    ReportOptions
		want string
	}{
		{"defaults", ReportOptions{Now: now},
			"SELECT * FROM db1.t WHERE date >= toDate('1970-01-01') AND time >= toDateTime(0)   LIMIT 20"},
		{"window and filters", ReportOptions{Now: now, Since: time.Hour, Sender: "mailto:o'neil@x", Node: "n1", Limit: 5},
			`SELECT * FROM db1.t WHERE date >= toDate('2023-11-14') AND time >= toDateTime(1700000000) AND vapid_sub = 'mailto:o\'neil@x' AND node = 'n1' LIMIT 5`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := q.Render("db1", tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if _, err := q.Render("bad-db", ReportOptions{}); err == nil {
		t.Fatal("bad database accepted")
	}
}

func TestFormatCell(t *testing.T) {
	s := "x"
	var nilStr *string
	tests := []struct {
		in   any
		want string
	}{
		{nil, "-"}, {"", "-"}, {"abc", "abc"}, {&s, "x"}, {nilStr, "-"},
		{uint64(42), "42"}, {int64(-3), "-3"}, {12.5, "12.5"}, {float32(0.25), "0.25"},
		{math.NaN(), "-"}, {math.Inf(1), "-"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02 03:04:05"},
	}
	for _, tt := range tests {
		if got := FormatCell(tt.in); got != tt.want {
			t.Errorf("FormatCell(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	res := &Result{Columns: []string{"sender", "accepted"}, Rows: [][]string{{"(all)", "1200"}, {"mailto:a@example.com", "7"}}}
	if err := WriteTable(&buf, "Volume", res); err != nil {
		t.Fatal(err)
	}
	want := "== Volume ==\n" +
		"sender                accepted\n" +
		"(all)                 1200\n" +
		"mailto:a@example.com  7\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
	if row, ok := res.Find("mailto:a@example.com"); !ok || row[res.Column("accepted")] != "7" {
		t.Fatalf("Find: %v %v", row, ok)
	}
	if res.Column("nope") != -1 {
		t.Fatal("unknown column found")
	}
	buf.Reset()
	if err := WriteTable(&buf, "Empty", &Result{Columns: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "== Empty ==\n(no rows)\n" {
		t.Fatalf("got %q", buf.String())
	}
}
