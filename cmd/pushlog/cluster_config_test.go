package main

import (
	"strings"
	"testing"
	"time"
)

func TestValidateCluster(t *testing.T) {
	secret := strings.Repeat("s", minLinkSecret)
	tests := []validateCase{
		{"single node", func(*serveConfig) {}, ""},
		{"cluster", func(c *serveConfig) { c.LinkAddr, c.LinkSecret = "10.0.0.1:7000", secret }, ""},
		{"ephemeral port", func(c *serveConfig) { c.LinkAddr, c.LinkSecret = "127.0.0.1:0", secret }, ""},
		{"wildcard with advertise", func(c *serveConfig) {
			c.LinkAddr, c.LinkAdvertise, c.LinkSecret = ":7000", "node1.internal:7000", secret
		}, ""},
		{"no secret", func(c *serveConfig) { c.LinkAddr = "10.0.0.1:7000" }, "--link-secret"},
		{"short secret", func(c *serveConfig) { c.LinkAddr, c.LinkSecret = "10.0.0.1:7000", "short" }, "--link-secret"},
		{"bad addr", func(c *serveConfig) { c.LinkAddr, c.LinkSecret = "7000", secret }, "--link-addr"},
		{"wildcard", func(c *serveConfig) { c.LinkAddr, c.LinkSecret = "0.0.0.0:7000", secret }, "--link-advertise"},
		{"empty host", func(c *serveConfig) { c.LinkAddr, c.LinkSecret = ":7000", secret }, "--link-advertise"},
		{"advertise port 0", func(c *serveConfig) {
			c.LinkAddr, c.LinkAdvertise, c.LinkSecret = "127.0.0.1:0", "127.0.0.1:0", secret
		}, "concrete port"},
		{"advertise alone", func(c *serveConfig) { c.LinkAdvertise = "h:1" }, "needs --link-addr"},
		{"heartbeat", func(c *serveConfig) { c.GroupSessionTimeout, c.GroupHeartbeat = 6*time.Second, 6*time.Second }, "--group-heartbeat"},
		{"negative drain", func(c *serveConfig) { c.DrainTimeout = -time.Second }, "--drain-timeout"},
	}
	runValidateCases(t, tests)
}

func TestValidateClusterDefaults(t *testing.T) {
	c := validConfig(t)
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.GroupSessionTimeout != 10*time.Second || c.GroupHeartbeat != 3*time.Second || c.DrainTimeout != 3*time.Second {
		t.Fatalf("defaults: %s %s %s", c.GroupSessionTimeout, c.GroupHeartbeat, c.DrainTimeout)
	}
}
