package fcm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/bridge"
	"github.com/pushlog/pushlog/connector/bridge/fcm/fcmtest"
)

const device = "fcm-device-token-1"

// clock is a movable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newPair(t *testing.T) (*fcmtest.Server, *Client, *clock) {
	t.Helper()
	srv := fcmtest.New("pushlog-test")
	t.Cleanup(srv.Close)
	srv.Register(device)
	clk := &clock{t: time.Now()}
	c, err := New(Config{Credentials: srv.Credentials(), BaseURL: srv.URL, HTTPClient: srv.Client(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c, clk
}

func msg() bridge.Message {
	return bridge.Message{
		ChannelID: "0c5a4f6e-1f3b-4d2a-9c8e-0123456789ab", Version: "v1",
		Data: []byte{0xfb, 0xff, 0x00, 1, 2, 3}, Encoding: "aes128gcm",
		TTL: 90*time.Second + 700*time.Millisecond, Urgency: "high", Topic: "news",
	}
}

func TestSend(t *testing.T) {
	legacy := msg()
	legacy.Encoding, legacy.Encryption, legacy.CryptoKey = "aesgcm", "salt=abc", "dh=def"
	noData := msg()
	noData.Data, noData.Urgency, noData.Topic, noData.TTL = nil, "", "", 0
	tests := []struct {
		name     string
		token    string
		m        bridge.Message
		fault    *fcmtest.Fault
		want     bridge.Result
		wantData map[string]string
		wantPrio string
		wantTTL  string
	}{
		{name: "delivered", token: device, m: msg(), want: bridge.Result{Outcome: bridge.Delivered, Status: 200},
			wantData: map[string]string{"chid": msg().ChannelID, "body": "-_8AAQID", "con": "aes128gcm"}, wantPrio: "HIGH", wantTTL: "90s"},
		{name: "legacy aesgcm headers", token: device, m: legacy, want: bridge.Result{Outcome: bridge.Delivered, Status: 200},
			wantData: map[string]string{"chid": msg().ChannelID, "body": "-_8AAQID", "con": "aesgcm", "enc": "salt=abc", "cryptokey": "dh=def"}, wantPrio: "HIGH", wantTTL: "90s"},
		{name: "no data, normal urgency, ttl 0", token: device, m: noData, want: bridge.Result{Outcome: bridge.Delivered, Status: 200},
			wantData: map[string]string{"chid": msg().ChannelID}, wantPrio: "NORMAL", wantTTL: "0s"},
		{name: "unknown token", token: "never-registered", m: msg(), want: bridge.Result{Outcome: bridge.Gone, Reason: "UNREGISTERED", Status: 404}},
		{name: "malformed token", token: "not a token", m: msg(), want: bridge.Result{Outcome: bridge.Gone, Reason: "INVALID_TOKEN", Status: 400}},
		{name: "no token", token: "", m: msg(), want: bridge.Result{Outcome: bridge.Gone, Reason: "no_token"}},
		{name: "429 retry-after", token: device, m: msg(), fault: &fcmtest.Fault{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "30"},
			want: bridge.Result{Outcome: bridge.Retry, RetryAfter: 30 * time.Second, Reason: "QUOTA_EXCEEDED", Status: 429}},
		{name: "503", token: device, m: msg(), fault: &fcmtest.Fault{Status: 503, Code: "UNAVAILABLE"},
			want: bridge.Result{Outcome: bridge.Retry, Reason: "UNAVAILABLE", Status: 503}},
		{name: "500", token: device, m: msg(), fault: &fcmtest.Fault{Status: 500, Code: "INTERNAL", RetryAfter: "5"},
			want: bridge.Result{Outcome: bridge.Retry, RetryAfter: 5 * time.Second, Reason: "INTERNAL", Status: 500}},
		{name: "403 sender mismatch", token: device, m: msg(), fault: &fcmtest.Fault{Status: 403, Code: "SENDER_ID_MISMATCH"},
			// Issue 14: the app's project is at fault, not the message (was Failed).
			want: bridge.Result{Outcome: bridge.Retry, Reason: "SENDER_ID_MISMATCH", Status: 403, Unavailable: true}},
		{name: "too big", token: device, m: bridge.Message{ChannelID: "c", Data: make([]byte, 3100)},
			want: bridge.Result{Outcome: bridge.Failed, Reason: "too_big"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c, _ := newPair(t)
			if tt.fault != nil {
				srv.Fail(*tt.fault)
			}
			got := c.Send(t.Context(), tt.token, tt.m)
			if got != tt.want {
				t.Fatalf("Send = %+v, want %+v (server refused: %q)", got, tt.want, srv.Rejected())
			}
			rec := srv.Received()
			if tt.wantData == nil {
				if len(rec) != 0 {
					t.Fatalf("server received %d messages, want none", len(rec))
				}
				return
			}
			if len(rec) != 1 {
				t.Fatalf("server received %d messages, want 1 (refused: %q)", len(rec), srv.Rejected())
			}
			r := rec[0]
			if r.Token != tt.token || r.Priority != tt.wantPrio || r.TTL != tt.wantTTL || r.CollapseKey != tt.m.Topic {
				t.Errorf("received %+v", r)
			}
			if len(r.Data) != len(tt.wantData) {
				t.Errorf("data %v, want %v", r.Data, tt.wantData)
			}
			for k, v := range tt.wantData {
				if r.Data[k] != v {
					t.Errorf("data[%s] = %q, want %q", k, r.Data[k], v)
				}
			}
			if b, ok := r.Data["body"]; ok {
				if raw, err := base64.RawURLEncoding.DecodeString(b); err != nil || string(raw) != string(tt.m.Data) {
					t.Errorf("body %q does not decode to the data", b)
				}
			}
		})
	}
}

func TestAccessTokenCachedAndRefreshed(t *testing.T) {
	srv, c, clk := newPair(t)
	ctx := t.Context()
	for range 3 {
		if r := c.Send(ctx, device, msg()); r.Outcome != bridge.Delivered {
			t.Fatalf("send: %+v", r)
		}
	}
	if n := srv.TokensIssued(); n != 1 {
		t.Fatalf("%d tokens for 3 sends, want 1 (cached)", n)
	}
	// Within the margin of expiry (an hour, less 5 minutes): a new one.
	clk.add(56 * time.Minute)
	if r := c.Send(ctx, device, msg()); r.Outcome != bridge.Delivered {
		t.Fatalf("send: %+v", r)
	}
	if n := srv.TokensIssued(); n != 2 {
		t.Fatalf("%d tokens after the margin, want 2", n)
	}
	// Back to real time: token expiries come from the real clock.
	clk.add(-56 * time.Minute)
	// Revoked server side: 401, one refresh, delivered.
	srv.RevokeTokens()
	if r := c.Send(ctx, device, msg()); r.Outcome != bridge.Delivered {
		t.Fatalf("send after revocation: %+v", r)
	}
	if n := srv.TokensIssued(); n != 3 {
		t.Fatalf("%d tokens after revocation, want 3", n)
	}
	// 401 twice: refreshed once, then Retry, Unavailable (issue 14; was Failed).
	srv.Fail(fcmtest.Fault{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR"}, fcmtest.Fault{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR"})
	r := c.Send(ctx, device, msg())
	if r.Outcome != bridge.Retry || !r.Unavailable || r.Status != 401 {
		t.Fatalf("two 401s: %+v", r)
	}
	if n := srv.TokensIssued(); n != 4 {
		t.Fatalf("%d tokens after two 401s, want 4 (exactly one refresh)", n)
	}
}

func TestTokenEndpointFailures(t *testing.T) {
	t.Run("unavailable", func(t *testing.T) {
		srv, c, _ := newPair(t)
		srv.FailToken(fcmtest.Fault{Status: 503, RetryAfter: "12"})
		r := c.Send(t.Context(), device, msg())
		if r.Outcome != bridge.Retry || r.RetryAfter != 12*time.Second || r.Reason != "oauth_unavailable" {
			t.Fatalf("%+v", r)
		}
		if r := c.Send(t.Context(), device, msg()); r.Outcome != bridge.Delivered {
			t.Fatalf("after recovery: %+v", r)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		srv, _, _ := newPair(t)
		other := fcmtest.New("pushlog-test")
		defer other.Close()
		c, err := New(Config{Credentials: other.Credentials(), TokenURL: srv.TokenURL(), BaseURL: srv.URL, HTTPClient: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		r := c.Send(t.Context(), device, msg())
		if r.Outcome != bridge.Retry || !r.Unavailable || r.Reason != "oauth_refused" || r.Status != 400 {
			t.Fatalf("%+v", r)
		}
		if len(srv.Received()) != 0 {
			t.Fatal("sent without a token")
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		srv, c, _ := newPair(t)
		srv.Close()
		if r := c.Send(t.Context(), device, msg()); r.Outcome != bridge.Retry || r.Reason != "oauth_unreachable" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("send unreachable", func(t *testing.T) {
		srv, c, _ := newPair(t)
		if r := c.Send(t.Context(), device, msg()); r.Outcome != bridge.Delivered {
			t.Fatal(r)
		}
		srv.Close()
		if r := c.Send(t.Context(), device, msg()); r.Outcome != bridge.Retry || r.Reason != "unreachable" {
			t.Fatalf("%+v", r)
		}
	})
}

func TestNewRejects(t *testing.T) {
	srv := fcmtest.New("p")
	defer srv.Close()
	var key map[string]string
	_ = json.Unmarshal(srv.Credentials(), &key)
	mut := func(k, v string) []byte {
		m := map[string]string{}
		for a, b := range key {
			m[a] = b
		}
		m[k] = v
		b, _ := json.Marshal(m)
		return b
	}
	for name, cfg := range map[string]Config{
		"not json":      {Credentials: []byte("{")},
		"wrong type":    {Credentials: mut("type", "authorized_user")},
		"bad key":       {Credentials: mut("private_key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
		"bad project":   {Credentials: mut("project_id", "a/b")},
		"no project":    {Credentials: mut("project_id", "")},
		"bad base URL":  {Credentials: srv.Credentials(), BaseURL: "fcm.googleapis.com"},
		"bad token URL": {Credentials: srv.Credentials(), TokenURL: "/token"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := New(Config{Credentials: srv.Credentials()})
	if err != nil {
		t.Fatal(err)
	}
	if c.send != DefaultBaseURL+"/v1/projects/p/messages:send" || c.jwt.TokenURL != srv.TokenURL() {
		t.Errorf("defaults: %s %s", c.send, c.jwt.TokenURL)
	}
}

func TestMapping(t *testing.T) {
	for in, want := range map[time.Duration]string{0: "0s", -time.Second: "0s", 1500 * time.Millisecond: "1s", time.Hour: "3600s", 60 * 24 * time.Hour: "2419200s"} {
		if got := TTLString(in); got != want {
			t.Errorf("TTLString(%v) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{"high": "HIGH", "normal": "NORMAL", "low": "NORMAL", "very-low": "NORMAL", "": "NORMAL"} {
		if got := Priority(in); got != want {
			t.Errorf("Priority(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	c := &Client{}
	if c.MaxPayload() != 4096 {
		t.Fatal(c.MaxPayload())
	}
	// 3100 raw bytes are 4134 in base64url; with chid and con past 4096.
	for n, ok := range map[int]bool{0: true, 2900: true, 3100: false} {
		err := c.Check(bridge.Message{ChannelID: "0c5a4f6e-1f3b-4d2a-9c8e-0123456789ab", Encoding: "aes128gcm", Data: make([]byte, n)})
		if (err == nil) != ok {
			t.Errorf("Check(%d bytes) = %v", n, err)
		}
	}
}

func TestClassify(t *testing.T) {
	now := time.Now()
	h := func(kv ...string) http.Header {
		x := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			x.Set(kv[i], kv[i+1])
		}
		return x
	}
	tests := []struct {
		status int
		h      http.Header
		body   string
		want   bridge.Result
	}{
		{200, nil, `{"name":"x"}`, bridge.Result{Outcome: bridge.Delivered, Status: 200}},
		{404, nil, `{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}`, bridge.Result{Outcome: bridge.Gone, Reason: "UNREGISTERED", Status: 404}},
		{404, nil, ``, bridge.Result{Outcome: bridge.Gone, Reason: "UNREGISTERED", Status: 404}},
		{400, nil, `{"error":{"status":"INVALID_ARGUMENT","details":[{"errorCode":"UNREGISTERED"}]}}`, bridge.Result{Outcome: bridge.Gone, Reason: "UNREGISTERED", Status: 400}},
		{400, nil, `{"error":{"status":"INVALID_ARGUMENT","message":"The registration token is not a valid FCM registration token"}}`, bridge.Result{Outcome: bridge.Gone, Reason: "INVALID_TOKEN", Status: 400}},
		{400, nil, `{"error":{"status":"INVALID_ARGUMENT","details":[{"errorCode":"INVALID_ARGUMENT"},{"fieldViolations":[{"field":"message.token"}]}]}}`, bridge.Result{Outcome: bridge.Gone, Reason: "INVALID_TOKEN", Status: 400}},
		{400, nil, `{"error":{"status":"INVALID_ARGUMENT","message":"Message is too big","details":[{"errorCode":"INVALID_ARGUMENT"}]}}`, bridge.Result{Outcome: bridge.Failed, Reason: "INVALID_ARGUMENT", Status: 400}},
		// Credentials/project refused: Retry, Unavailable (issue 14; was Failed).
		{401, nil, `{"error":{"status":"UNAUTHENTICATED"}}`, bridge.Result{Outcome: bridge.Retry, Reason: "UNAUTHENTICATED", Status: 401, Unavailable: true}},
		{403, nil, `{"error":{"status":"PERMISSION_DENIED"}}`, bridge.Result{Outcome: bridge.Retry, Reason: "PERMISSION_DENIED", Status: 403, Unavailable: true}},
		{429, h("Retry-After", "60"), `{"error":{"details":[{"errorCode":"QUOTA_EXCEEDED"}]}}`, bridge.Result{Outcome: bridge.Retry, RetryAfter: time.Minute, Reason: "QUOTA_EXCEEDED", Status: 429}},
		{502, nil, `<html>bad gateway</html>`, bridge.Result{Outcome: bridge.Retry, Reason: "http_502", Status: 502}},
		{503, h("Retry-After", "junk"), `{"error":{"status":"unavailable; drop table"}}`, bridge.Result{Outcome: bridge.Retry, Reason: "http_503", Status: 503}},
		{418, nil, `null`, bridge.Result{Outcome: bridge.Failed, Reason: "http_418", Status: 418}},
		{400, nil, `{"error":{"status":"` + strings.Repeat("A", 41) + `"}}`, bridge.Result{Outcome: bridge.Failed, Reason: "http_400", Status: 400}},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.h, []byte(tt.body), now); got != tt.want {
			t.Errorf("Classify(%d, %s) = %+v, want %+v", tt.status, tt.body, got, tt.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(404, "", `{"error":{"details":[{"errorCode":"UNREGISTERED"}]}}`)
	f.Add(400, "", `{"error":{"message":"registration token","details":[{"fieldViolations":[{"field":"message.token"}]}]}}`)
	f.Add(429, "30", `{}`)
	f.Add(503, "Sun, 06 Dec 2026 06:01:30 GMT", `[`)
	now := time.Now()
	f.Fuzz(func(t *testing.T, status int, retryAfter, body string) {
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		r := Classify(status, h, []byte(body), now)
		if r.Outcome < bridge.Delivered || r.Outcome > bridge.Failed || r.RetryAfter < 0 || r.RetryAfter > bridge.MaxRetryAfter {
			t.Fatalf("%+v", r)
		}
		if len(r.Reason) > 40 {
			t.Fatalf("unbounded reason %q", r.Reason)
		}
		if r.Outcome == bridge.Delivered && (status < 200 || status > 299) {
			t.Fatalf("delivered on %d", status)
		}
	})
}

func TestConcurrentSendsShareOneToken(t *testing.T) {
	srv, c, _ := newPair(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if r := c.Send(context.WithoutCancel(t.Context()), device, msg()); r.Outcome != bridge.Delivered {
				t.Error(r)
			}
		})
	}
	wg.Wait()
	if n := srv.TokensIssued(); n != 1 {
		t.Fatalf("%d tokens for concurrent sends", n)
	}
}

func TestCanceled(t *testing.T) {
	_, c, _ := newPair(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if r := c.Send(ctx, device, msg()); r.Outcome != bridge.Retry || r.Reason != "canceled" {
		t.Fatalf("%+v", r)
	}
}
