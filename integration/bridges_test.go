package integration

// Mobile bridges end to end (issue 14): the built binary with an FCM app
// pointed at the strict local FCM v1 server (connector/bridge/fcm/fcmtest:
// HTTPS, OAuth service-account flow, strict message JSON). A device
// registers over autopush's registration API, a sender pushes with npm
// web-push, and the bridge receives exactly the expected request; a dead
// token answers 410 to the next push; a 429 with Retry-After is retried
// and delivered; a message whose TTL ends while FCM is down is Expired and
// never sent late.

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/bridge/apns/apnstest"
	"github.com/pushlog/pushlog/connector/bridge/fcm/fcmtest"
)

const bridgeAuthKey = "integration-bridge-auth-key-0123456789"

type bridgeRegistration struct {
	UAID      string `json:"uaid"`
	ChannelID string `json:"channelID"`
	Endpoint  string `json:"endpoint"`
	Secret    string `json:"secret"`
}

// bridgeEnv is pushlog (TLS push API) with the FCM app "fenix" served by a
// local fcmtest server.
type bridgeEnv struct {
	t   *testing.T
	ca  *senderCA
	fcm *fcmtest.Server
	s   *server
	hc  *http.Client
}

func newBridgeEnv(t *testing.T) *bridgeEnv {
	t.Helper()
	senderNodeModules(t)
	fcm := fcmtest.New("pushlog-it")
	t.Cleanup(fcm.Close)
	dir := t.TempDir()
	creds, caFile := filepath.Join(dir, "sa.json"), filepath.Join(dir, "fcm-ca.pem")
	if err := os.WriteFile(creds, fcm.Credentials(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, fcm.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := senderNewCA(t)
	s := senderStartTLSServer(t, ca,
		`PUSHLOG_FCM_APPS={"fenix": {"credentials": "`+creds+`"}}`,
		"PUSHLOG_FCM_BASE_URL="+fcm.URL,
		"PUSHLOG_FCM_TOKEN_URL="+fcm.TokenURL(),
		"PUSHLOG_BRIDGE_CA_FILE="+caFile,
		"PUSHLOG_BRIDGE_AUTH_KEYS="+bridgeAuthKey,
		"PUSHLOG_BRIDGE_BREAKER_OPEN=1s",
		"PUSHLOG_BRIDGE_RETRY_MAX=1s",
	)
	return &bridgeEnv{t: t, ca: ca, fcm: fcm, s: s, hc: ca.client()}
}

// register registers a device token with the FCM app.
func (e *bridgeEnv) register(token string) bridgeRegistration {
	e.t.Helper()
	e.fcm.Register(token)
	resp, err := e.hc.Post(e.s.HTTPURL+"/v1/fcm/fenix/registration", "application/json",
		strings.NewReader(`{"token":"`+token+`"}`))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	var r bridgeRegistration
	if err := json.Unmarshal(body, &r); err != nil || r.Secret == "" || r.Endpoint == "" {
		e.t.Fatalf("register answer %s: %v", body, err)
	}
	return r
}

// subscription is what a sender gets for the endpoint: fresh user agent
// keys (the bridge carries the encrypted body as is).
func bridgeSubscription(t *testing.T, endpoint string) json.RawMessage {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	b, _ := json.Marshal(map[string]any{"endpoint": endpoint, "keys": map[string]string{
		"p256dh": base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()),
		"auth":   base64.RawURLEncoding.EncodeToString(auth),
	}})
	return b
}

// receivedFor waits until the FCM server accepted n messages for token.
func (e *bridgeEnv) receivedFor(ctx context.Context, token string, n int) []fcmtest.Received {
	e.t.Helper()
	for {
		var got []fcmtest.Received
		for _, r := range e.fcm.Received() {
			if r.Token == token {
				got = append(got, r)
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("FCM received %d messages for %s, want %d; rejected %v\n%s", len(got), token, n, e.fcm.Rejected(), e.s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestBridgeFCMEndToEnd(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	e := newBridgeEnv(t)
	vapid := senderNewVAPID(t)

	// Registration API: the answers autopush gives, then a push.
	reg := e.register("fcm-device-token-1")
	sub := bridgeSubscription(t, reg.Endpoint)
	payload := []byte("hello through FCM")
	ttl := 120
	res := senderNodeSend(ctx, t, e.ca, senderJob{Subscription: sub, Payload: payload, VAPID: vapid, TTL: &ttl, Urgency: "high", Topic: "news"})
	senderCheckCreated(t, "web-push to a bridged endpoint", res, "120")
	got := e.receivedFor(ctx, "fcm-device-token-1", 1)[0]
	if got.Priority != "HIGH" || got.CollapseKey != "news" || got.Data["chid"] != reg.ChannelID || got.Data["con"] != "aes128gcm" || got.Data["body"] == "" {
		t.Fatalf("FCM received %+v", got)
	}
	if !strings.HasSuffix(got.TTL, "s") || got.TTL == "0s" {
		t.Fatalf("android.ttl %q", got.TTL)
	}
	// The registration API with the secret: its channels.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.s.HTTPURL+"/v1/fcm/fenix/registration/"+reg.UAID+"/", nil)
	req.Header.Set("Authorization", "Bearer "+reg.Secret)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(reg.ChannelID)) {
		t.Fatalf("GET channels: %d %s", resp.StatusCode, body)
	}
	// Too large for FCM: 413 errno 104 at ingest, never sent.
	big := bytes.Repeat([]byte{'x'}, 3500)
	res = senderNodeSend(ctx, t, e.ca, senderJob{Subscription: sub, Payload: big, VAPID: vapid})
	if res.Status != http.StatusRequestEntityTooLarge || res.errno() != 104 {
		t.Fatalf("oversized push: %d %s", res.Status, res.Body)
	}

	t.Run("429 with Retry-After is retried", func(t *testing.T) {
		reg := e.register("fcm-device-token-429")
		e.fcm.Fail(fcmtest.Fault{Status: 429, Code: "QUOTA_EXCEEDED", RetryAfter: "1"})
		start := time.Now()
		res := senderNodeSend(ctx, t, e.ca, senderJob{Subscription: bridgeSubscription(t, reg.Endpoint), Payload: []byte("retry me"), VAPID: vapid, TTL: &ttl})
		senderCheckCreated(t, "push before a 429", res, "120")
		e.receivedFor(ctx, "fcm-device-token-429", 1)
		if waited := time.Since(start); waited < time.Second {
			t.Fatalf("delivered after %s: Retry-After 1 not honoured", waited)
		}
	})

	t.Run("TTL ends while FCM is down: expired, never sent late", func(t *testing.T) {
		reg := e.register("fcm-device-token-down")
		faults := make([]fcmtest.Fault, 8) // more than fit in the TTL
		for i := range faults {
			faults[i] = fcmtest.Fault{Status: 503, Code: "UNAVAILABLE"}
		}
		e.fcm.Fail(faults...)
		short := 3
		res := senderNodeSend(ctx, t, e.ca, senderJob{Subscription: bridgeSubscription(t, reg.Endpoint), Payload: []byte("too late"), VAPID: vapid, TTL: &short})
		senderCheckCreated(t, "push while FCM is down", res, "3")
		loc := res.header("Location")
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := e.hc.Get(loc)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if bytes.Contains(b, []byte(`"state":"expired"`)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("message status %d %s, want expired", resp.StatusCode, b)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(3 * time.Second)
		for _, r := range e.fcm.Received() {
			if r.Token == "fcm-device-token-down" {
				t.Fatalf("sent after its TTL: %+v", r)
			}
		}
	})

	t.Run("dead token: 410 to the next push", func(t *testing.T) {
		e.fcm.Unregister("fcm-device-token-1")
		res := senderNodeSend(ctx, t, e.ca, senderJob{Subscription: sub, Payload: []byte("to a dead token"), VAPID: vapid})
		if res.Status != http.StatusCreated {
			t.Fatalf("push to a token not yet known dead: %d %s", res.Status, res.Body)
		}
		res = senderNodeSend(ctx, t, e.ca, senderJob{Subscription: sub, Payload: []byte("after"), VAPID: vapid, UntilStatus: 410, TimeoutMs: 30000})
		if res.Status != http.StatusGone || res.errno() != 103 {
			t.Fatalf("push after the token died: %d %s", res.Status, res.Body)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.s.HTTPURL+"/v1/fcm/fenix/registration/"+reg.UAID, nil)
		req.Header.Set("Authorization", "Bearer "+reg.Secret)
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusGone {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("registration API after the token died: %d, want 410", resp.StatusCode)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// TestBridgeAPNsEndToEnd: an APNs app on the strict local APNs server
// (apnstest: HTTP/2 over TLS, provider JWT, headers and payload checked).
func TestBridgeAPNsEndToEnd(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	senderNodeModules(t)
	apn := apnstest.New("org.mozilla.ios.Firefox")
	t.Cleanup(apn.Close)
	dir := t.TempDir()
	keyFile, caFile := filepath.Join(dir, "AuthKey.p8"), filepath.Join(dir, "apns-ca.pem")
	if err := os.WriteFile(keyFile, apn.Key(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, apn.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := senderNewCA(t)
	apps, _ := json.Marshal(map[string]any{"firefox": map[string]any{
		"key": keyFile, "key_id": apn.KeyID(), "team_id": apn.TeamID(), "topic": apn.Topic()}})
	s := senderStartTLSServer(t, ca,
		"PUSHLOG_APNS_APPS="+string(apps),
		"PUSHLOG_APNS_BASE_URL="+apn.URL,
		"PUSHLOG_BRIDGE_CA_FILE="+caFile,
		"PUSHLOG_BRIDGE_AUTH_KEYS="+bridgeAuthKey,
	)
	hc := ca.client()
	token := apn.DeviceToken()
	resp, err := hc.Post(s.HTTPURL+"/v1/apns/firefox/registration", "application/json", strings.NewReader(`{"token":"`+token+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var reg bridgeRegistration
	if resp.StatusCode != 200 || json.Unmarshal(body, &reg) != nil {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	vapid := senderNewVAPID(t)
	sub := bridgeSubscription(t, reg.Endpoint)
	ttl := 60
	res := senderNodeSend(ctx, t, ca, senderJob{Subscription: sub, Payload: []byte("hello through APNs"), VAPID: vapid, TTL: &ttl, Urgency: "low"})
	senderCheckCreated(t, "web-push to an APNs endpoint", res, "60")
	var got *apnstest.Received
	for got == nil {
		for _, r := range apn.Received() {
			if r.Token == token {
				got = &r
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("APNs received nothing; rejected %v\n%s", apn.Rejected(), s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got.Topic != apn.Topic() || got.Priority != "5" || got.Payload["chid"] != reg.ChannelID || got.Expiration == "" || got.Expiration == "0" {
		t.Fatalf("APNs received %+v", *got)
	}
	// the device is gone: 410 to the next pushes
	apn.Unregister(token)
	senderNodeSend(ctx, t, ca, senderJob{Subscription: sub, Payload: []byte("to a dead token"), VAPID: vapid})
	res = senderNodeSend(ctx, t, ca, senderJob{Subscription: sub, Payload: []byte("after"), VAPID: vapid, UntilStatus: 410, TimeoutMs: 30000})
	if res.Status != http.StatusGone || res.errno() != 103 {
		t.Fatalf("push after the device token died: %d %s", res.Status, res.Body)
	}
}

// restartTLS starts a killed TLS server again with the same settings and
// data (the harness's restart probes plain HTTP).
func restartTLS(t *testing.T, s *server, ca *senderCA) {
	t.Helper()
	s.logs = &lockedBuffer{}
	s.cmd = exec.Command(pushlogBin, "serve")
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("restart pushlog: %v", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	senderWaitTLSReady(t, s, ca, strings.TrimSuffix(strings.TrimPrefix(s.WSURL, "ws://"), "/"), 60*time.Second)
}

// TestBridgeNodeKilledMidSend: a message the bridge could not take yet
// (FCM 503) when the node is killed is delivered at least once by the
// restarted node; one FCM accepted before the kill is never sent again.
func TestBridgeNodeKilledMidSend(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	e := newBridgeEnv(t)
	vapid := senderNewVAPID(t)
	reg := e.register("fcm-device-token-crash")
	sub := bridgeSubscription(t, reg.Endpoint)
	ttl := 300
	res := senderNodeSend(ctx, t, e.ca, senderJob{Subscription: sub, Payload: []byte("before the crash"), VAPID: vapid, TTL: &ttl})
	senderCheckCreated(t, "first push", res, "300")
	first := e.receivedFor(ctx, "fcm-device-token-crash", 1)[0]
	e.fcm.Fail(fcmtest.Fault{Status: 503, Code: "UNAVAILABLE"}, fcmtest.Fault{Status: 503, Code: "UNAVAILABLE"})
	res = senderNodeSend(ctx, t, e.ca, senderJob{Subscription: sub, Payload: []byte("during the crash"), VAPID: vapid, TTL: &ttl})
	senderCheckCreated(t, "second push", res, "300")
	time.Sleep(300 * time.Millisecond) // the first attempt got its 503
	e.s.kill9()
	restartTLS(t, e.s, e.ca)
	e.receivedFor(ctx, "fcm-device-token-crash", 2)
	time.Sleep(2 * time.Second) // a re-send of the first would show by now
	got := e.receivedFor(ctx, "fcm-device-token-crash", 2)
	n := 0
	for _, r := range got {
		if r.Data["body"] == first.Data["body"] {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the message FCM accepted before the crash was sent %d times", n)
	}
	if len(got) < 2 {
		t.Fatalf("the message pending at the crash was not delivered: %d received", len(got))
	}
}
