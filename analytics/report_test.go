package analytics

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestReportWindow(t *testing.T) {
	now := func() time.Time { return time.Unix(1_700_003_600, 0) }
	q := Query{Name: "x", SQL: "{since} {until} {since_date} {until_date}"}
	tests := []struct {
		name     string
		o        ReportOptions
		want     string
		describe string
	}{
		{"everything", ReportOptions{Now: now}, "0 4102444800 '1970-01-01' '2100-01-01'", "all time"},
		{"last hour", ReportOptions{Now: now, Since: time.Hour}, "1700000000 4102444800 '2023-11-14' '2100-01-01'", "last 1h0m0s"},
		{"from a time", ReportOptions{Now: now, From: time.Unix(1_699_990_000, 0)}, "1699990000 4102444800 '2023-11-14' '2100-01-01'", "since 2023-11-14T19:26:40Z"},
		{"from and until", ReportOptions{Now: now, From: time.Unix(1_699_990_000, 0), Until: time.Unix(1_700_000_000, 0)},
			"1699990000 1700000000 '2023-11-14' '2023-11-14'", "2023-11-14T19:26:40Z to 2023-11-14T22:13:20Z"},
		{"a sub-second end keeps its second", ReportOptions{Now: now, Since: time.Hour, Until: time.Unix(1_700_000_000, 1)},
			"1700000000 1700000001 '2023-11-14' '2023-11-14'", "2023-11-14T22:13:20Z to 2023-11-14T22:13:21Z"},
		{"until before the epoch", ReportOptions{Now: now, Until: time.Unix(-5, 0)}, "0 0 '1970-01-01' '1970-01-01'", "1970-01-01T00:00:00Z to 1970-01-01T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := q.Render("db", tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("rendered %q, want %q", got, tt.want)
			}
			if d := tt.o.describe(); d != tt.describe {
				t.Errorf("describe %q, want %q", d, tt.describe)
			}
		})
	}
}

func TestSelectQueries(t *testing.T) {
	all, err := SelectQueries(nil)
	if err != nil || len(all) != 5 {
		t.Fatalf("%d queries, %v", len(all), err)
	}
	two, err := SelectQueries([]string{"connections", "01_delivery_rate"})
	if err != nil || len(two) != 2 || two[0].Name != "05_connections" || two[1].Name != "01_delivery_rate" {
		t.Fatalf("%+v, %v", two, err)
	}
	if _, err := SelectQueries([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "have 01_delivery_rate") {
		t.Errorf("unknown query: %v", err)
	}
}

// reportFixture is two queries' answers, the second failed.
func reportFixture() ([]Query, []*Result, []error) {
	qs := []Query{{Name: "01_delivery_rate", Title: "Delivery rate"}, {Name: "02_ack_latency", Title: "Ack latency"}}
	res := &Result{
		Columns: []string{"sender", "accepted", "avg_ms", "first"},
		Rows:    [][]string{{"mailto:a@x", "3", "-", "2026-01-02 03:04:05"}, {"a,\"b\"", "1", "1.5", "-"}},
		Values: [][]any{
			{"mailto:a@x", uint64(3), math.NaN(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))},
			{"a,\"b\"", uint64(1), 1.5, nil},
		},
	}
	return qs, []*Result{res, nil}, []error{nil, errors.New("query 02_ack_latency: boom")}
}

func TestWriteJSONReport(t *testing.T) {
	qs, results, errs := reportFixture()
	var buf bytes.Buffer
	o := ReportOptions{From: time.Unix(1_700_000_000, 0), Until: time.Unix(1_700_003_600, 0)}
	if err := writeJSONReport(&buf, o, qs, results, errs); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Since, Until *time.Time
		Reports      []struct {
			Name, Title, Error string
			Columns            []string
			Rows               []map[string]any
		}
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if doc.Since == nil || doc.Since.Unix() != 1_700_000_000 || doc.Until == nil || doc.Until.Unix() != 1_700_003_600 {
		t.Errorf("window %v %v", doc.Since, doc.Until)
	}
	if len(doc.Reports) != 2 || doc.Reports[0].Name != "delivery_rate" || doc.Reports[1].Error == "" || len(doc.Reports[1].Rows) != 0 {
		t.Fatalf("reports %+v", doc.Reports)
	}
	r0 := doc.Reports[0].Rows[0]
	if r0["accepted"] != float64(3) || r0["avg_ms"] != nil || r0["first"] != "2026-01-02T02:04:05Z" || r0["sender"] != "mailto:a@x" {
		t.Errorf("row %v", r0)
	}
	buf.Reset()
	if err := writeJSONReport(&buf, ReportOptions{}, qs, results, errs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"since": null`) || !strings.Contains(buf.String(), `"until": null`) {
		t.Errorf("open window: %s", buf.String())
	}
}

func TestWriteCSVReport(t *testing.T) {
	qs, results, errs := reportFixture()
	var buf bytes.Buffer
	if err := writeCSVReport(&buf, qs, results, errs); err != nil {
		t.Fatal(err)
	}
	want := "report,sender,accepted,avg_ms,first\n" +
		"delivery_rate,mailto:a@x,3,-,2026-01-02 03:04:05\n" +
		"delivery_rate,\"a,\"\"b\"\"\",1,1.5,-\n" +
		"\n" +
		"report,error\n" +
		"ack_latency,query 02_ack_latency: boom\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestWriteTableReport(t *testing.T) {
	qs, results, errs := reportFixture()
	var buf bytes.Buffer
	if err := writeTableReport(&buf, ReportOptions{Since: time.Hour}, qs, results, errs); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"== Delivery rate (last 1h0m0s) ==", "mailto:a@x", "== Ack latency (last 1h0m0s) ==\nerror: query 02_ack_latency: boom"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("lacks %q:\n%s", s, buf.String())
		}
	}
}

func TestWriteReportRefusesBadFormat(t *testing.T) {
	if err := WriteReport(t.Context(), nil, "db", ReportOptions{}, "xml", nil, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "want table, json or csv") {
		t.Errorf("err %v", err)
	}
}
