package health

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// maxProbeBody bounds what a probe reads of an answer.
const maxProbeBody = 64 << 10

// ProbeURL turns what a user passes to `pushlog health` into a URL:
// host:port alone means http://host:port/__heartbeat__, and a URL without
// a path gets /__heartbeat__.
func ProbeURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("no URL given")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q: want an http(s) URL", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q: no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/__heartbeat__"
	}
	return u.String(), nil
}

// Probe GETs url and returns a one-line summary; the error is non-nil
// unless the answer is 2xx (a heartbeat answers 503 when a check fails).
func Probe(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	line := fmt.Sprintf("%s: %s", url, resp.Status)
	var b Body
	if json.Unmarshal(raw, &b) == nil && b.Status != "" {
		line += " " + b.Status
		var bad []string
		for name, v := range b.Checks {
			if v != "OK" {
				bad = append(bad, name+": "+v)
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			line += " (" + strings.Join(bad, "; ") + ")"
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("unhealthy: %s", line)
	}
	return line, nil
}
