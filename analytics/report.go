package analytics

import (
	"context"
	"embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed queries/*.sql
var queryFiles embed.FS

// DefaultReportLimit is how many rows each report table shows by default.
const DefaultReportLimit = 20

// Query is one named dashboard query from analytics/queries.
type Query struct {
	Name  string // file name without .sql, e.g. "01_delivery_rate"
	Title string // from its "-- title:" line
	SQL   string // with {db}, {since}, {since_date}, {until}, {until_date}, {limit}, {sender_filter}, {node_filter}
}

// Queries returns the dashboard queries in file order.
func Queries() ([]Query, error) {
	entries, err := fs.ReadDir(queryFiles, "queries")
	if err != nil {
		return nil, fmt.Errorf("read queries: %w", err)
	}
	var out []Query
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		body, err := fs.ReadFile(queryFiles, path.Join("queries", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read query %s: %w", e.Name(), err)
		}
		q, err := parseQuery(strings.TrimSuffix(e.Name(), ".sql"), string(body))
		if err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func parseQuery(name, body string) (Query, error) {
	q := Query{Name: name, Title: name}
	for _, line := range strings.Split(body, "\n") {
		if t, ok := strings.CutPrefix(strings.TrimSpace(line), "-- title:"); ok {
			q.Title = strings.TrimSpace(t)
			break
		}
	}
	stmts := SplitStatements(body)
	if len(stmts) != 1 {
		return Query{}, fmt.Errorf("query %s: want exactly one statement, have %d", name, len(stmts))
	}
	q.SQL = stmts[0]
	return q, nil
}

// LookupQuery returns the query called name ("01_delivery_rate" or
// "delivery_rate").
func LookupQuery(name string) (Query, error) {
	qs, err := Queries()
	if err != nil {
		return Query{}, err
	}
	for _, q := range qs {
		_, short, _ := strings.Cut(q.Name, "_")
		if q.Name == name || short == name {
			return q, nil
		}
	}
	return Query{}, fmt.Errorf("no analytics query %q", name)
}

// ReportOptions select what a report covers.
type ReportOptions struct {
	Since  time.Duration // window ending now; 0 or less means everything
	From   time.Time     // start of the window; when set it replaces Since
	Until  time.Time     // end of the window (exclusive); zero: no end
	Sender string        // only this VAPID sub ("" = every sender)
	Node   string        // connections of this node only ("" = every node)
	Limit  int           // rows per table; 0 means DefaultReportLimit
	Now    func() time.Time
}

// window returns the report window in Unix seconds: [since, until).
func (o ReportOptions) window() (since, until int64) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	switch {
	case !o.From.IsZero():
		since = o.From.Unix()
	case o.Since > 0:
		since = now().Add(-o.Since).Unix()
	}
	until = windowEnd // no end
	if !o.Until.IsZero() {
		// Rounded up: the rollup is per minute and the raw filters compare
		// whole seconds, so a sub-second end keeps its last second.
		until = o.Until.Add(time.Second - 1).Unix()
	}
	return max(since, 0), min(max(until, 0), windowEnd)
}

// windowEnd (2100-01-01 UTC) ends a window without --until: ClickHouse
// 18.16 parses no Date past 2105 (toDate('2106-02-07') is 0000-00-00,
// which would filter out everything), so the largest DateTime is no use.
const windowEnd = 4102444800

// describe names the window for a report's titles.
func (o ReportOptions) describe() string {
	switch {
	case o.From.IsZero() && o.Since <= 0 && o.Until.IsZero():
		return "all time"
	case o.Until.IsZero() && o.From.IsZero():
		return "last " + o.Since.String()
	}
	since, until := o.window()
	from := time.Unix(since, 0).UTC().Format(time.RFC3339)
	if o.Until.IsZero() {
		return "since " + from
	}
	return from + " to " + time.Unix(until, 0).UTC().Format(time.RFC3339)
}

// Render fills a query's placeholders.
func (q Query) Render(db string, o ReportOptions) (string, error) {
	if err := ValidateDatabase(db); err != nil {
		return "", err
	}
	since, until := o.window()
	limit := o.Limit
	if limit <= 0 {
		limit = DefaultReportLimit
	}
	senderFilter, nodeFilter := "", ""
	if o.Sender != "" {
		senderFilter = "AND vapid_sub = " + QuoteString(o.Sender)
	}
	if o.Node != "" {
		nodeFilter = "AND node = " + QuoteString(o.Node)
	}
	sql := strings.NewReplacer(
		"{db}", db,
		"{since}", strconv.FormatInt(since, 10),
		"{until}", strconv.FormatInt(until, 10),
		// The UTC day, as the projector computes the date column: the
		// server's time zone must not move the partition filter.
		"{since_date}", QuoteString(time.Unix(since, 0).UTC().Format(time.DateOnly)),
		"{until_date}", QuoteString(time.Unix(until, 0).UTC().Format(time.DateOnly)),
		"{limit}", strconv.Itoa(limit),
		"{sender_filter}", senderFilter,
		"{node_filter}", nodeFilter,
	).Replace(q.SQL)
	return sql, nil
}

// Result is a query's answer as text cells (and the scanned values).
type Result struct {
	Query   Query
	Columns []string
	Rows    [][]string
	Values  [][]any
}

// Column returns the index of a column, or -1.
func (r *Result) Column(name string) int {
	for i, c := range r.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

// Find returns the first row whose first column is key.
func (r *Result) Find(key string) ([]string, bool) {
	for _, row := range r.Rows {
		if len(row) > 0 && row[0] == key {
			return row, true
		}
	}
	return nil, false
}

// RunQuery runs one dashboard query and returns its cells as text.
func RunQuery(ctx context.Context, conn driver.Conn, db string, q Query, o ReportOptions) (*Result, error) {
	sql, err := q.Render(db, o)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", q.Name, err)
	}
	defer rows.Close()
	res := &Result{Query: q, Columns: rows.Columns()}
	types := rows.ColumnTypes()
	for rows.Next() {
		dest := make([]any, len(types))
		for i, t := range types {
			dest[i] = reflect.New(t.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("query %s: %w", q.Name, err)
		}
		cells := make([]string, len(dest))
		values := make([]any, len(dest))
		for i, d := range dest {
			values[i] = reflect.ValueOf(d).Elem().Interface()
			cells[i] = FormatCell(values[i])
		}
		res.Rows = append(res.Rows, cells)
		res.Values = append(res.Values, values)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query %s: %w", q.Name, err)
	}
	return res, nil
}

// FormatCell renders one value for a report table.
func FormatCell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case float64:
		return formatFloat(x)
	case float32:
		return formatFloat(float64(x))
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05")
	case *string:
		if x == nil {
			return "-"
		}
		return FormatCell(*x)
	}
	return fmt.Sprint(v)
}

func formatFloat(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "-"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// Report runs every dashboard query over the last since (0: all data) and
// prints them as aligned tables.
func Report(ctx context.Context, conn driver.Conn, db string, since time.Duration, w io.Writer) error {
	return ReportWith(ctx, conn, db, ReportOptions{Since: since}, w)
}

// ReportWith is Report with a sender or node filter and a row limit.
func ReportWith(ctx context.Context, conn driver.Conn, db string, o ReportOptions, w io.Writer) error {
	return WriteReport(ctx, conn, db, o, FormatTable, nil, w)
}

// Report formats.
const (
	FormatTable = "table" // aligned columns under a title per query
	FormatJSON  = "json"  // one object: the window and every query's columns and rows
	FormatCSV   = "csv"   // per query a header row and its rows, the query's name first; a blank line between
)

// ErrNotMigrated means the database lacks the tables the queries read.
var ErrNotMigrated = errors.New("analytics database not migrated")

// CheckMigrated returns ErrNotMigrated, with what to run, when db does not
// exist or lacks a migration; without it every query fails with the same
// "database doesn't exist".
func CheckMigrated(ctx context.Context, conn driver.Conn, db string) error {
	if err := ValidateDatabase(db); err != nil {
		return err
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT toUInt64(count()) FROM system.databases WHERE name = "+QuoteString(db)).Scan(&n); err != nil {
		return fmt.Errorf("look for database %s: %w", db, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: ClickHouse has no database %s; run `pushlog analytics migrate` (serve's analytics projector also migrates when it starts)", ErrNotMigrated, db)
	}
	applied, err := AppliedMigrations(ctx, conn, db)
	if err != nil {
		return fmt.Errorf("%w: database %s has no migration records (%v); run `pushlog analytics migrate`", ErrNotMigrated, db, err)
	}
	migs, err := Migrations()
	if err != nil {
		return err
	}
	var missing []string
	for _, m := range migs {
		if !applied[m.Version] {
			missing = append(missing, m.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: database %s lacks %s; run `pushlog analytics migrate`", ErrNotMigrated, db, strings.Join(missing, ", "))
	}
	return nil
}

// SelectQueries returns the dashboard queries called names (all when
// empty), in file order.
func SelectQueries(names []string) ([]Query, error) {
	qs, err := Queries()
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return qs, nil
	}
	var out []Query
	for _, n := range names {
		q, err := LookupQuery(n)
		if err != nil {
			var all []string
			for _, q := range qs {
				all = append(all, q.Name)
			}
			return nil, fmt.Errorf("%w (have %s)", err, strings.Join(all, ", "))
		}
		out = append(out, q)
	}
	return out, nil
}

// WriteReport checks that db is migrated, runs the queries called names
// (every one when empty) and writes them in format.
func WriteReport(ctx context.Context, conn driver.Conn, db string, o ReportOptions, format string, names []string, w io.Writer) error {
	if format != FormatTable && format != FormatJSON && format != FormatCSV {
		return fmt.Errorf("report format %q: want table, json or csv", format)
	}
	qs, err := SelectQueries(names)
	if err != nil {
		return err
	}
	if err := CheckMigrated(ctx, conn, db); err != nil {
		return err
	}
	results := make([]*Result, len(qs))
	errs := make([]error, len(qs))
	for i, q := range qs {
		// One broken query should not hide the others.
		results[i], errs[i] = RunQuery(ctx, conn, db, q, o)
	}
	switch format {
	case FormatJSON:
		err = writeJSONReport(w, o, qs, results, errs)
	case FormatCSV:
		err = writeCSVReport(w, qs, results, errs)
	default:
		err = writeTableReport(w, o, qs, results, errs)
	}
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

func writeTableReport(w io.Writer, o ReportOptions, qs []Query, results []*Result, errs []error) error {
	window := o.describe()
	for i, q := range qs {
		if i > 0 {
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		if errs[i] != nil {
			if _, err := fmt.Fprintf(w, "== %s (%s) ==\nerror: %v\n", q.Title, window, errs[i]); err != nil {
				return err
			}
			continue
		}
		if err := WriteTable(w, fmt.Sprintf("%s (%s)", q.Title, window), results[i]); err != nil {
			return err
		}
	}
	return nil
}

// jsonReport is the --format json document.
type jsonReport struct {
	Since   *time.Time    `json:"since"` // null: all data
	Until   *time.Time    `json:"until"` // null: no end
	Reports []jsonQueryAt `json:"reports"`
}

type jsonQueryAt struct {
	Name    string           `json:"name"`
	Title   string           `json:"title"`
	Columns []string         `json:"columns,omitempty"`
	Rows    []map[string]any `json:"rows"`
	Error   string           `json:"error,omitempty"`
}

func writeJSONReport(w io.Writer, o ReportOptions, qs []Query, results []*Result, errs []error) error {
	since, until := o.window()
	doc := jsonReport{Reports: []jsonQueryAt{}}
	if since > 0 {
		t := time.Unix(since, 0).UTC()
		doc.Since = &t
	}
	if until < windowEnd {
		t := time.Unix(until, 0).UTC()
		doc.Until = &t
	}
	for i, q := range qs {
		_, short, _ := strings.Cut(q.Name, "_")
		r := jsonQueryAt{Name: short, Title: q.Title, Rows: []map[string]any{}}
		if errs[i] != nil {
			r.Error = errs[i].Error()
		} else {
			r.Columns = results[i].Columns
			for _, row := range results[i].Values {
				obj := make(map[string]any, len(row))
				for j, v := range row {
					obj[results[i].Columns[j]] = jsonValue(v)
				}
				r.Rows = append(r.Rows, obj)
			}
		}
		doc.Reports = append(doc.Reports, r)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// jsonValue makes a scanned value encodable: NaN and infinities (an
// average of nothing) become null, times UTC.
func jsonValue(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
	case time.Time:
		return x.UTC()
	case *string:
		if x == nil {
			return nil
		}
		return *x
	}
	return v
}

func writeCSVReport(w io.Writer, qs []Query, results []*Result, errs []error) error {
	cw := csv.NewWriter(w)
	for i, q := range qs {
		_, short, _ := strings.Cut(q.Name, "_")
		if i > 0 {
			cw.Flush()
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		if errs[i] != nil {
			if err := cw.Write([]string{"report", "error"}); err != nil {
				return err
			}
			if err := cw.Write([]string{short, errs[i].Error()}); err != nil {
				return err
			}
			continue
		}
		if err := cw.Write(append([]string{"report"}, results[i].Columns...)); err != nil {
			return err
		}
		for _, row := range results[i].Rows {
			if err := cw.Write(append([]string{short}, row...)); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteTable prints a result under a title with aligned columns.
func WriteTable(w io.Writer, title string, res *Result) error {
	if _, err := fmt.Fprintf(w, "== %s ==\n", title); err != nil {
		return err
	}
	if len(res.Rows) == 0 {
		_, err := fmt.Fprintln(w, "(no rows)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(res.Columns, "\t"))
	for _, row := range res.Rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}
