package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// ssGet GETs url with an optional Authorization header.
func ssGet(ctx context.Context, t testing.TB, u, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// ssAuth is a VAPID Authorization header of key for the service at base.
func ssAuth(t testing.TB, key snVAPID, base string) string {
	t.Helper()
	k, err := webpush.ParseVAPIDPrivateKey(key.Private)
	if err != nil {
		t.Fatal(err)
	}
	h, err := k.Authorization(base, "mailto:integration@pushlog.example", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type ssStatus struct {
	State     string `json:"state"`
	Reason    string `json:"reason"`
	Accepted  string `json:"accepted"`
	Delivered string `json:"delivered"`
	Acked     string `json:"acked"`
	Expired   string `json:"expired"`
	Dropped   string `json:"dropped"`
	Deleted   string `json:"deleted"`
}

// ssWaitState polls GET loc until the message is in state (the status
// table folds the acks topic asynchronously) and returns the answer.
func ssWaitState(ctx context.Context, t testing.TB, loc, auth, state string) ssStatus {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		code, _, body := ssGet(ctx, t, loc, auth)
		var st ssStatus
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatalf("status %s: %q is not JSON", loc, body)
			}
			if st.State == state {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s: %d %s, want state %s", loc, code, body, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type ssReport struct {
	Accepted        uint64            `json:"accepted"`
	Delivered       uint64            `json:"delivered"`
	Acked           uint64            `json:"acked"`
	Expired         uint64            `json:"expired"`
	Dropped         uint64            `json:"dropped"`
	DroppedByReason map[string]uint64 `json:"dropped_by_reason"`
	Deleted         uint64            `json:"deleted"`
	Pending         uint64            `json:"pending"`
	AckLatencyMs    struct {
		P50, P95, P99 float64
	} `json:"ack_latency_ms"`
	Urgency map[string]uint64 `json:"urgency"`
}

func (r ssReport) String() string {
	return fmt.Sprintf("accepted %d delivered %d acked %d expired %d dropped %d %v deleted %d pending %d urgency %v latency %v",
		r.Accepted, r.Delivered, r.Acked, r.Expired, r.Dropped, r.DroppedByReason, r.Deleted, r.Pending, r.Urgency, r.AckLatencyMs)
}

// TestSenderStatusAndReport: a known mix of pushes from one VAPID key
// (acked, delivered and not acked, expired, dropped for a replaced topic
// and for TTL 0 offline, deleted, still pending, and one to a key-bound
// endpoint) gives exactly the expected GET /m/{id} answers and GET
// /v1/report numbers (accepted = acked + expired + dropped + deleted +
// pending); another sender's pushes are not counted; forged ids, the
// wrong key, the wrong audience and huge ranges get clear 4xx; a settled
// status is forgotten after --status-keep and survives a restart; without
// ClickHouse the report answers 503.
func TestSenderStatusAndReport(t *testing.T) {
	chAddr := analyticsClickHouseAddr(t)
	db := "it_sender_" + analyticsRandom(6)
	const keep = 40 * time.Second
	s := startServer(t, serverOpts{Env: []string{"CLICKHOUSE_ADDR=" + chAddr, "PUSHLOG_CLICKHOUSE_DB=" + db,
		"PUSHLOG_STATUS_KEEP=" + keep.String()}})
	ctx := testContext(t, 5*time.Minute)
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	key, other := snNewVAPID(t), snNewVAPID(t)
	auth := ssAuth(t, key, s.HTTPURL)

	online := uaDial(ctx, t, s.WSURL, "")
	subOn := online.subscribe(ctx, "")
	offline := uaDial(ctx, t, s.WSURL, "")
	subOff := offline.subscribe(ctx, "")
	subV2 := offline.subscribe(ctx, key.Public)
	offline.close()

	push := func(sub *uaSubscription, p snPush) string {
		t.Helper()
		p.VAPID = key
		return snMustCreate(ctx, t, sub, []byte("status"), p).Header.Get("Location")
	}
	// Acked, and delivered without an ack.
	acked := push(subOn, snPush{TTL: 3600, Urgency: webpushgo.UrgencyHigh})
	n := online.next(ctx)
	online.ack(n)
	delivered := push(subOn, snPush{TTL: 3600})
	online.next(ctx) // never acked: delivered, still pending
	// Offline: replaced topic, TTL 0, deleted, expired, pending, key-bound.
	replaced := push(subOff, snPush{TTL: 3600, Topic: "weather"})
	pending := push(subOff, snPush{TTL: 3600, Topic: "weather"})
	ttlZero := push(subOff, snPush{TTL: 0})
	deleted := push(subOff, snPush{TTL: 3600})
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, deleted, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	expired := push(subOff, snPush{TTL: 2})
	keyBound := push(subV2, snPush{TTL: 3600, Urgency: webpushgo.UrgencyLow})
	// Another sender's push: never in this key's report.
	snMustCreate(ctx, t, subOff, []byte("other"), snPush{TTL: 3600, VAPID: other})

	for _, c := range []struct{ loc, auth, state, reason string }{
		{acked, "", "acked", ""},
		{delivered, "", "delivered", ""},
		{replaced, "", "dropped", "topic_replaced"},
		{pending, "", "pending", ""},
		{ttlZero, "", "dropped", "ttl_zero_offline"},
		{deleted, "", "deleted", ""},
		{expired, "", "expired", ""},
		{keyBound, auth, "pending", ""},
	} {
		st := ssWaitState(ctx, t, c.loc, c.auth, c.state)
		if st.Reason != c.reason || st.Accepted == "" {
			t.Errorf("%s: %+v, want reason %q and an accept time", c.state, st, c.reason)
		}
		step := map[string]string{"acked": st.Acked, "expired": st.Expired, "dropped": st.Dropped, "deleted": st.Deleted, "delivered": st.Delivered}[c.state]
		if c.state != "pending" && step == "" {
			t.Errorf("%s: no time for the step: %+v", c.state, st)
		}
	}

	// A restarted node folds the topics again: the same answers.
	s.terminate()
	s.restart()
	for _, c := range []struct{ loc, state string }{{acked, "acked"}, {replaced, "dropped"}, {deleted, "deleted"}, {expired, "expired"}, {pending, "pending"}} {
		ssWaitState(ctx, t, c.loc, "", c.state)
	}

	// Bad input: clear 4xx in autopush's shape.
	id := acked[strings.LastIndex(acked, "/")+1:]
	forged := []byte(id)
	forged[len(forged)/2] ^= 1
	if forged[len(forged)/2] == '-' || forged[len(forged)/2] == '_' {
		forged[len(forged)/2] = 'A'
	}
	code, h, body := ssGet(ctx, t, s.HTTPURL+"/m/"+string(forged), "")
	snCheckError(t, "forged message id", code, h, body, http.StatusBadRequest, 102)
	code, h, body = ssGet(ctx, t, keyBound, "")
	snCheckError(t, "key-bound status without VAPID", code, h, body, http.StatusUnauthorized, 109)
	code, h, body = ssGet(ctx, t, keyBound, ssAuth(t, other, s.HTTPURL))
	snCheckError(t, "key-bound status with another key", code, h, body, http.StatusForbidden, 109)

	report := func(query, auth string) (int, http.Header, []byte) {
		return ssGet(ctx, t, s.HTTPURL+"/v1/report?"+query, auth)
	}
	window := url.Values{"since": {start.Format(time.RFC3339)}}
	code, h, body = report(window.Encode(), "")
	snCheckError(t, "report without VAPID", code, h, body, http.StatusUnauthorized, 109)
	code, h, body = report(window.Encode(), ssAuth(t, key, "https://elsewhere.example"))
	snCheckError(t, "report JWT for another audience", code, h, body, http.StatusUnauthorized, 109)
	mixed := strings.Replace(ssAuth(t, other, s.HTTPURL), "k="+other.Public, "k="+key.Public, 1)
	code, h, body = report(window.Encode(), mixed)
	snCheckError(t, "report JWT signed by another key", code, h, body, http.StatusUnauthorized, 109)
	code, h, body = report("since=2000-01-01T00:00:00Z", auth)
	snCheckError(t, "report over 31 days", code, h, body, http.StatusBadRequest, 130)
	code, h, body = report("since=yesterday", auth)
	snCheckError(t, "report with a bad since", code, h, body, http.StatusBadRequest, 130)

	// The report, once analytics caught up, for a closed window.
	want := ssReport{Accepted: 8, Delivered: 2, Acked: 1, Expired: 1, Dropped: 2, Deleted: 1, Pending: 3,
		DroppedByReason: map[string]uint64{"topic_replaced": 1, "ttl_zero_offline": 1},
		Urgency:         map[string]uint64{"high": 1, "normal": 6, "low": 1}}
	until := time.Now().Add(time.Second).Truncate(time.Second)
	for time.Now().Before(until) {
		time.Sleep(100 * time.Millisecond)
	}
	window.Set("until", until.Format(time.RFC3339))
	var got ssReport
	for deadline := time.Now().Add(90 * time.Second); ; {
		code, _, body = report(window.Encode(), auth)
		if code == http.StatusOK {
			got = ssReport{}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("report %q: %v", body, err)
			}
			if got.String() == want.String() || got.Accepted == want.Accepted && got.Pending == want.Pending && got.Acked == 1 && got.Expired == 1 && got.Deleted == 1 && got.Dropped == 2 && got.Delivered == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("report: %d %s\nwant %s", code, body, want)
		}
		time.Sleep(time.Second)
	}
	if got.Accepted != got.Acked+got.Expired+got.Dropped+got.Deleted+got.Pending {
		t.Errorf("identity broken: %s", got)
	}
	if fmt.Sprint(got.DroppedByReason) != fmt.Sprint(want.DroppedByReason) || fmt.Sprint(got.Urgency) != fmt.Sprint(want.Urgency) {
		t.Errorf("report %s\nwant %s", got, want)
	}
	if got.AckLatencyMs.P50 <= 0 || got.AckLatencyMs.P50 != got.AckLatencyMs.P99 {
		t.Errorf("one ack: p50 %v = p99 %v > 0 expected", got.AckLatencyMs.P50, got.AckLatencyMs.P99)
	}
	// The other key's report holds its one push only.
	code, _, body = report(window.Encode(), ssAuth(t, other, s.HTTPURL))
	var theirs ssReport
	if code != http.StatusOK || json.Unmarshal(body, &theirs) != nil || theirs.Accepted != 1 || theirs.Pending != 1 {
		t.Errorf("other key's report: %d %s", code, body)
	}
	// The CLI prints the same numbers.
	out, errOut, exit := nfRun(ctx, t, "", noOpsEnv("CLICKHOUSE_ADDR="+chAddr, "PUSHLOG_CLICKHOUSE_DB="+db),
		"analytics", "report", "--sender", key.Public, "--since", start.Format(time.RFC3339), "--until", until.Format(time.RFC3339), "--format", "json")
	if exit != 0 {
		t.Fatalf("analytics report --sender: %d %s", exit, errOut)
	}
	var cli ssReport
	if err := json.Unmarshal([]byte(out), &cli); err != nil || cli.String() != got.String() {
		t.Errorf("CLI report %s (%v)\nAPI report %s\n%s", cli, err, got, out)
	}

	// A settled status is forgotten after --status-keep.
	st := ssWaitState(ctx, t, acked, "", "acked")
	ackedAt, err := time.Parse(time.RFC3339, st.Acked)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(ackedAt.Add(keep + time.Second)))
	code, h, body = ssGet(ctx, t, acked, "")
	snCheckError(t, "status past --status-keep", code, h, body, http.StatusNotFound, 102)

	// Lookups are counted by result.
	_, _, metrics := ssGet(ctx, t, s.HTTPURL+"/metrics", "")
	for _, line := range []string{`pushlog_ingest_status_lookups_total{result="acked"}`, `pushlog_ingest_status_lookups_total{result="forbidden"} 1`,
		`pushlog_ingest_report_requests_total{result="bad_range"} 2`} {
		if !strings.Contains(string(metrics), line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}

	// Without ClickHouse: 503 saying analytics is off.
	off := startServer(t, serverOpts{Env: []string{"CLICKHOUSE_ADDR="}})
	code, h, body = ssGet(ctx, t, off.HTTPURL+"/v1/report", ssAuth(t, key, off.HTTPURL))
	snCheckError(t, "report without analytics", code, h, body, http.StatusServiceUnavailable, 201)
	if !strings.Contains(string(body), "Analytics is off") {
		t.Errorf("503 does not say analytics is off: %s", body)
	}
}
