package integration

// pushlog_connector_push_to_socket_seconds against what a client sees: a
// connected user agent receives n pushes one after the other; the
// histogram counts each once, and each observation lies inside the
// client's own interval (POST sent to notification read), so the sums
// compare. A message that waited for its user agent to connect is not
// observed. The quantiles are logged (the README's figure).

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func TestPushToSocketMetric(t *testing.T) {
	for _, tc := range []struct {
		name     string
		embedded bool
	}{
		{"Kafka", false},
		{"Embedded", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 200
			s := startServer(t, serverOpts{Embedded: tc.embedded})
			ctx := testContext(t, 2*time.Minute)
			vapid := snNewVAPID(t)
			ua := uaDial(ctx, t, s.WSURL, "")
			sub := ua.subscribe(ctx, "")
			// Warm-up (connections, the VAPID cache), not counted below.
			snMarker(ctx, t, ua, sub, vapid)
			base := ptsSettled(ctx, t, s, 1)

			client := make([]float64, 0, n)
			for i := range n {
				msg := fmt.Sprintf("latency %d", i)
				start := time.Now()
				snMustCreate(ctx, t, sub, []byte(msg), snPush{TTL: snLongTTL, VAPID: vapid})
				m := snExpect(ctx, t, ua, sub, msg)
				client = append(client, time.Since(start).Seconds())
				ua.ack(m)
			}
			ua.sync(ctx)

			// A message for a user agent that is offline when it is
			// accepted is delivered at reconnect but not observed.
			uaid, off := snOffline(ctx, t, s, "")
			snMustCreate(ctx, t, off, []byte("waited"), snPush{TTL: snLongTTL, VAPID: vapid})
			back := uaDial(ctx, t, s.WSURL, uaid)
			snExpect(ctx, t, back, off, "waited")
			back.sync(ctx)

			h := ptsHistogram(t, s)
			count := h.GetSampleCount() - base.GetSampleCount()
			sum := h.GetSampleSum() - base.GetSampleSum()
			var clientSum float64
			for _, c := range client {
				clientSum += c
			}
			if count != n {
				t.Fatalf("%d observations, want %d (one per delivery to the connected user agent, none for the one that waited)", count, n)
			}
			// Each observation ends before the client reads and starts
			// after it posts, up to the half millisecond of the accept
			// time's rounding.
			if sum <= 0 || sum > clientSum+n*0.0005 {
				t.Fatalf("observed %.4fs in all, the client saw %.4fs", sum, clientSum)
			}
			slices.Sort(client)
			t.Logf("push→socket over %d pushes: histogram p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, mean %.2f ms; client (POST to read) p50 %.2f ms, p99 %.2f ms",
				n, 1000*ptsQuantile(0.5, base, h), 1000*ptsQuantile(0.95, base, h), 1000*ptsQuantile(0.99, base, h), 1000*sum/float64(n),
				1000*client[n/2], 1000*client[n*99/100])
		})
	}
}

// ptsHistogram reads the process's push→socket histogram.
func ptsHistogram(t *testing.T, s *server) *dto.Histogram {
	t.Helper()
	f := opsScrape(t, s.HTTPURL+"/metrics")["pushlog_connector_push_to_socket_seconds"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("/metrics has no pushlog_connector_push_to_socket_seconds: %v", f)
	}
	return f.GetMetric()[0].GetHistogram()
}

// ptsSettled reads the histogram once it holds at least n observations:
// the connector observes after the write returns, so a client can read a
// frame before its observation is counted.
func ptsSettled(ctx context.Context, t *testing.T, s *server, n uint64) *dto.Histogram {
	t.Helper()
	for {
		h := ptsHistogram(t, s)
		if h.GetSampleCount() >= n {
			return h
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the histogram holds %d observations, want %d", h.GetSampleCount(), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ptsQuantile is histogram_quantile over the observations between two
// readings (linear within a bucket).
func ptsQuantile(q float64, prev, cur *dto.Histogram) float64 {
	total := float64(cur.GetSampleCount() - prev.GetSampleCount())
	rank := q * total
	lower, below := 0.0, 0.0
	for i, b := range cur.GetBucket() {
		in := float64(b.GetCumulativeCount()-prev.GetBucket()[i].GetCumulativeCount()) - below
		if below+in >= rank && in > 0 {
			return lower + (b.GetUpperBound()-lower)*(rank-below)/in
		}
		lower, below = b.GetUpperBound(), below+in
	}
	return math.Inf(1)
}
