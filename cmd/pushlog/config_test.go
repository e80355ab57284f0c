package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validConfig(t *testing.T) serveConfig {
	t.Helper()
	return serveConfig{
		Roles: []string{"ingest", "connector", "projector"}, DataDir: t.TempDir(),
		EmbeddedAddr: "127.0.0.1:0", Namespace: "pushlog", Partitions: 12, Replication: -1, ProduceTimeout: 5 * time.Second,
		HTTPAddr: "127.0.0.1:8082", WSAddr: "127.0.0.1:8080", MaxTTL: 720 * time.Hour, MaxBody: 5630,
		PendingLimit: 200, HelloTimeout: 5 * time.Second, ShutdownTimeout: 20 * time.Second, PingInterval: 300 * time.Second,
		PongTimeout: 30 * time.Second, MinClientPing: 45 * time.Second,
	}
}

// validateCase is one mutation of a valid config and the error it must
// cause ("" for none).
type validateCase struct {
	name    string
	mutate  func(*serveConfig)
	wantErr string
}

func runValidateCases(t *testing.T, tests []validateCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.mutate(&c)
			err := c.validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []validateCase{
		{"defaults", func(*serveConfig) {}, ""},
		{"unknown role", func(c *serveConfig) { c.Roles = []string{"router"} }, `unknown role "router"`},
		{"no role", func(c *serveConfig) { c.Roles = nil }, "at least one role"},
		{"partitions", func(c *serveConfig) { c.Partitions = 0 }, "--partitions"},
		{"replication", func(c *serveConfig) { c.Replication = 0 }, "--replication"},
		{"small body", func(c *serveConfig) { c.MaxBody = 4095 }, "--max-body"},
		{"ttl", func(c *serveConfig) { c.MaxTTL = 0 }, "--max-ttl"},
		{"pending", func(c *serveConfig) { c.PendingLimit = 0 }, "--pending-limit"},
		{"max channels", func(c *serveConfig) { c.MaxChannels = -1 }, "--max-channels"},
		{"connections per ip", func(c *serveConfig) { c.MaxConnectionsPerIPPerMinute = -5 }, "--max-connections-per-ip-per-minute"},
		{"hello timeout", func(c *serveConfig) { c.HelloTimeout = 0 }, "--hello-timeout"},
		{"bad addr", func(c *serveConfig) { c.HTTPAddr = "8082" }, "--http-addr"},
		{"tls half", func(c *serveConfig) { c.TLSCert = "x.pem" }, "--tls-cert and --tls-key"},
		{"public url path", func(c *serveConfig) { c.PublicURL = "https://push.example.com/x" }, "--public-url"},
		{"public url scheme", func(c *serveConfig) { c.PublicURL = "ftp://push.example.com" }, "--public-url"},
		{"namespace", func(c *serveConfig) { c.Namespace = "a b" }, "--namespace"},
		{"uaid expiry", func(c *serveConfig) { c.UAIDExpiry = time.Second }, "--uaid-expiry: 1s is below 1m"},
		{"uaid expiry default", func(c *serveConfig) { c.UAIDExpiry = 0 }, ""},
		{"shutdown timeout", func(c *serveConfig) { c.ShutdownTimeout = 0 }, "--shutdown-timeout: 0s must be positive"},
		{"min client ping", func(c *serveConfig) { c.MinClientPing = -time.Second }, "--min-client-ping: -1s is negative"},
		{"lag interval", func(c *serveConfig) { c.LagInterval = -time.Second }, "--lag-interval: -1s is negative"},
		{"metrics addr off", func(c *serveConfig) { c.MetricsAddr = "" }, ""},
		{"metrics addr", func(c *serveConfig) { c.MetricsAddr = "9100" }, `--metrics-addr: "9100"`},
		{"registrations per minute", func(c *serveConfig) { c.MaxRegistrationsPerMinute = -1 }, "--max-registrations-per-minute: -1 is negative"},
	}
	runValidateCases(t, tests)
}

func TestValidateDerivesDefaults(t *testing.T) {
	c := validConfig(t)
	c.KafkaBrokers = []string{"a:9092, b:9092", "c:9092"}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.PublicURL != "http://127.0.0.1:8082" {
		t.Errorf("PublicURL = %q", c.PublicURL)
	}
	if strings.Join(c.KafkaBrokers, "|") != "a:9092|b:9092|c:9092" {
		t.Errorf("brokers = %q", c.KafkaBrokers)
	}
	if c.NodeID == "" {
		t.Error("no node id")
	}
}

func TestSealingKeysPersist(t *testing.T) {
	c := validConfig(t)
	k1, err := c.sealingKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	k2, err := c.sealingKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if string(k1[0]) != string(k2[0]) {
		t.Fatal("generated key not reused")
	}
	if fi, err := os.Stat(filepath.Join(c.DataDir, "crypto-keys")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	c.CryptoKeys = "short"
	if _, err := c.sealingKeys(t.Context()); err == nil || !strings.Contains(err.Error(), "--crypto-keys") {
		t.Fatalf("bad key accepted: %v", err)
	}
}
