package main

import "testing"

func TestValidateMinInsync(t *testing.T) {
	runValidateCases(t, []validateCase{
		{"auto", func(c *serveConfig) { c.MinInsync = 0 }, ""},
		{"broker default", func(c *serveConfig) { c.MinInsync = -1 }, ""},
		{"below -1", func(c *serveConfig) { c.MinInsync = -2 }, "--min-insync-replicas"},
		{"above replication", func(c *serveConfig) { c.Replication, c.MinInsync = 2, 3 }, "more than --replication 2"},
		{"equal to replication", func(c *serveConfig) { c.Replication, c.MinInsync = 3, 3 }, ""},
		{"with broker default replication", func(c *serveConfig) { c.MinInsync = 2 }, ""},
	})
}
