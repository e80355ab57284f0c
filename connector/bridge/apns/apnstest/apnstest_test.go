package apnstest

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func providerToken(t *testing.T, s *Server, iat time.Time, mut func(jwt.MapClaims, *jwt.Token)) string {
	t.Helper()
	c := jwt.MapClaims{"iss": s.teamID, "iat": iat.Unix()}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = s.keyID
	if mut != nil {
		mut(c, tok)
	}
	str, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func h2(s *Server) *http.Client {
	t := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.RootCAs()}, Protocols: new(http.Protocols)}
	t.Protocols.SetHTTP2(true)
	return &http.Client{Transport: t}
}

const okPayload = `{"aps":{"alert":{"loc-key":"x"},"mutable-content":1},"chid":"c"}`

func TestStrict(t *testing.T) {
	s := New("org.example.app")
	defer s.Close()
	dev := s.DeviceToken()
	gone := s.DeviceToken()
	s.Unregister(gone)
	now := time.Now()
	good := providerToken(t, s, now, nil)
	hdr := func(kv ...string) map[string]string {
		m := map[string]string{"apns-topic": "org.example.app", "apns-push-type": "alert", "apns-priority": "10", "apns-expiration": "0"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	tests := []struct {
		name    string
		method  string
		device  string
		auth    string
		headers map[string]string
		body    string
		want    int
		reason  string
	}{
		{name: "valid", headers: hdr(), body: okPayload, want: 200},
		{name: "valid background 5", headers: hdr("apns-push-type", "background", "apns-priority", "5"), body: `{"aps":{"content-available":1}}`, want: 200},
		{name: "GET", method: "GET", headers: hdr(), want: 405, reason: "MethodNotAllowed"},
		{name: "no auth", auth: "-", headers: hdr(), body: okPayload, want: 403, reason: "MissingProviderToken"},
		{name: "wrong kid", auth: providerToken(t, s, now, func(_ jwt.MapClaims, tok *jwt.Token) { tok.Header["kid"] = "NOPE" }), headers: hdr(), body: okPayload, want: 403, reason: "InvalidProviderToken"},
		{name: "wrong team", auth: providerToken(t, s, now, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"] = "OTHER" }), headers: hdr(), body: okPayload, want: 403, reason: "InvalidProviderToken"},
		{name: "no iat", auth: providerToken(t, s, now, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "iat") }), headers: hdr(), body: okPayload, want: 403, reason: "InvalidProviderToken"},
		{name: "iat over an hour", auth: providerToken(t, s, now.Add(-61*time.Minute), nil), headers: hdr(), body: okPayload, want: 403, reason: "ExpiredProviderToken"},
		{name: "no topic", headers: hdr("apns-topic", ""), body: okPayload, want: 400, reason: "MissingTopic"},
		{name: "other topic", headers: hdr("apns-topic", "org.other"), body: okPayload, want: 400, reason: "TopicDisallowed"},
		{name: "no push type", headers: hdr("apns-push-type", ""), body: okPayload, want: 400, reason: "InvalidPushType"},
		{name: "priority 7", headers: hdr("apns-priority", "7"), body: okPayload, want: 400, reason: "BadPriority"},
		{name: "background 10", headers: hdr("apns-push-type", "background"), body: okPayload, want: 400, reason: "BadPriority"},
		{name: "expiration not a number", headers: hdr("apns-expiration", "tomorrow"), body: okPayload, want: 400, reason: "BadExpirationDate"},
		{name: "bad apns-id", headers: hdr("apns-id", "123"), body: okPayload, want: 400, reason: "BadMessageId"},
		{name: "long collapse id", headers: hdr("apns-collapse-id", strings.Repeat("x", 65)), body: okPayload, want: 400, reason: "BadCollapseId"},
		{name: "short token", device: "abcd", headers: hdr(), body: okPayload, want: 400, reason: "BadDeviceToken"},
		{name: "unknown token", device: strings.Repeat("0", 64), headers: hdr(), body: okPayload, want: 400, reason: "BadDeviceToken"},
		{name: "unregistered", device: gone, headers: hdr(), body: okPayload, want: 410, reason: "Unregistered"},
		{name: "empty", headers: hdr(), body: "", want: 400, reason: "PayloadEmpty"},
		{name: "not json", headers: hdr(), body: "{", want: 400, reason: "BadPayload"},
		{name: "no aps", headers: hdr(), body: `{"chid":"c"}`, want: 400, reason: "BadPayload"},
		{name: "alert without alert", headers: hdr(), body: `{"aps":{"mutable-content":1}}`, want: 400, reason: "BadPayload"},
		{name: "too large", headers: hdr(), body: `{"aps":{"alert":"x"},"b":"` + strings.Repeat("a", 4096) + `"}`, want: 413, reason: "PayloadTooLarge"},
	}
	for _, tt := range tests {
		device := cmpOr(tt.device, dev)
		req, _ := http.NewRequest(cmpOr(tt.method, "POST"), s.URL+"/3/device/"+device, strings.NewReader(tt.body))
		for k, v := range tt.headers {
			req.Header.Set(k, v)
		}
		switch tt.auth {
		case "":
			req.Header.Set("authorization", "bearer "+good)
		case "-":
		default:
			req.Header.Set("authorization", "bearer "+tt.auth)
		}
		resp, err := h2(s).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var out struct {
			Reason    string `json:"reason"`
			Timestamp int64  `json:"timestamp"`
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = json.Unmarshal(b, &out)
		if resp.StatusCode != tt.want || out.Reason != tt.reason || resp.Header.Get("apns-id") == "" {
			t.Errorf("%s: %d %s, want %d %s", tt.name, resp.StatusCode, b, tt.want, tt.reason)
		}
		if tt.want == 410 && out.Timestamp == 0 {
			t.Errorf("%s: 410 without timestamp", tt.name)
		}
	}
	if n := len(s.Received()); n != 2 {
		t.Errorf("received %d, want the 2 valid", n)
	}
}

func TestTooManyProviderTokenUpdates(t *testing.T) {
	s := New("org.example.app")
	defer s.Close()
	dev := s.DeviceToken()
	c := h2(s) // one client, one connection
	now := time.Now()
	post := func(iat time.Time) (int, string) {
		req, _ := http.NewRequest("POST", s.URL+"/3/device/"+dev, strings.NewReader(okPayload))
		req.Header.Set("authorization", "bearer "+providerToken(t, s, iat, nil))
		req.Header.Set("apns-topic", "org.example.app")
		req.Header.Set("apns-push-type", "alert")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Reason
	}
	if st, r := post(now.Add(-30 * time.Minute)); st != 200 {
		t.Fatalf("first token: %d %s", st, r)
	}
	if st, r := post(now.Add(-25 * time.Minute)); st != 429 || r != "TooManyProviderTokenUpdates" {
		t.Fatalf("token 5 minutes newer: %d %s", st, r)
	}
	if st, r := post(now); st != 200 {
		t.Fatalf("token 30 minutes newer: %d %s", st, r)
	}
	if n := s.ProviderTokens(); n != 2 {
		t.Fatalf("%d tokens counted", n)
	}
}
