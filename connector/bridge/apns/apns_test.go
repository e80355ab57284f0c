package apns

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/bridge"
	"github.com/pushlog/pushlog/connector/bridge/apns/apnstest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const bundle = "org.mozilla.ios.Firefox"

func newPair(t *testing.T) (*apnstest.Server, *Client, *clock) {
	t.Helper()
	srv := apnstest.New(bundle)
	t.Cleanup(srv.Close)
	clk := &clock{t: time.Now()}
	srv.SetNow(clk.now)
	c, err := New(Config{Key: srv.Key(), KeyID: srv.KeyID(), TeamID: srv.TeamID(), Topic: bundle, BaseURL: srv.URL, RootCAs: srv.RootCAs(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c, clk
}

func msg() bridge.Message {
	return bridge.Message{
		ChannelID: "0c5a4f6e-1f3b-4d2a-9c8e-0123456789ab", Version: "gAAAAAB-msg-id",
		Data: []byte{0xfb, 0xff, 0x00, 1, 2, 3}, Encoding: "aes128gcm",
		TTL: time.Hour, Urgency: "high", Topic: "news",
	}
}

func TestSend(t *testing.T) {
	legacy := msg()
	legacy.Encoding, legacy.Encryption, legacy.CryptoKey, legacy.Urgency, legacy.Topic = "aesgcm", "salt=abc", "dh=def", "normal", ""
	noData := msg()
	noData.Data, noData.TTL, noData.Urgency = nil, 0, "low"
	tests := []struct {
		name      string
		device    string // "known", "unknown", "gone", or a literal token
		m         bridge.Message
		fault     *apnstest.Fault
		want      bridge.Result
		wantExtra map[string]any // payload keys beside aps
		wantPrio  string
		wantExp   string // "ttl" = now+TTL
	}{
		{name: "delivered", device: "known", m: msg(), want: bridge.Result{Outcome: bridge.Delivered, Status: 200},
			wantExtra: map[string]any{"chid": msg().ChannelID, "ver": msg().Version, "body": "-_8AAQID", "con": "aes128gcm"}, wantPrio: "10", wantExp: "ttl"},
		{name: "legacy headers, normal urgency", device: "known", m: legacy, want: bridge.Result{Outcome: bridge.Delivered, Status: 200},
			wantExtra: map[string]any{"chid": msg().ChannelID, "ver": msg().Version, "body": "-_8AAQID", "con": "aesgcm", "enc": "salt=abc", "cryptokey": "dh=def"}, wantPrio: "5", wantExp: "ttl"},
		{name: "no data, ttl 0", device: "known", m: noData, want: bridge.Result{Outcome: bridge.Delivered, Status: 200},
			wantExtra: map[string]any{"chid": msg().ChannelID, "ver": msg().Version}, wantPrio: "5", wantExp: "0"},
		{name: "unregistered", device: "gone", m: msg(), want: bridge.Result{Outcome: bridge.Gone, Reason: "Unregistered", Status: 410}},
		{name: "unknown token", device: "unknown", m: msg(), want: bridge.Result{Outcome: bridge.Gone, Reason: "BadDeviceToken", Status: 400}},
		{name: "malformed token never sent", device: "../../x", m: msg(), want: bridge.Result{Outcome: bridge.Gone, Reason: "BadDeviceToken"}},
		{name: "429", device: "known", m: msg(), fault: &apnstest.Fault{Status: 429, Reason: "TooManyRequests", RetryAfter: "20"},
			want: bridge.Result{Outcome: bridge.Retry, RetryAfter: 20 * time.Second, Reason: "TooManyRequests", Status: 429}},
		{name: "500", device: "known", m: msg(), fault: &apnstest.Fault{Status: 500, Reason: "InternalServerError"},
			want: bridge.Result{Outcome: bridge.Retry, Reason: "InternalServerError", Status: 500}},
		{name: "503", device: "known", m: msg(), fault: &apnstest.Fault{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "3"},
			want: bridge.Result{Outcome: bridge.Retry, RetryAfter: 3 * time.Second, Reason: "ServiceUnavailable", Status: 503}},
		{name: "not for topic", device: "known", m: msg(), fault: &apnstest.Fault{Status: 400, Reason: "DeviceTokenNotForTopic"},
			want: bridge.Result{Outcome: bridge.Failed, Reason: "DeviceTokenNotForTopic", Status: 400}},
		{name: "too big", device: "known", m: bridge.Message{ChannelID: "c", Data: make([]byte, 3000)},
			want: bridge.Result{Outcome: bridge.Failed, Reason: "too_big"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c, clk := newPair(t)
			token := tt.device
			switch tt.device {
			case "known":
				token = srv.DeviceToken()
			case "unknown":
				token = strings.Repeat("ab", 32)
			case "gone":
				token = srv.DeviceToken()
				srv.Unregister(token)
			}
			if tt.fault != nil {
				srv.Fail(*tt.fault)
			}
			got := c.Send(t.Context(), token, tt.m)
			if got != tt.want {
				t.Fatalf("Send = %+v, want %+v (refused: %q)", got, tt.want, srv.Rejected())
			}
			rec := srv.Received()
			if tt.wantExtra == nil {
				if len(rec) != 0 {
					t.Fatalf("received %d, want none", len(rec))
				}
				return
			}
			if len(rec) != 1 {
				t.Fatalf("received %d, want 1 (refused: %q)", len(rec), srv.Rejected())
			}
			r := rec[0]
			wantExp := tt.wantExp
			if wantExp == "ttl" {
				wantExp = strconv.FormatInt(clk.now().Add(tt.m.TTL).Unix(), 10)
			}
			if r.Token != token || r.Topic != bundle || r.PushType != "alert" || r.Priority != tt.wantPrio || r.Expiration != wantExp || r.CollapseID != tt.m.Topic {
				t.Errorf("received %+v; want priority %s expiration %s", r, tt.wantPrio, wantExp)
			}
			aps, _ := r.Payload["aps"].(map[string]any)
			alert, _ := aps["alert"].(map[string]any)
			if aps["mutable-content"] != float64(1) || alert["title-loc-key"] != "SentTab.NoTabArrivingNotification.title" || alert["loc-key"] != "SentTab.NoTabArrivingNotification.body" {
				t.Errorf("aps %v", aps)
			}
			if len(r.Payload) != len(tt.wantExtra)+1 {
				t.Errorf("payload %v, want aps + %v", r.Payload, tt.wantExtra)
			}
			for k, v := range tt.wantExtra {
				if r.Payload[k] != v {
					t.Errorf("payload[%s] = %v, want %v", k, r.Payload[k], v)
				}
			}
			if b, ok := r.Payload["body"].(string); ok {
				if raw, err := base64.RawURLEncoding.DecodeString(b); err != nil || string(raw) != string(tt.m.Data) {
					t.Errorf("body %q", b)
				}
			}
		})
	}
}

func TestProviderToken(t *testing.T) {
	srv, c, clk := newPair(t)
	dev := srv.DeviceToken()
	send := func(want bridge.Outcome) bridge.Result {
		t.Helper()
		r := c.Send(t.Context(), dev, msg())
		if r.Outcome != want {
			t.Fatalf("send: %+v, want %v (refused: %q)", r, want, srv.Rejected())
		}
		return r
	}
	send(bridge.Delivered)
	clk.add(30 * time.Minute)
	send(bridge.Delivered)
	if n := srv.ProviderTokens(); n != 1 {
		t.Fatalf("%d provider tokens within 30 minutes, want 1", n)
	}
	// At 50 minutes a new token, accepted (more than 20 minutes later).
	clk.add(21 * time.Minute)
	send(bridge.Delivered)
	if n := srv.ProviderTokens(); n != 2 {
		t.Fatalf("%d provider tokens after 51 minutes, want 2", n)
	}
	// APNs says our token expired: signed again once, retried, delivered.
	srv.Fail(apnstest.Fault{Status: 403, Reason: "ExpiredProviderToken"})
	send(bridge.Delivered)
	// Twice: a configuration problem, Retry and Unavailable (issue 14: the
	// app's breaker opens and the message waits; it used to be Failed).
	srv.Fail(apnstest.Fault{Status: 403, Reason: "InvalidProviderToken"}, apnstest.Fault{Status: 403, Reason: "InvalidProviderToken"})
	if r := send(bridge.Retry); r.Reason != "InvalidProviderToken" || !r.Unavailable {
		t.Fatal(r)
	}
	// A token Apple finds over an hour old (clocks apart): refused, Retry
	// and Unavailable (a clock to fix, not the message's fault).
	srv.SetNow(func() time.Time { return clk.now().Add(2 * time.Hour) })
	if r := send(bridge.Retry); r.Reason != "ExpiredProviderToken" || r.Status != 403 || !r.Unavailable {
		t.Fatal(r)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	srv, _, _ := newPair(t)
	other := apnstest.New(bundle)
	defer other.Close()
	c, err := New(Config{Key: other.Key(), KeyID: srv.KeyID(), TeamID: srv.TeamID(), Topic: bundle, BaseURL: srv.URL, RootCAs: srv.RootCAs()})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Send(t.Context(), srv.DeviceToken(), msg()); r.Outcome != bridge.Retry || !r.Unavailable || r.Reason != "InvalidProviderToken" {
		t.Fatalf("%+v", r)
	}
	c, _ = New(Config{Key: srv.Key(), KeyID: srv.KeyID(), TeamID: srv.TeamID(), Topic: "org.example.other", BaseURL: srv.URL, RootCAs: srv.RootCAs()})
	if r := c.Send(t.Context(), srv.DeviceToken(), msg()); r.Outcome != bridge.Retry || !r.Unavailable || r.Reason != "TopicDisallowed" {
		t.Fatalf("%+v", r)
	}
}

func TestUnreachable(t *testing.T) {
	srv, c, _ := newPair(t)
	dev := srv.DeviceToken()
	srv.Close()
	if r := c.Send(t.Context(), dev, msg()); r.Outcome != bridge.Retry || r.Reason != "unreachable" {
		t.Fatalf("%+v", r)
	}
}

func TestServerRefusesHTTP1(t *testing.T) {
	srv, _, _ := newPair(t)
	dev := srv.DeviceToken()
	for name, proto := range map[string][]string{"alpn http/1.1": {"http/1.1"}, "no alpn": nil} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.RootCAs(), NextProtos: proto}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		resp, err := (&http.Client{Transport: tr}).Post(srv.URL+"/3/device/"+dev, "application/json", strings.NewReader(`{"aps":{}}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusHTTPVersionNotSupported {
				t.Errorf("%s: HTTP/1.1 answered %d", name, resp.StatusCode)
			}
		}
	}
}

func TestNewRejects(t *testing.T) {
	srv := apnstest.New(bundle)
	defer srv.Close()
	ok := Config{Key: srv.Key(), KeyID: "K", TeamID: "T", Topic: bundle}
	for name, mut := range map[string]func(*Config){
		"no key":    func(c *Config) { c.Key = nil },
		"bad key":   func(c *Config) { c.Key = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") },
		"no key id": func(c *Config) { c.KeyID = "" },
		"no team":   func(c *Config) { c.TeamID = "" },
		"no topic":  func(c *Config) { c.Topic = "" },
		"http base": func(c *Config) { c.BaseURL = "http://api.push.apple.com" },
		"relative":  func(c *Config) { c.BaseURL = "api.push.apple.com" },
	} {
		c := ok
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.base != DefaultBaseURL || c.refresh != DefaultTokenRefresh {
		t.Errorf("defaults %s %v", c.base, c.refresh)
	}
	for in, want := range map[time.Duration]time.Duration{time.Minute: 20 * time.Minute, 2 * time.Hour: 55 * time.Minute, 30 * time.Minute: 30 * time.Minute} {
		cfg := ok
		cfg.TokenRefresh = in
		if c, _ := New(cfg); c.refresh != want {
			t.Errorf("TokenRefresh %v -> %v, want %v", in, c.refresh, want)
		}
	}
}

func TestMapping(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for in, want := range map[time.Duration]string{0: "0", -time.Second: "0", 500 * time.Millisecond: "0", time.Second: "1800000001", time.Hour: "1800003600"} {
		if got := Expiration(in, now); got != want {
			t.Errorf("Expiration(%v) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{"high": "10", "normal": "5", "low": "5", "very-low": "5", "": "5"} {
		if got := Priority(in); got != want {
			t.Errorf("Priority(%q) = %s, want %s", in, got, want)
		}
	}
	c := &Client{}
	for n, ok := range map[int]bool{0: true, 2800: true, 3000: false} {
		if err := c.Check(bridge.Message{ChannelID: msg().ChannelID, Version: msg().Version, Encoding: "aes128gcm", Data: make([]byte, n)}); (err == nil) != ok {
			t.Errorf("Check(%d bytes) = %v", n, err)
		}
	}
}

func TestClassify(t *testing.T) {
	now := time.Now()
	ra := http.Header{"Retry-After": {"9"}}
	tests := []struct {
		status int
		h      http.Header
		body   string
		want   bridge.Result
	}{
		{200, nil, ``, bridge.Result{Outcome: bridge.Delivered, Status: 200}},
		{410, nil, `{"reason":"Unregistered","timestamp":1}`, bridge.Result{Outcome: bridge.Gone, Reason: "Unregistered", Status: 410}},
		{410, nil, `garbage`, bridge.Result{Outcome: bridge.Gone, Reason: "http_410", Status: 410}},
		{400, nil, `{"reason":"BadDeviceToken"}`, bridge.Result{Outcome: bridge.Gone, Reason: "BadDeviceToken", Status: 400}},
		{400, nil, `{"reason":"DeviceTokenNotForTopic"}`, bridge.Result{Outcome: bridge.Failed, Reason: "DeviceTokenNotForTopic", Status: 400}},
		{400, nil, `{"reason":"BadPriority"}`, bridge.Result{Outcome: bridge.Failed, Reason: "BadPriority", Status: 400}},
		// Credentials/configuration: Retry, Unavailable (issue 14; was Failed).
		{403, nil, `{"reason":"ExpiredProviderToken"}`, bridge.Result{Outcome: bridge.Retry, Reason: "ExpiredProviderToken", Status: 403, Unavailable: true}},
		{403, nil, `{"reason":"BadCertificate"}`, bridge.Result{Outcome: bridge.Retry, Reason: "BadCertificate", Status: 403, Unavailable: true}},
		{400, nil, `{"reason":"TopicDisallowed"}`, bridge.Result{Outcome: bridge.Retry, Reason: "TopicDisallowed", Status: 400, Unavailable: true}},
		{413, nil, `{"reason":"PayloadTooLarge"}`, bridge.Result{Outcome: bridge.Failed, Reason: "PayloadTooLarge", Status: 413}},
		{429, ra, `{"reason":"TooManyRequests"}`, bridge.Result{Outcome: bridge.Retry, RetryAfter: 9 * time.Second, Reason: "TooManyRequests", Status: 429}},
		{500, nil, `{"reason":"InternalServerError"}`, bridge.Result{Outcome: bridge.Retry, Reason: "InternalServerError", Status: 500}},
		{503, nil, `{"reason":"Shutdown"}`, bridge.Result{Outcome: bridge.Retry, Reason: "Shutdown", Status: 503}},
		{400, nil, `{"reason":"drop table; --"}`, bridge.Result{Outcome: bridge.Failed, Reason: "http_400", Status: 400}},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.h, []byte(tt.body), now); got != tt.want {
			t.Errorf("Classify(%d, %s) = %+v, want %+v", tt.status, tt.body, got, tt.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(410, "", `{"reason":"Unregistered","timestamp":12}`)
	f.Add(400, "", `{"reason":"BadDeviceToken"}`)
	f.Add(429, "30", `{"reason":"TooManyRequests"}`)
	f.Add(503, "Sun, 06 Dec 2026 06:01:30 GMT", `{`)
	now := time.Now()
	f.Fuzz(func(t *testing.T, status int, retryAfter, body string) {
		r := Classify(status, http.Header{"Retry-After": {retryAfter}}, []byte(body), now)
		if r.Outcome < bridge.Delivered || r.Outcome > bridge.Failed || r.RetryAfter < 0 || r.RetryAfter > bridge.MaxRetryAfter || len(r.Reason) > 40 {
			t.Fatalf("%+v", r)
		}
		if r.Outcome == bridge.Delivered && status != 200 {
			t.Fatalf("delivered on %d", status)
		}
	})
}

func TestCanceled(t *testing.T) {
	srv, c, _ := newPair(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if r := c.Send(ctx, srv.DeviceToken(), msg()); r.Outcome != bridge.Retry || r.Reason != "canceled" {
		t.Fatalf("%+v", r)
	}
}

// TestSendRegisteredAps: a device that registered its own aps dictionary
// gets it instead of the default alert, the rest of the payload unchanged.
func TestSendRegisteredAps(t *testing.T) {
	srv, c, _ := newPair(t)
	m := msg()
	m.Aps = `{"alert":{"title":"custom"},"mutable-content":1,"sound":"ping.aiff"}`
	if got := c.Send(t.Context(), srv.DeviceToken(), m); got.Outcome != bridge.Delivered {
		t.Fatalf("Send = %+v (refused: %q)", got, srv.Rejected())
	}
	rec := srv.Received()
	if len(rec) != 1 {
		t.Fatalf("received %d, want 1", len(rec))
	}
	aps, _ := rec[0].Payload["aps"].(map[string]any)
	alert, _ := aps["alert"].(map[string]any)
	if alert["title"] != "custom" || aps["sound"] != "ping.aiff" || aps["mutable-content"] != float64(1) || alert["loc-key"] != nil {
		t.Fatalf("aps %v, want the registered one", aps)
	}
	if rec[0].Payload["chid"] != m.ChannelID || rec[0].Payload["ver"] != m.Version {
		t.Fatalf("payload %v", rec[0].Payload)
	}
}
