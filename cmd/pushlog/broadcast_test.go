package main

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestValidateBroadcasts(t *testing.T) {
	runValidateCases(t, []validateCase{
		{"admin token", func(c *serveConfig) { c.AdminToken = "0123456789abcdef" }, ""},
		{"short admin token", func(c *serveConfig) { c.AdminToken = "short" }, "--admin-token: at least 16 bytes"},
		{"megaphone", func(c *serveConfig) {
			c.MegaphoneURL, c.MegaphoneInterval = "https://megaphone.example/v1/broadcasts", 30*time.Second
		}, ""},
		{"megaphone url", func(c *serveConfig) { c.MegaphoneURL, c.MegaphoneInterval = "megaphone:8080", 30*time.Second }, "--megaphone-url"},
		{"megaphone interval", func(c *serveConfig) { c.MegaphoneURL = "http://127.0.0.1:1/" }, "--megaphone-interval: 0s is below 100ms"},
		{"seed", func(c *serveConfig) { c.Broadcasts = map[string]string{"remote-settings/monitor_changes": `"1"`} }, ""},
		{"seed reserved id", func(c *serveConfig) { c.Broadcasts = map[string]string{"errors": "1"} }, `--broadcasts: invalid broadcast: id "errors" is reserved`},
		{"seed bad version", func(c *serveConfig) { c.Broadcasts = map[string]string{"a": "x y"} }, "--broadcasts: a: invalid broadcast"},
	})
}

func TestParseBroadcastArgs(t *testing.T) {
	tests := []struct {
		args    []string
		want    map[string]string
		wantErr string
	}{
		{[]string{"remote-settings/monitor_changes=\"42\"", "b=v1"}, map[string]string{"remote-settings/monitor_changes": `"42"`, "b": "v1"}, ""},
		{[]string{"b=v=1"}, map[string]string{"b": "v=1"}, ""},
		{[]string{"b"}, nil, "want ID=VERSION"},
		{[]string{"=v"}, nil, "id must be"},
		{[]string{"b="}, nil, "version must be"},
		{[]string{"a b=1"}, nil, "want segments"},
	}
	for _, tc := range tests {
		got, err := parseBroadcastArgs(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%q: %v %v", tc.args, got, err)
		}
	}
}
