package main

import (
	"io"
	"strings"
	"testing"
)

// TestParseErrorLine: a command line that does not parse prints one line
// naming the error and the help to read, not the whole help.
func TestParseErrorLine(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--foo"}, "pushlog: unknown flag --foo (see pushlog serve --help)"},
		{[]string{"analytics", "report", "--bar"}, "pushlog: unknown flag --bar (see pushlog analytics report --help)"},
		{[]string{"nosuch"}, "(see pushlog --help)"},
		{[]string{}, "(see pushlog --help)"},
		{[]string{"health"}, "(see pushlog health --help)"},
		{[]string{"analytics", "report", "--format", "xml"}, "(see pushlog analytics report --help)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var c cli
			p, err := newParser(&c, io.Discard, io.Discard, func(int) {})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Parse(tt.args)
			if err == nil {
				t.Fatal("parsed")
			}
			line := parseErrorLine(err)
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "pushlog: ") || !strings.Contains(line, tt.want) {
				t.Errorf("got %q, want one line with %q", line, tt.want)
			}
		})
	}
}

// TestOpsCommandsNeedNoBrokerFlag: status, topics, replay and the
// analytics commands parse without --kafka-brokers / --clickhouse-addr
// (they find a running serve at run time).
func TestOpsCommandsNeedNoBrokerFlag(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("CLICKHOUSE_ADDR", "")
	for _, args := range [][]string{
		{"status"}, {"topics"}, {"replay", "--since", "1h"}, {"analytics", "report"}, {"analytics", "migrate"},
		{"analytics", "rebuild", "--since", "1d"}, {"analytics", "report", "--addr", "h:9000", "--database", "x"},
	} {
		var c cli
		p, err := newParser(&c, io.Discard, io.Discard, func(int) {})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(args); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
