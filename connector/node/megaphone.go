package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/broadcasts"
)

// pollMegaphone polls at once, then every Interval, until ctx ends.
func (b *liveBroadcasts) pollMegaphone(ctx context.Context) {
	t := time.NewTicker(b.cfg.Megaphone.Interval)
	defer t.Stop()
	for {
		result, err := b.pollOnce(ctx)
		b.met.poll(result)
		if err != nil && ctx.Err() == nil {
			b.log.Warn("megaphone poll failed", "result", result, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errPoll is a failed poll with its metric's result label.
type errPoll struct {
	result string
	err    error
}

func (e *errPoll) Error() string { return e.err.Error() }

// pollOnce fetches Megaphone's table and writes the versions that differ
// from ours; it returns the metric's result label.
func (b *liveBroadcasts) pollOnce(ctx context.Context) (string, error) {
	want, err := fetchMegaphone(ctx, b.cfg.Megaphone)
	if err != nil {
		var ep *errPoll
		if errors.As(err, &ep) {
			return ep.result, err
		}
		return "fetch", err
	}
	valid := make(map[string]string, len(want))
	for id, v := range want {
		if schema.ValidBroadcastID(id) != nil || schema.ValidBroadcastVersion(v) != nil {
			b.log.Warn("megaphone: broadcast outside the format skipped", "id", truncate(id), "version", truncate(v))
			continue
		}
		valid[id] = v
	}
	diff := megaphoneChanges(b.megaSeen, b.table.Snapshot(), valid)
	if len(diff) > 0 {
		wctx, cancel := context.WithTimeout(ctx, b.cfg.Megaphone.Timeout)
		defer cancel()
		if err := broadcasts.Write(wctx, b.cfg.Producer, b.names, diff, "megaphone"); err != nil {
			return "write", err // megaSeen unchanged: the next poll writes them again
		}
		b.log.Info("megaphone: broadcasts changed", "ids", len(diff))
	}
	b.megaSeen = valid
	return "ok", nil
}

// megaphoneChanges is what a poll writes: the ids whose version Megaphone
// changed since this poller's last answer (seen) and that differ from the
// table. Comparing with the table alone would let a poller whose answer
// is a moment old write an older version over a newer one another node's
// poller wrote (every connector node polls); a change made meanwhile by
// the CLI or the admin API also stands until Megaphone's version of that
// id changes. The first poll (seen nil) writes whatever differs.
func megaphoneChanges(seen, table, fetched map[string]string) map[string]string {
	out := map[string]string{}
	for id, v := range fetched {
		if old, ok := seen[id]; ok && old == v {
			continue
		}
		if table[id] != v {
			out[id] = v
		}
	}
	return out
}

// megaphoneAnswer is Megaphone's GET /v1/broadcasts answer (it also has
// "code", which we do not need).
type megaphoneAnswer struct {
	Broadcasts map[string]string `json:"broadcasts"`
}

// fetchMegaphone GETs the table. Everything Megaphone controls is bounded:
// the time (Timeout), the size (MaxBody) and the number of ids
// (schema.MaxBroadcasts).
func fetchMegaphone(ctx context.Context, cfg MegaphoneConfig) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
	if err != nil {
		return nil, &errPoll{"fetch", fmt.Errorf("megaphone request: %w", err)}
	}
	if cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, &errPoll{"fetch", fmt.Errorf("megaphone: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &errPoll{"status", fmt.Errorf("megaphone answered %s", resp.Status)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, cfg.MaxBody+1))
	if err != nil {
		return nil, &errPoll{"fetch", fmt.Errorf("megaphone body: %w", err)}
	}
	if int64(len(body)) > cfg.MaxBody {
		return nil, &errPoll{"too_large", fmt.Errorf("megaphone answer over %d bytes", cfg.MaxBody)}
	}
	return parseMegaphone(body)
}

// parseMegaphone decodes an answer; "broadcasts" must be present.
func parseMegaphone(body []byte) (map[string]string, error) {
	var a megaphoneAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, &errPoll{"invalid", fmt.Errorf("megaphone answer: %w", err)}
	}
	if a.Broadcasts == nil {
		return nil, &errPoll{"invalid", errors.New(`megaphone answer has no "broadcasts" object`)}
	}
	if len(a.Broadcasts) > schema.MaxBroadcasts {
		return nil, &errPoll{"invalid", fmt.Errorf("megaphone answer has %d broadcasts, over the bound of %d", len(a.Broadcasts), schema.MaxBroadcasts)}
	}
	return a.Broadcasts, nil
}

// truncate bounds what a log line repeats of outside input.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
