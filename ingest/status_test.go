package ingest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

type fakeStatus map[schema.MessageKey]schema.MessageStatus

// Ready: a fake holding the key of partition -1 is catching up.
func (f fakeStatus) Ready() bool {
	_, catchingUp := f[schema.MessageKey{Partition: -1}]
	return !catchingUp
}

func (f fakeStatus) Status(k schema.MessageKey) (schema.MessageStatus, bool) {
	st, ok := f[k]
	return st, ok
}

func (e *env) messageID(offset int64) string {
	e.t.Helper()
	id, err := e.sealer.SealMessageID(schema.MessageID{UAID: testUAID, ChannelID: testChannel,
		Partition: schema.PartitionOf(testUAID, testPartitions), Offset: offset})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func TestStatus(t *testing.T) {
	p := schema.PartitionOf(testUAID, testPartitions)
	other := newTestVAPID(t)
	var keyHash [32]byte
	table := fakeStatus{}
	e := newEnv(t, func(c *Config) { c.Status = table })
	copy(keyHash[:], e.vapid.keyHash())
	acc := int64(1_765_000_000_000)
	table[schema.MessageKey{Partition: p, Offset: 1}] = schema.MessageStatus{AcceptedMs: acc, TTLSeconds: 60}
	table[schema.MessageKey{Partition: p, Offset: 2}] = schema.MessageStatus{AcceptedMs: acc, DeliveredMs: acc + 5, Deliveries: 1,
		State: schema.StateAcked, SettledMs: acc + 9, TTLSeconds: 60, Urgency: pb.Urgency_URGENCY_HIGH}
	table[schema.MessageKey{Partition: p, Offset: 3}] = schema.MessageStatus{AcceptedMs: acc, State: schema.StateDropped,
		Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED, SettledMs: acc + 1}
	table[schema.MessageKey{Partition: p, Offset: 4}] = schema.MessageStatus{AcceptedMs: acc, KeyBound: true, KeyHash: keyHash}
	table[schema.MessageKey{Partition: p, Offset: 5}] = schema.MessageStatus{State: schema.StateAcked, SettledMs: acc} // ack before accept
	otherAuth := map[string]string{"Authorization": other.header(t, testPublicURL)}
	for _, tc := range []struct {
		name   string
		id     string
		hdr    map[string]string
		status int
		want   map[string]any
	}{
		{"pending", e.messageID(1), nil, 200, map[string]any{"state": "pending", "accepted": "2025-12-06T05:46:40.000Z", "ttl": 60.0}},
		{"acked", e.messageID(2), nil, 200, map[string]any{"state": "acked", "delivered": "2025-12-06T05:46:40.005Z", "acked": "2025-12-06T05:46:40.009Z", "urgency": "high", "deliveries": 1.0}},
		{"dropped", e.messageID(3), nil, 200, map[string]any{"state": "dropped", "reason": "topic_replaced", "dropped": "2025-12-06T05:46:40.001Z"}},
		{"v2 without VAPID", e.messageID(4), nil, 401, nil},
		{"v2 with another key", e.messageID(4), otherAuth, 403, nil},
		{"v2 with a bad JWT", e.messageID(4), map[string]string{"Authorization": "vapid t=abc, k=" + e.vapid.k}, 401, nil},
		{"v2 with its key", e.messageID(4), map[string]string{"Authorization": e.vapid.header(t, testPublicURL)}, 200, map[string]any{"state": "pending"}},
		{"accept not folded yet", e.messageID(5), nil, 404, nil},
		{"unknown", e.messageID(6), nil, 404, nil},
		{"forged", "AAAA" + e.messageID(1)[4:], nil, 400, nil},
		{"garbage", "%2e%2e", nil, 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := e.do(http.MethodGet, "/m/"+tc.id, tc.hdr, nil)
			if rr.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rr.Code, tc.status, rr.Body)
			}
			if tc.status != 200 {
				errBody(t, rr)
				return
			}
			var got map[string]any
			if err := json.Unmarshal(rr.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got["id"] != tc.id {
				t.Errorf("id %v", got["id"])
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v (%s)", k, got[k], v, rr.Body)
				}
			}
		})
	}
}

// TestStatusCatchingUp: before the table caught up, an unknown message is
// 503 (it may be folded soon), a known one is answered.
func TestStatusCatchingUp(t *testing.T) {
	p := schema.PartitionOf(testUAID, testPartitions)
	table := fakeStatus{{Partition: p, Offset: 1}: {AcceptedMs: 1}, {Partition: -1}: {State: schema.StatePending}}
	e := newEnv(t, func(c *Config) { c.Status = table })
	if rr := e.do(http.MethodGet, "/m/"+e.messageID(2), nil, nil); rr.Code != http.StatusServiceUnavailable || rr.Header().Get("Retry-After") == "" {
		t.Fatalf("unknown while catching up: %d %v", rr.Code, rr.Header())
	}
	if rr := e.do(http.MethodGet, "/m/"+e.messageID(1), nil, nil); rr.Code != 200 {
		t.Fatalf("known while catching up: %d", rr.Code)
	}
	delete(table, schema.MessageKey{Partition: -1})
	if rr := e.do(http.MethodGet, "/m/"+e.messageID(2), nil, nil); rr.Code != http.StatusNotFound {
		t.Fatalf("unknown once caught up: %d", rr.Code)
	}
}

// behindStatus is a fakeStatus that has read up to offset next only.
type behindStatus struct {
	fakeStatus
	next int64
}

func (b behindStatus) Behind(_ context.Context, k schema.MessageKey) bool { return k.Offset >= b.next }

// TestStatusBehind: a caught-up table that reads in batches answers 503
// with Retry-After for a message it has not read yet (accepted a moment
// ago), 404 for an unknown one it read past.
func TestStatusBehind(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Status = behindStatus{fakeStatus{}, 5} })
	for _, tc := range []struct {
		offset int64
		want   int
	}{{4, http.StatusNotFound}, {5, http.StatusServiceUnavailable}, {9, http.StatusServiceUnavailable}} {
		rr := e.do(http.MethodGet, "/m/"+e.messageID(tc.offset), nil, nil)
		if rr.Code != tc.want || tc.want == http.StatusServiceUnavailable && rr.Header().Get("Retry-After") == "" {
			t.Errorf("offset %d: %d %v, want %d", tc.offset, rr.Code, rr.Header(), tc.want)
		}
	}
}

func TestStatusOff(t *testing.T) {
	e := newEnv(t)
	if rr := e.do(http.MethodGet, "/m/"+e.messageID(1), nil, nil); rr.Code != http.StatusServiceUnavailable {
		t.Fatalf("without a status source: %d", rr.Code)
	}
}

type fakeReports struct {
	key          string
	since, until time.Time
	err          error
}

func (f *fakeReports) SenderReport(_ context.Context, key string, since, until time.Time) (SenderReport, error) {
	f.key, f.since, f.until = key, since, until
	return SenderReport{Sender: key, Since: since, Until: until, Accepted: 3, Acked: 1, Pending: 2}, f.err
}

func TestReport(t *testing.T) {
	src := &fakeReports{}
	now := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *Config) {
		c.Report.Source = src
		c.Now = func() time.Time { return now }
	})
	other := newTestVAPID(t)
	header := func(v *testVAPID, aud string) map[string]string {
		return map[string]string{"Authorization": "vapid t=" + v.jwt(t, jwt.MapClaims{
			"aud": aud, "exp": now.Add(time.Hour).Unix(), "sub": "mailto:ops@example.com"}) + ", k=" + v.k}
	}
	mine := header(e.vapid, testPublicURL)
	for _, tc := range []struct {
		name   string
		query  string
		hdr    map[string]string
		status int
		since  time.Time
		until  time.Time
	}{
		{"default window", "", mine, 200, now.Add(-24 * time.Hour), now},
		{"rfc3339", "since=2026-12-01T00:00:00Z&until=2026-12-02T00:00:00Z", mine, 200,
			time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)},
		{"unix, until clamped to now", "since=1796500000&until=99999999999", mine, 200, time.Unix(1796500000, 0).UTC(), now},
		{"no VAPID", "", nil, 401, time.Time{}, time.Time{}},
		{"another audience", "", header(e.vapid, "https://evil.example"), 401, time.Time{}, time.Time{}},
		{"huge window", "since=2000-01-01T00:00:00Z", mine, 400, time.Time{}, time.Time{}},
		{"reversed", "since=2026-12-05T00:00:00Z&until=2026-12-04T00:00:00Z", mine, 400, time.Time{}, time.Time{}},
		{"since in the future", "since=2027-01-01T00:00:00Z", mine, 400, time.Time{}, time.Time{}},
		{"bad format", "since=yesterday", mine, 400, time.Time{}, time.Time{}},
		{"negative", "since=-5", mine, 400, time.Time{}, time.Time{}},
		{"overlong", "since=" + url.QueryEscape(string(make([]byte, 100))), mine, 400, time.Time{}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			*src = fakeReports{}
			rr := e.do(http.MethodGet, "/v1/report?"+tc.query, tc.hdr, nil)
			if rr.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rr.Code, tc.status, rr.Body)
			}
			if tc.status != 200 {
				errBody(t, rr)
				return
			}
			if src.key != hex.EncodeToString(e.vapid.keyHash()) || !src.since.Equal(tc.since) || !src.until.Equal(tc.until) {
				t.Fatalf("asked for %s [%s, %s), want [%s, %s)", src.key, src.since, src.until, tc.since, tc.until)
			}
			var got SenderReport
			if err := json.Unmarshal(rr.Body.Bytes(), &got); err != nil || got.Accepted != 3 || !got.Balanced() {
				t.Fatalf("body %s: %v", rr.Body, err)
			}
		})
	}
	// Another key gets its own report, never this one's.
	*src = fakeReports{}
	if rr := e.do(http.MethodGet, "/v1/report", header(other, testPublicURL), nil); rr.Code != 200 || src.key != hex.EncodeToString(other.keyHash()) {
		t.Fatalf("other key: %d, asked for %s", rr.Code, src.key)
	}
	src.err = errors.New("clickhouse down")
	if rr := e.do(http.MethodGet, "/v1/report", mine, nil); rr.Code != http.StatusServiceUnavailable {
		t.Fatalf("failing source: %d", rr.Code)
	}
}

func TestReportOff(t *testing.T) {
	e := newEnv(t)
	rr := e.do(http.MethodGet, "/v1/report", map[string]string{"Authorization": e.vapid.header(t, testPublicURL)}, nil)
	if rr.Code != http.StatusServiceUnavailable {
		t.Fatalf("analytics off: %d", rr.Code)
	}
	if b := errBody(t, rr); b.Message == "" {
		t.Fatal("no message")
	}
}

func FuzzReportWindow(f *testing.F) {
	for _, s := range []string{"", "1765000000", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00.123456789+14:00", "-1", "9999999999999999999"} {
		f.Add(s, s)
	}
	now := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, since, until string) {
		s, u, aerr := reportWindow(since, until, now, DefaultMaxReportWindow)
		if aerr != nil {
			if aerr.status != http.StatusBadRequest {
				t.Fatalf("status %d", aerr.status)
			}
			return
		}
		if !s.Before(u) || u.After(now) || u.Sub(s) > DefaultMaxReportWindow {
			t.Fatalf("window [%s, %s) accepted", s, u)
		}
	})
}

// TestStatusQuota: a lookup takes a token from the message's endpoint
// bucket, as a push does: polling cannot outrun the push quotas.
func TestStatusQuota(t *testing.T) {
	p := schema.PartitionOf(testUAID, testPartitions)
	table := fakeStatus{{Partition: p, Offset: 1}: {AcceptedMs: 1}}
	e := newEnv(t, func(c *Config) {
		c.Status = table
		c.Quota.SubscriptionRate, c.Quota.SubscriptionBurst = 0.001, 2
	})
	for i, want := range []int{200, 200, http.StatusTooManyRequests} {
		rr := e.do(http.MethodGet, "/m/"+e.messageID(1), nil, nil)
		if rr.Code != want {
			t.Fatalf("lookup %d: %d, want %d", i+1, rr.Code, want)
		}
		if want == http.StatusTooManyRequests && (rr.Header().Get("Retry-After") == "" || errBody(t, rr).Errno != errnoTooManyRequests) {
			t.Fatalf("429 without Retry-After or errno: %v %s", rr.Header(), rr.Body)
		}
	}
}

type blockingReports struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingReports) SenderReport(ctx context.Context, key string, since, until time.Time) (SenderReport, error) {
	b.started <- struct{}{}
	<-b.release
	return SenderReport{Sender: key}, nil
}

// TestReportConcurrency: past ReportConfig.Concurrency running reports, a
// report answers 503 at once (ClickHouse is not asked).
func TestReportConcurrency(t *testing.T) {
	src := &blockingReports{started: make(chan struct{}, 1), release: make(chan struct{})}
	e := newEnv(t, func(c *Config) { c.Report = ReportConfig{Source: src, Concurrency: 1} })
	auth := map[string]string{"Authorization": e.vapid.header(t, testPublicURL)}
	done := make(chan int)
	go func() { done <- e.do(http.MethodGet, "/v1/report", auth, nil).Code }()
	<-src.started
	rr := e.do(http.MethodGet, "/v1/report", auth, nil)
	if rr.Code != http.StatusServiceUnavailable || rr.Header().Get("Retry-After") == "" {
		t.Fatalf("second report: %d %v", rr.Code, rr.Header())
	}
	close(src.release)
	if code := <-done; code != 200 {
		t.Fatalf("first report: %d", code)
	}
	go func() { <-src.started }()
	if rr := e.do(http.MethodGet, "/v1/report", auth, nil); rr.Code != 200 {
		t.Fatalf("after the first ended: %d", rr.Code)
	}
}

// TestReportOnePerKey: a key runs one report at a time, so a sender cannot
// hold every slot; another key is still served meanwhile.
func TestReportOnePerKey(t *testing.T) {
	src := &blockingReports{started: make(chan struct{}, 2), release: make(chan struct{})}
	e := newEnv(t, func(c *Config) { c.Report = ReportConfig{Source: src, Concurrency: 4} })
	auth := map[string]string{"Authorization": e.vapid.header(t, testPublicURL)}
	done := make(chan int, 2)
	go func() { done <- e.do(http.MethodGet, "/v1/report", auth, nil).Code }()
	<-src.started
	if rr := e.do(http.MethodGet, "/v1/report", auth, nil); rr.Code != http.StatusServiceUnavailable || rr.Header().Get("Retry-After") == "" {
		t.Fatalf("a second report for the same key: %d %v, want 503 with Retry-After", rr.Code, rr.Header())
	}
	other := newTestVAPID(t)
	go func() {
		done <- e.do(http.MethodGet, "/v1/report", map[string]string{"Authorization": other.header(t, testPublicURL)}, nil).Code
	}()
	<-src.started // the other key's report runs beside the first
	close(src.release)
	for range 2 {
		if code := <-done; code != http.StatusOK {
			t.Fatalf("report: %d, want 200", code)
		}
	}
}
