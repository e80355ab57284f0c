package main

import (
	"strings"
	"testing"
)

func TestAdvertiseMetrics(t *testing.T) {
	tests := []struct {
		bound, link string
		want        string
		why         string // part of the reason when want is ""
	}{
		{"127.0.0.1:8080", "", "127.0.0.1:8080", ""},
		{"10.0.0.5:9100", "10.0.0.9:7000", "10.0.0.5:9100", ""},
		{"[::1]:8080", "", "[::1]:8080", ""},
		// Wildcards: named by the node-link host others already dial.
		{"0.0.0.0:8080", "node-a.internal:7000", "node-a.internal:8080", ""},
		{"[::]:8080", "10.0.0.9:7000", "10.0.0.9:8080", ""},
		{":8080", "[fd00::1]:7000", "[fd00::1]:8080", ""},
		// ...or not announced, with the reason.
		{"0.0.0.0:8080", "", "", "every interface"},
		{"[::]:8080", "0.0.0.0:7000", "", "every interface"},
		{"not an address", "h:1", "", "not an address"},
	}
	for _, tt := range tests {
		got, why := advertiseMetrics(tt.bound, tt.link)
		if got != tt.want || (tt.want == "") != (why != "") || !strings.Contains(why, tt.why) {
			t.Errorf("advertiseMetrics(%q, %q) = %q, %q; want %q (reason with %q)", tt.bound, tt.link, got, why, tt.want, tt.why)
		}
	}
}
