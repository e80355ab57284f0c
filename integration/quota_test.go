package integration

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Quota settings of TestQuota: a VAPID key may send 5 pushes at once, then
// one every 10 s. A bucket refills from its first push on, so a refusal e
// seconds after the first push has Retry-After ceil(10 - e).
const (
	quotaRate  = 0.1
	quotaBurst = 5
)

// TestQuota (issue 15 point 3), on real Kafka and embedded: a sender over
// its VAPID key's quota gets 429 errno 129 with a correct Retry-After in
// autopush's JSON shape; another sender keeps getting 201; after
// Retry-After the first sender gets 201 again; nothing refused reaches the
// log (its user agent receives exactly the accepted pushes, in order); the
// refusals are counted by kind and by sender bucket.
func TestQuota(t *testing.T) {
	modes := []struct {
		name string
		opts serverOpts
	}{
		{"Kafka", serverOpts{}},
		{"Embedded", serverOpts{Embedded: true}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			m.opts.Args = append(m.opts.Args, "--push-quota-vapid-rate="+strconv.FormatFloat(quotaRate, 'g', -1, 64),
				"--push-quota-vapid-burst="+strconv.Itoa(quotaBurst))
			quotaScenario(t, startServer(t, m.opts))
		})
	}
}

func quotaScenario(t *testing.T, s *server) {
	ctx := testContext(t, 2*time.Minute)
	senderA, senderB := snNewVAPID(t), snNewVAPID(t)
	uaA, uaB := uaDial(ctx, t, s.WSURL, ""), uaDial(ctx, t, s.WSURL, "")
	defer uaA.close()
	defer uaB.close()
	subA, subB := uaA.subscribe(ctx, ""), uaB.subscribe(ctx, "")
	push := func(sub *uaSubscription, v snVAPID, text string) snResult {
		return snSend(ctx, t, sub, []byte(text), snPush{TTL: snLongTTL, VAPID: v})
	}

	var accepted []string
	first := time.Now()
	for i := range quotaBurst {
		text := fmt.Sprintf("a-%d", i)
		if res := push(subA, senderA, text); res.Status != http.StatusCreated {
			t.Fatalf("push %d within the burst: %s", i, res)
		}
		accepted = append(accepted, text)
	}
	refused := 0
	var retryAfter int
	for i := range 3 {
		sent := time.Now()
		res := push(subA, senderA, fmt.Sprintf("refused-%d", i))
		answered := time.Now()
		snCheckError(t, "push over the quota", res.Status, res.Header, res.Body, http.StatusTooManyRequests, 129)
		if res.Status != http.StatusTooManyRequests {
			t.FailNow()
		}
		refused++
		ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
		// The server saw the refusal between sent and answered, and the
		// first push between first and sent.
		lo, hi := quotaRetryAfter(answered.Sub(first)), quotaRetryAfter(sent.Sub(first))
		if err != nil || ra < lo || ra > hi {
			t.Fatalf("refusal %d, %s after the first push: Retry-After %q, want %d..%d", i, sent.Sub(first).Round(time.Millisecond), res.Header.Get("Retry-After"), lo, hi)
		}
		t.Logf("refusal %d, %s after the first push: Retry-After %d", i, sent.Sub(first).Round(time.Millisecond), ra)
		if i > 0 && ra > retryAfter {
			t.Errorf("refusal %d: Retry-After grew from %d to %d: a refusal must cost nothing", i, retryAfter, ra)
		}
		retryAfter = ra
	}

	// Another sender is never blocked by A's quota.
	for i := range quotaBurst {
		if res := push(subB, senderB, fmt.Sprintf("b-%d", i)); res.Status != http.StatusCreated {
			t.Fatalf("another sender's push %d while A is over its quota: %s", i, res)
		}
	}

	// Half a second before the first token can be back (the bucket
	// started at or after first), A is still refused; once Retry-After
	// has passed since that refusal, A is accepted.
	time.Sleep(time.Until(first.Add(time.Duration(float64(time.Second)/quotaRate) - 500*time.Millisecond)))
	res := push(subA, senderA, "refused-early")
	answered := time.Now()
	snCheckError(t, "push half a second before the next token", res.Status, res.Header, res.Body, http.StatusTooManyRequests, 129)
	if res.Status == http.StatusTooManyRequests {
		refused++
		ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > retryAfter {
			t.Fatalf("Retry-After %q half a second before the next token, want 1..%d", res.Header.Get("Retry-After"), retryAfter)
		}
		retryAfter = ra
	}
	time.Sleep(time.Until(answered.Add(time.Duration(retryAfter) * time.Second)))
	after := "a-after-retry"
	if res := push(subA, senderA, after); res.Status != http.StatusCreated {
		t.Fatalf("push after Retry-After %ds: %s", retryAfter, res)
	}
	accepted = append(accepted, after)

	// A's user agent receives exactly the accepted pushes, in log order:
	// a refused push written to the log would have come before the last.
	for _, want := range accepted {
		n, plain := uaA.nextFor(ctx, subA)
		if string(plain) != want {
			t.Fatalf("A's user agent received %q, want %q (a 429 must never be written)", plain, want)
		}
		uaA.ack(n)
	}
	for i := range quotaBurst {
		if _, plain := uaB.nextFor(ctx, subB); string(plain) != fmt.Sprintf("b-%d", i) {
			t.Fatalf("B's user agent received %q, want b-%d", plain, i)
		}
	}

	fams := opsScrape(t, s.HTTPURL+"/metrics")
	if v, ok := opsValue(fams, "pushlog_ingest_quota_refusals_total", map[string]string{"kind": "vapid"}); !ok || int(v) != refused {
		t.Errorf("pushlog_ingest_quota_refusals_total{kind=vapid} = %v (%v), want %d", v, ok, refused)
	}
	if v, ok := opsValue(fams, "pushlog_ingest_quota_refusals_total", map[string]string{"kind": "subscription"}); !ok || v != 0 {
		t.Errorf("pushlog_ingest_quota_refusals_total{kind=subscription} = %v (%v), want 0", v, ok)
	}
	if v, ok := opsValue(fams, "pushlog_ingest_requests_total", map[string]string{"status": "429", "errno": "129"}); !ok || int(v) != refused {
		t.Errorf("pushlog_ingest_requests_total{status=429,errno=129} = %v (%v), want %d", v, ok, refused)
	}
	keyHash := quotaKeyHash(t, senderA.Public)
	bucket := keyHash[:2]
	if logs := s.logs.String(); !strings.Contains(logs, "push over its quota") || !strings.Contains(logs, keyHash) {
		t.Errorf("no log line names the refused sender's vapid_key_hash %s", keyHash)
	}
	if v, ok := opsValue(fams, "pushlog_ingest_quota_sender_refusals_total", map[string]string{"kind": "vapid", "sender": bucket}); !ok || int(v) != refused {
		t.Errorf("pushlog_ingest_quota_sender_refusals_total{kind=vapid,sender=%q} = %v (%v), want %d", bucket, v, ok, refused)
	}
	if v, ok := opsValue(fams, "pushlog_ingest_quota_entries", map[string]string{"kind": "vapid"}); !ok || v < 2 {
		t.Errorf("pushlog_ingest_quota_entries{kind=vapid} = %v (%v), want at least the 2 senders", v, ok)
	}
}

// quotaRetryAfter is the Retry-After of a refusal e after the bucket's
// first push: the seconds until its next token, rounded up, at least 1.
func quotaRetryAfter(e time.Duration) int {
	wait := time.Duration(float64(time.Second)/quotaRate) - e
	return max(1, int(math.Ceil(wait.Seconds())))
}

// quotaKeyHash is the hex SHA-256 of a raw VAPID public key (the events'
// vapid_key_hash); its first two digits are the key's sender label.
func quotaKeyHash(t *testing.T, public string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(public, "="))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}
