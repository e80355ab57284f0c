package main

import (
	"strings"
	"testing"
	"time"
)

func TestAnalyticsReportOptions(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		cmd        analyticsReportCmd
		since      time.Duration
		from, till string
		err        string
	}{
		{"default: last hour", analyticsReportCmd{Since: "1h", Limit: 20}, time.Hour, "", "", ""},
		{"duration with until", analyticsReportCmd{Since: "2h", Until: "1h", Limit: 20}, 0, "2026-12-06T10:00:00Z", "2026-12-06T11:00:00Z", ""},
		{"dates", analyticsReportCmd{Since: "2026-12-01", Until: "2026-12-02", Limit: 20}, 0, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", ""},
		{"RFC 3339 since", analyticsReportCmd{Since: "2026-12-06T11:30:00Z", Limit: 20}, 0, "2026-12-06T11:30:00Z", "", ""},
		{"until not after since", analyticsReportCmd{Since: "1h", Until: "2h", Limit: 20}, 0, "", "", "is not after --since"},
		{"bad since", analyticsReportCmd{Since: "yesterday", Limit: 20}, 0, "", "", "--since"},
		{"bad until", analyticsReportCmd{Since: "1h", Until: "soon", Limit: 20}, 0, "", "", "--until"},
		{"negative since", analyticsReportCmd{Since: "-1h", Limit: 20}, 0, "", "", "must be positive"},
		{"limit", analyticsReportCmd{Since: "1h", Limit: 0}, 0, "", "", "--limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.cmd.options(now)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			from, till := "", ""
			if !o.From.IsZero() {
				from = o.From.UTC().Format(time.RFC3339)
			}
			if !o.Until.IsZero() {
				till = o.Until.UTC().Format(time.RFC3339)
			}
			if o.Since != tt.since || from != tt.from || till != tt.till {
				t.Errorf("since %s from %q until %q, want %s %q %q", o.Since, from, till, tt.since, tt.from, tt.till)
			}
		})
	}
}
