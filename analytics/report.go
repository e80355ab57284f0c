package analytics

import (
	"context"
	"embed"
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
	SQL   string // with {db}, {since}, {since_date}, {limit}, {sender_filter}, {node_filter}
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
	Sender string        // only this VAPID sub ("" = every sender)
	Node   string        // connections of this node only ("" = every node)
	Limit  int           // rows per table; 0 means DefaultReportLimit
	Now    func() time.Time
}

// Render fills a query's placeholders.
func (q Query) Render(db string, o ReportOptions) (string, error) {
	if err := ValidateDatabase(db); err != nil {
		return "", err
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	var since int64
	if o.Since > 0 {
		since = now().Add(-o.Since).Unix()
		if since < 0 {
			since = 0
		}
	}
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
		// The UTC day, as the projector computes the date column: the
		// server's time zone must not move the partition filter.
		"{since_date}", QuoteString(time.Unix(since, 0).UTC().Format(time.DateOnly)),
		"{limit}", strconv.Itoa(limit),
		"{sender_filter}", senderFilter,
		"{node_filter}", nodeFilter,
	).Replace(q.SQL)
	return sql, nil
}

// Result is a query's answer as text cells.
type Result struct {
	Query   Query
	Columns []string
	Rows    [][]string
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
		for i, d := range dest {
			cells[i] = FormatCell(reflect.ValueOf(d).Elem().Interface())
		}
		res.Rows = append(res.Rows, cells)
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
	qs, err := Queries()
	if err != nil {
		return err
	}
	window := "all time"
	if o.Since > 0 {
		window = "last " + o.Since.String()
	}
	var errs []error
	for i, q := range qs {
		if i > 0 {
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		res, err := RunQuery(ctx, conn, db, q, o)
		if err != nil {
			// One broken query should not hide the others.
			errs = append(errs, err)
			if _, err := fmt.Fprintf(w, "== %s (%s) ==\nerror: %v\n", q.Title, window, err); err != nil {
				return err
			}
			continue
		}
		if err := WriteTable(w, fmt.Sprintf("%s (%s)", q.Title, window), res); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
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
