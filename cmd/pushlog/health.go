package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/pushlog/pushlog/cmd/internal/health"
)

// healthCmd is a container healthcheck (distroless images have no curl):
// exit 0 when the heartbeat answers 2xx, 1 otherwise.
type healthCmd struct {
	URL     string        `arg:"" help:"Heartbeat URL of any pushlog listener (ingest, WebSocket or --metrics-addr), e.g. http://127.0.0.1:8082/__heartbeat__; host:port alone means its /__heartbeat__."`
	Timeout time.Duration `default:"5s" help:"Longest wait for the answer."`
	Quiet   bool          `short:"q" help:"Print nothing when healthy."`
	// A container probes 127.0.0.1 while the certificate names the
	// public host.
	Insecure bool `help:"Do not verify the TLS certificate of an https URL (probing 127.0.0.1 of a listener whose certificate names the public host)."`
}

func (c *healthCmd) Run(ctx context.Context) error {
	u, err := health.ProbeURL(c.URL)
	if err != nil {
		return err
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout: %s must be positive", c.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	client := &http.Client{Timeout: c.Timeout}
	if c.Insecure {
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // asked for
	}
	line, err := health.Probe(ctx, client, u)
	if err != nil {
		return err
	}
	if !c.Quiet {
		fmt.Println(line)
	}
	return nil
}
