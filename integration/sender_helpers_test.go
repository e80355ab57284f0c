package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"
)

// snVAPID is an application server key pair as webpush-go makes and takes
// it (base64url strings).
type snVAPID struct {
	Public, Private string
}

func snNewVAPID(t testing.TB) snVAPID {
	t.Helper()
	priv, pub, err := webpushgo.GenerateVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	return snVAPID{Public: pub, Private: priv}
}

// snCapture is an http.RoundTripper that keeps the exact body of every
// request it forwards, so a test can compare what webpush-go POSTed with
// what the user agent received.
type snCapture struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []snCaptured
}

type snCaptured struct {
	Method string
	Header http.Header
	Body   []byte
}

func (c *snCapture) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("capture request body: %w", err)
		}
		body = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.ContentLength = int64(len(b))
	}
	c.mu.Lock()
	c.reqs = append(c.reqs, snCaptured{Method: req.Method, Header: req.Header.Clone(), Body: body})
	c.mu.Unlock()
	return c.next.RoundTrip(req)
}

func (c *snCapture) last() snCaptured {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		return snCaptured{}
	}
	return c.reqs[len(c.reqs)-1]
}

// snResult is the push service's answer to one push, and the bytes sent.
type snResult struct {
	Status int
	Header http.Header
	Body   []byte
	Posted []byte // the exact request body webpush-go sent
}

func (r snResult) String() string {
	return fmt.Sprintf("%d %s", r.Status, strings.TrimSpace(string(r.Body)))
}

// snPush are the options of one webpush-go send; zero values keep
// webpush-go's defaults (TTL 0, no Topic, no Urgency).
type snPush struct {
	TTL     int
	Topic   string
	Urgency webpushgo.Urgency
	VAPID   snVAPID
}

// snSend sends plaintext to sub with webpush-go, unmodified: it encrypts
// (aes128gcm, padded to 4096 bytes) and signs with VAPID itself.
func snSend(ctx context.Context, t testing.TB, sub *uaSubscription, plaintext []byte, p snPush) snResult {
	t.Helper()
	res, err := snTrySend(ctx, sub, plaintext, p)
	if err != nil {
		t.Fatalf("webpush-go send: %v", err)
	}
	return res
}

func snTrySend(ctx context.Context, sub *uaSubscription, plaintext []byte, p snPush) (snResult, error) {
	var s webpushgo.Subscription
	if err := json.Unmarshal(sub.json(), &s); err != nil {
		return snResult{}, fmt.Errorf("subscription for webpush-go: %w", err)
	}
	capture := &snCapture{next: http.DefaultTransport}
	resp, err := webpushgo.SendNotificationWithContext(ctx, plaintext, &s, &webpushgo.Options{
		HTTPClient:      &http.Client{Transport: capture, Timeout: 30 * time.Second},
		Subscriber:      "integration@pushlog.example",
		VAPIDPublicKey:  p.VAPID.Public,
		VAPIDPrivateKey: p.VAPID.Private,
		TTL:             p.TTL,
		Topic:           p.Topic,
		Urgency:         p.Urgency,
	})
	if err != nil {
		return snResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return snResult{}, fmt.Errorf("read answer: %w", err)
	}
	return snResult{Status: resp.StatusCode, Header: resp.Header, Body: body, Posted: capture.last().Body}, nil
}

// snMustCreate sends and requires 201 Created with a Location and the TTL
// echoed.
func snMustCreate(ctx context.Context, t testing.TB, sub *uaSubscription, plaintext []byte, p snPush) snResult {
	t.Helper()
	res := snSend(ctx, t, sub, plaintext, p)
	if res.Status != http.StatusCreated {
		t.Fatalf("push %q: %s, want 201", plaintext, res)
	}
	if res.Header.Get("Location") == "" {
		t.Fatalf("push %q: 201 without Location", plaintext)
	}
	if got, want := res.Header.Get("TTL"), fmt.Sprint(p.TTL); got != want {
		t.Fatalf("push %q: TTL header %q, want %q", plaintext, got, want)
	}
	return res
}

// snSendUntil resends until the service answers status (the gone set is
// projected asynchronously) or ctx ends; it returns the last answer.
func snSendUntil(ctx context.Context, t testing.TB, sub *uaSubscription, p snPush, status int) snResult {
	t.Helper()
	for {
		res := snSend(ctx, t, sub, []byte("are you there?"), p)
		if res.Status == status {
			return res
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still %s, want %d: %v", res, status, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// snErrorBody is autopush's error JSON.
type snErrorBody struct {
	Code     *int    `json:"code"`
	Errno    *int    `json:"errno"`
	Error    *string `json:"error"`
	Message  *string `json:"message"`
	MoreInfo string  `json:"more_info"`
}

// snCheckError checks an error answer: status, errno (any when wantErrno
// is negative) and the autopush JSON shape with every required field.
func snCheckError(t testing.TB, what string, status int, header http.Header, body []byte, wantStatus, wantErrno int) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d (%s)", what, status, wantStatus, body)
		return
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var e snErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Errorf("%s: body is not JSON: %q", what, body)
		return
	}
	switch {
	case e.Code == nil || e.Errno == nil || e.Error == nil || e.Message == nil:
		t.Errorf("%s: body %s lacks code/errno/error/message", what, body)
	case *e.Code != wantStatus:
		t.Errorf("%s: code %d, want %d", what, *e.Code, wantStatus)
	case wantErrno >= 0 && *e.Errno != wantErrno:
		t.Errorf("%s: errno %d, want %d (%s)", what, *e.Errno, wantErrno, body)
	case *e.Error != http.StatusText(wantStatus):
		t.Errorf("%s: error %q, want %q", what, *e.Error, http.StatusText(wantStatus))
	case *e.Message == "":
		t.Errorf("%s: empty message", what)
	}
}
