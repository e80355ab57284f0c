package ingest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// fakeBridgeState folds the registration API's own events, as
// projector.BridgeTable does from Kafka.
type fakeBridgeState struct {
	loading bool
	mu      sync.Mutex
	users   map[string]*BridgeUser
	evs     []*pb.Event
}

func newFakeBridgeState() *fakeBridgeState {
	return &fakeBridgeState{users: map[string]*BridgeUser{}}
}

func (f *fakeBridgeState) Bridged(uaid string) (BridgeUser, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[uaid]
	if !ok {
		return BridgeUser{}, false
	}
	cp := *u
	cp.Channels = slices.Clone(u.Channels)
	return cp, true
}

func (f *fakeBridgeState) Ready() bool { return !f.loading }

func (f *fakeBridgeState) Apply(ev *pb.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.evs = append(f.evs, ev)
	u := f.users[ev.GetUaid()]
	switch b := ev.GetBody().(type) {
	case *pb.Event_BridgeRegistered:
		if u == nil {
			u = &BridgeUser{}
			f.users[ev.GetUaid()] = u
		}
		u.RouterType, u.AppID = b.BridgeRegistered.GetRouterType(), b.BridgeRegistered.GetAppId()
		u.Token, u.Aps, u.RegisteredMs = b.BridgeRegistered.GetToken(), b.BridgeRegistered.GetAps(), ev.GetTimeMs()
	case *pb.Event_ChannelRegistered:
		if u != nil && !slices.Contains(u.Channels, b.ChannelRegistered.GetChannelId()) {
			u.Channels = append(u.Channels, b.ChannelRegistered.GetChannelId())
		}
	case *pb.Event_ChannelUnregistered:
		if u != nil {
			u.Channels = slices.DeleteFunc(u.Channels, func(c string) bool { return c == b.ChannelUnregistered.GetChannelId() })
		}
	case *pb.Event_UserReset:
		delete(f.users, ev.GetUaid())
	}
}

const (
	testAuthKey    = "HJVPy4ZwF4Yz_JdvXTL8hRcwIhv742vC60Tg5Ycrvw8="
	testOldAuthKey = "old-key"
)

type bridgeEnv struct {
	*env
	state *fakeBridgeState
}

func newBridgeEnv(t *testing.T, mutate ...func(*BridgeConfig)) *bridgeEnv {
	t.Helper()
	st := newFakeBridgeState()
	// newEnv's cluster has only pushlog.messages.
	e := &env{t: t, cluster: newCluster(t, kfake.SeedTopics(testPartitions, schema.TopicRegistrations)), sealer: newSealer(t), vapid: newTestVAPID(t)}
	e.client = newProducer(t, e.cluster.ListenAddrs())
	cfg := Config{
		PublicURL:  testPublicURL,
		Sealer:     e.sealer,
		Producer:   e.client,
		Partitions: testPartitions,
		Logger:     quietLogger(),
		Metrics:    prometheus.NewRegistry(),
		Bridges: BridgeConfig{
			Apps:     map[string][]string{"fcm": {"org.mozilla.fenix"}, "apns": {"firefox"}},
			AuthKeys: [][]byte{[]byte(testAuthKey), []byte(testOldAuthKey)},
			State:    st,
			Burst:    1000,
		},
	}
	for _, m := range mutate {
		m(&cfg.Bridges)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	return &bridgeEnv{env: e, state: st}
}

type registered struct {
	UAID      string `json:"uaid"`
	ChannelID string `json:"channelID"`
	Endpoint  string `json:"endpoint"`
	Secret    string `json:"secret"`
}

func (e *bridgeEnv) register(path, body string) (registered, int) {
	e.t.Helper()
	rr := e.do(http.MethodPost, path, map[string]string{"Content-Type": "application/json"}, []byte(body))
	var r registered
	if rr.Code == http.StatusOK {
		if err := json.Unmarshal(rr.Body.Bytes(), &r); err != nil {
			e.t.Fatalf("register answer %q: %v", rr.Body.String(), err)
		}
	}
	return r, rr.Code
}

func (e *bridgeEnv) mustRegister(body string) registered {
	e.t.Helper()
	r, code := e.register("/v1/fcm/org.mozilla.fenix/registration", body)
	if code != http.StatusOK {
		e.t.Fatalf("register: %d", code)
	}
	return r
}

func (e *bridgeEnv) openEndpoint(url string) schema.Endpoint {
	e.t.Helper()
	i := strings.LastIndex(url, "/")
	ep, err := e.sealer.OpenEndpoint(url[i+1:])
	if err != nil {
		e.t.Fatalf("endpoint %q: %v", url, err)
	}
	return ep
}

func authHdr(secret string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + secret, "Content-Type": "application/json"}
}

func TestBridgeRegisterAnswers(t *testing.T) {
	e := newBridgeEnv(t)
	key := e.vapid.k
	tests := []struct {
		name, path, body string
		bridge           schema.Bridge
		channel          string
		v2               bool
	}{
		{"fcm", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"fcm-token-123"}`, schema.BridgeFCM, "", false},
		{"apns with aps and given channel", "/v1/apns/firefox/registration",
			`{"token":"0123456789abcdef","channelID":"DEADBEEF00004000800000000000CAFE","aps":"{\"mutable-content\":1}"}`,
			schema.BridgeAPNs, "deadbeef-0000-4000-8000-00000000cafe", false},
		{"fcm v2 key", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"fcm-token-123","key":"` + key + `"}`, schema.BridgeFCM, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, code := e.register(tc.path, tc.body)
			if code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			uaid, err := schema.NormalizeUAID(r.UAID)
			if err != nil || len(r.UAID) != 36 {
				t.Fatalf("uaid %q: not a dashed UUID", r.UAID)
			}
			if tc.channel != "" && r.ChannelID != tc.channel {
				t.Fatalf("channelID %q, want %q", r.ChannelID, tc.channel)
			}
			m := hmac.New(sha256.New, []byte(testAuthKey))
			m.Write([]byte(uaid))
			if want := hex.EncodeToString(m.Sum(nil)); r.Secret != want {
				t.Fatalf("secret %q, want autopush's %q", r.Secret, want)
			}
			ep := e.openEndpoint(r.Endpoint)
			if ep.UAID != uaid || ep.ChannelID != r.ChannelID || ep.Bridge != tc.bridge || (ep.Version() == 2) != tc.v2 {
				t.Fatalf("endpoint %+v", ep)
			}
			if want := testPublicURL + "/wpush/v1/"; !tc.v2 && !strings.HasPrefix(r.Endpoint, want) {
				t.Fatalf("endpoint %q, want prefix %q", r.Endpoint, want)
			}
			if tc.v2 && !bytes.Equal(ep.KeyHash, e.vapid.keyHash()) {
				t.Fatal("v2 endpoint not bound to the key")
			}
			u, ok := e.state.Bridged(uaid)
			if !ok || u.RouterType != tc.bridge.String() || !slices.Equal(u.Channels, []string{r.ChannelID}) {
				t.Fatalf("state %+v %v", u, ok)
			}
		})
	}
}

func TestBridgeRegisterRefusals(t *testing.T) {
	e := newBridgeEnv(t, func(c *BridgeConfig) { c.MaxToken = 64; c.MaxBody = 256 })
	tests := []struct {
		name, path, body string
		code, errno      int
	}{
		{"unknown router type", "/v1/gcm/org.mozilla.fenix/registration", `{"token":"fcm-token-123"}`, 400, 108},
		{"unknown fcm app", "/v1/fcm/other/registration", `{"token":"fcm-token-123"}`, 400, 106},
		{"unknown apns channel", "/v1/apns/org.mozilla.fenix/registration", `{"token":"fcm-token-123"}`, 400, 106},
		{"short token", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"short"}`, 400, errnoUnknown},
		{"token with a space", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"has a space"}`, 400, errnoUnknown},
		{"no token", "/v1/fcm/org.mozilla.fenix/registration", `{}`, 400, errnoUnknown},
		{"token too long", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"` + strings.Repeat("x", 65) + `"}`, 400, errnoUnknown},
		{"body too large", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"` + strings.Repeat("x", 300) + `"}`, 413, 104},
		{"not JSON", "/v1/fcm/org.mozilla.fenix/registration", `token=x`, 400, errnoUnknown},
		{"bad channelID", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"fcm-token-123","channelID":"nope"}`, 400, errnoUnknown},
		{"bad key", "/v1/fcm/org.mozilla.fenix/registration", `{"token":"fcm-token-123","key":"AAAA"}`, 400, errnoUnknown},
		{"bad aps", "/v1/apns/firefox/registration", `{"token":"fcm-token-123","aps":"{"}`, 400, errnoUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rr := e.do(http.MethodPost, tc.path, nil, []byte(tc.body))
			if rr.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", rr.Code, tc.code, rr.Body)
			}
			if b := errBody(t, rr); b.Errno != tc.errno {
				t.Fatalf("errno %d, want %d", b.Errno, tc.errno)
			}
		})
	}
	if n := len(e.state.evs); n != 0 {
		t.Fatalf("%d events written by refused requests", n)
	}
}

func TestBridgeLifecycle(t *testing.T) {
	e := newBridgeEnv(t, func(c *BridgeConfig) { c.MaxChannels = 2 })
	r := e.mustRegister(`{"token":"fcm-token-123"}`)
	base := "/v1/fcm/org.mozilla.fenix/registration/" + r.UAID
	auth := authHdr(r.Secret)

	// another channel, v2
	rr := e.do(http.MethodPost, base+"/subscription", auth, []byte(`{"key":"`+e.vapid.k+`"}`))
	if rr.Code != 200 {
		t.Fatalf("subscription: %d %s", rr.Code, rr.Body)
	}
	var sub struct{ ChannelID, Endpoint string }
	_ = json.Unmarshal(rr.Body.Bytes(), &sub)
	if ep := e.openEndpoint(sub.Endpoint); ep.Version() != 2 || ep.Bridge != schema.BridgeFCM || ep.ChannelID != sub.ChannelID {
		t.Fatalf("subscription endpoint %+v", ep)
	}
	// past MaxChannels
	if rr := e.do(http.MethodPost, base+"/subscription", auth, nil); rr.Code != 413 {
		t.Fatalf("third channel: %d", rr.Code)
	}
	// channels, through the trailing-slash path and the WebPush scheme Android sends
	rr = e.do(http.MethodGet, base+"/", map[string]string{"Authorization": "webpush " + r.Secret}, nil)
	var got struct {
		UAID       string   `json:"uaid"`
		ChannelIDs []string `json:"channelIDs"`
	}
	if err := json.Unmarshal(rr.Body.Bytes(), &got); err != nil || rr.Code != 200 {
		t.Fatalf("channels: %d %s", rr.Code, rr.Body)
	}
	want := []string{r.ChannelID, sub.ChannelID}
	slices.Sort(want)
	if got.UAID != r.UAID || !slices.Equal(got.ChannelIDs, want) {
		t.Fatalf("channels %+v, want %v", got, want)
	}
	// new token
	if rr := e.do(http.MethodPut, base, auth, []byte(`{"token":"fcm-token-456"}`)); rr.Code != 200 {
		t.Fatalf("update: %d %s", rr.Code, rr.Body)
	}
	last := e.state.evs[len(e.state.evs)-1].GetBridgeRegistered()
	if last.GetToken() != "fcm-token-456" || last.GetAppId() != "org.mozilla.fenix" || last.GetRouterType() != "fcm" {
		t.Fatalf("update event %v", last)
	}
	// channel removal, twice
	if rr := e.do(http.MethodDelete, base+"/subscription/"+sub.ChannelID, auth, nil); rr.Code != 200 {
		t.Fatalf("unsubscribe: %d", rr.Code)
	}
	rr = e.do(http.MethodDelete, base+"/subscription/"+sub.ChannelID, auth, nil)
	if rr.Code != 410 || errBody(t, rr).Errno != 106 {
		t.Fatalf("unsubscribe again: %d %s", rr.Code, rr.Body)
	}
	// the whole UAID
	if rr := e.do(http.MethodDelete, base, auth, nil); rr.Code != 200 {
		t.Fatalf("unregister: %d", rr.Code)
	}
	reset := e.state.evs[len(e.state.evs)-1].GetUserReset()
	if reset == nil || len(reset.GetChannelIds()) != 1 {
		t.Fatalf("unregister event %v", reset)
	}
	rr = e.do(http.MethodGet, base, auth, nil)
	if rr.Code != 410 || errBody(t, rr).Errno != 103 {
		t.Fatalf("channels after unregister: %d %s", rr.Code, rr.Body)
	}
}

func TestBridgeAuth(t *testing.T) {
	e := newBridgeEnv(t)
	r := e.mustRegister(`{"token":"fcm-token-123"}`)
	uaid, _ := schema.NormalizeUAID(r.UAID)
	m := hmac.New(sha256.New, []byte(testOldAuthKey))
	m.Write([]byte(uaid))
	oldSecret := hex.EncodeToString(m.Sum(nil))
	other := e.mustRegister(`{"token":"fcm-token-123"}`)
	base := "/v1/fcm/org.mozilla.fenix/registration/"
	tests := []struct {
		name, path, auth string
		code, errno      int
	}{
		{"bearer", base + r.UAID, "Bearer " + r.Secret, 200, 0},
		{"undashed uaid", base + uaid, "bearer " + r.Secret, 200, 0},
		{"rotated key", base + r.UAID, "Bearer " + oldSecret, 200, 0},
		{"no header", base + r.UAID, "", 401, 109},
		{"other scheme", base + r.UAID, "Basic " + r.Secret, 401, 109},
		{"no token", base + r.UAID, "Bearer", 401, 109},
		{"another UAID's secret", base + r.UAID, "Bearer " + other.Secret, 401, 109},
		{"bad uaid", base + "nope", "Bearer " + r.Secret, 410, 103},
		{"unknown uaid", base + schema.NewUAID(), "Bearer " + r.Secret, 401, 109},
		{"bad router type", "/v1/xyz/org.mozilla.fenix/registration/" + r.UAID, "Bearer " + r.Secret, 400, 108},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.auth != "" {
				hdr["Authorization"] = tc.auth
			}
			rr := e.do(http.MethodGet, tc.path, hdr, nil)
			if rr.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", rr.Code, tc.code, rr.Body)
			}
			if tc.errno != 0 && errBody(t, rr).Errno != tc.errno {
				t.Fatalf("errno: %s", rr.Body)
			}
		})
	}
	// a valid secret of a UAID this API never registered: 410 errno 103
	stranger := schema.NewUAID()
	m = hmac.New(sha256.New, []byte(testAuthKey))
	m.Write([]byte(stranger))
	strangerAuth := map[string]string{"Authorization": "Bearer " + hex.EncodeToString(m.Sum(nil))}
	rr := e.do(http.MethodGet, base+stranger, strangerAuth, nil)
	if rr.Code != 410 || errBody(t, rr).Errno != 103 {
		t.Fatalf("unknown UAID: %d %s", rr.Code, rr.Body)
	}
	// while the state is still loading: 503, never 410
	e.state.loading = true
	rr = e.do(http.MethodGet, base+stranger, strangerAuth, nil)
	if rr.Code != 503 || rr.Header().Get("Retry-After") == "" {
		t.Fatalf("unknown UAID while loading: %d %s", rr.Code, rr.Body)
	}
	e.state.loading = false
}

func TestBridgeRatePerSource(t *testing.T) {
	e := newBridgeEnv(t, func(c *BridgeConfig) { c.Burst = 2; c.Rate = 0.001 })
	for i, want := range []int{200, 200, 429} {
		_, code := e.register("/v1/fcm/org.mozilla.fenix/registration", `{"token":"fcm-token-123"}`)
		if code != want {
			t.Fatalf("request %d: %d, want %d", i, code, want)
		}
	}
}

func TestBridgePayloadLimitAtIngest(t *testing.T) {
	e := newBridgeEnv(t, func(c *BridgeConfig) { c.PayloadLimit = map[string]int{"fcm": 400 + bridgeOverhead[schema.BridgeFCM]} })
	r := e.mustRegister(`{"token":"fcm-token-123"}`)
	path := r.Endpoint[len(testPublicURL):]
	hdr := map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"}
	// 300 bytes are 400 in base64: the largest body that fits beside the
	// FCM data map's overhead.
	if rr := e.do(http.MethodPost, path, hdr, bytes.Repeat([]byte{1}, 300)); rr.Code != 201 {
		t.Fatalf("300 bytes: %d %s", rr.Code, rr.Body)
	}
	rr := e.do(http.MethodPost, path, hdr, bytes.Repeat([]byte{1}, 301))
	if rr.Code != 413 || errBody(t, rr).Errno != 104 {
		t.Fatalf("301 bytes: %d %s", rr.Code, rr.Body)
	}
	// a WebSocket endpoint of another UAID keeps the general limit
	if rr := e.do(http.MethodPost, e.endpoint(schema.NewUAID(), testChannel, nil), hdr, bytes.Repeat([]byte{1}, 1000)); rr.Code != 201 {
		t.Fatalf("WebSocket endpoint: %d %s", rr.Code, rr.Body)
	}
	// an endpoint without the bridge mark (autopush's tokens of imported
	// bridge users) for the bridged UAID gets the bridge's limit too
	uaid, err := schema.NormalizeUAID(r.UAID)
	if err != nil {
		t.Fatal(err)
	}
	if rr := e.do(http.MethodPost, e.endpoint(uaid, testChannel, nil), hdr, bytes.Repeat([]byte{1}, 301)); rr.Code != 413 {
		t.Fatalf("unmarked endpoint of a bridged UAID, 301 bytes: %d %s", rr.Code, rr.Body)
	}
}

func TestBridgeAPIOff(t *testing.T) {
	e := newEnv(t)
	if rr := e.do(http.MethodPost, "/v1/fcm/app/registration", nil, []byte(`{"token":"fcm-token-123"}`)); rr.Code != 404 {
		t.Fatalf("registration API without bridges: %d", rr.Code)
	}
}

// FuzzBridgeRegistration: no body or Authorization header crashes the
// registration API's parsers; whatever they accept is within bounds.
func FuzzBridgeRegistration(f *testing.F) {
	f.Add(`{"token":"fcm-token-123"}`, "Bearer x")
	f.Add(`{"token":"0123456789abcdef","aps":"{}","channelID":"deadbeef-0000-4000-8000-00000000cafe"}`, "webpush ")
	f.Add(`{"token":"fcm-token-123","key":"BAAA"}`, "")
	b, err := newBridgeAPI(BridgeConfig{Apps: map[string][]string{"fcm": {"a"}}, AuthKeys: [][]byte{[]byte("k")},
		State: newFakeBridgeState(), MaxToken: 64}, nil)
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{bridges: b}
	uaid := schema.NewUAID()
	f.Fuzz(func(t *testing.T, body, auth string) {
		var rb registrationBody
		if json.Unmarshal([]byte(body), &rb) == nil {
			if tok, err := s.checkToken(rb); err == nil && (len(tok) > 64 || len(tok) < 8 || strings.Contains(tok, " ")) {
				t.Fatalf("token %q accepted", tok)
			}
			if ch, err := channelFromBody(rb); err == nil {
				if _, err := schema.ParseChannelID(ch); err != nil {
					t.Fatalf("channel %q accepted", ch)
				}
			}
			if h, err := keyHash(rb); err == nil && h != nil && len(h) != 32 {
				t.Fatal("key hash length")
			}
			_ = checkAps(schema.BridgeAPNs, rb.Aps)
		}
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", auth)
		if s.authorize(req, uaid) == nil && !strings.HasSuffix(auth, secret([]byte("k"), uaid)) {
			t.Fatalf("authorized by %q", auth)
		}
	})
}

func TestBridgeDailyRefresh(t *testing.T) {
	e := newBridgeEnv(t)
	now := time.Now()
	e.srv.now = func() time.Time { return now }
	r := e.mustRegister(`{"token":"fcm-token-123"}`)
	base := "/v1/fcm/org.mozilla.fenix/registration/" + r.UAID
	count := func() int {
		n := 0
		for _, ev := range e.state.evs {
			if ev.GetBridgeRegistered() != nil {
				n++
			}
		}
		return n
	}
	if rr := e.do(http.MethodGet, base, authHdr(r.Secret), nil); rr.Code != 200 || count() != 1 {
		t.Fatalf("fresh GET: %d, %d bridge events", rr.Code, count())
	}
	now = now.Add(BridgeRefresh + time.Minute)
	if rr := e.do(http.MethodGet, base, authHdr(r.Secret), nil); rr.Code != 200 || count() != 2 {
		t.Fatalf("day-old GET: %d, %d bridge events", rr.Code, count())
	}
	last := e.state.evs[len(e.state.evs)-1].GetBridgeRegistered()
	if last.GetToken() != "fcm-token-123" || last.GetAppId() != "org.mozilla.fenix" {
		t.Fatalf("refresh %v", last)
	}
}

// TestBridgeRegistration: the checks `pushlog import autopush` shares with
// the registration API.
func TestBridgeRegistration(t *testing.T) {
	obj, notObj := `{"alert":"x"}`, `["x"]`
	for _, tc := range []struct {
		name   string
		br     schema.Bridge
		app    string
		token  string
		aps    *string
		wantOK bool
	}{
		{"fcm", schema.BridgeFCM, "app", "0123456789abcdef", nil, true},
		{"apns with aps", schema.BridgeAPNs, "firefox", "0123456789abcdef", &obj, true},
		{"apns aps not an object", schema.BridgeAPNs, "firefox", "0123456789abcdef", &notObj, false},
		{"fcm ignores aps", schema.BridgeFCM, "app", "0123456789abcdef", &notObj, true},
		{"no app", schema.BridgeFCM, "", "0123456789abcdef", nil, false},
		{"long app", schema.BridgeFCM, strings.Repeat("a", 33), "0123456789abcdef", nil, false},
		{"short token", schema.BridgeFCM, "app", "short", nil, false},
		{"token with space", schema.BridgeFCM, "app", "0123456789 abcdef", nil, false},
		{"long token", schema.BridgeFCM, "app", strings.Repeat("t", 65), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := BridgeRegistration(tc.br, tc.app, tc.token, tc.aps, 32, 64)
			if (err == nil) != tc.wantOK {
				t.Fatalf("err %v, want ok %v", err, tc.wantOK)
			}
			if err != nil {
				return
			}
			if b.GetRouterType() != tc.br.String() || b.GetAppId() != tc.app || b.GetToken() != tc.token {
				t.Fatalf("got %v", b)
			}
			if tc.br == schema.BridgeAPNs && tc.aps != nil && b.GetAps() != *tc.aps {
				t.Fatalf("aps %q, want %q", b.GetAps(), *tc.aps)
			}
		})
	}
}

// TestBridgeSubscribeConcurrentBound: concurrent subscriptions for one
// UAID cannot together pass the channel bound.
func TestBridgeSubscribeConcurrentBound(t *testing.T) {
	e := newBridgeEnv(t, func(c *BridgeConfig) { c.MaxChannels = 3 })
	r := e.mustRegister(`{"token":"fcm-token-123"}`)
	base := "/v1/fcm/org.mozilla.fenix/registration/" + r.UAID
	auth := authHdr(r.Secret)
	const n = 20
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { codes <- e.do(http.MethodPost, base+"/subscription", auth, nil).Code })
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[200] != 2 || count[413] != n-2 {
		t.Fatalf("answers %v, want 2 × 200 (3 channels with the first) and %d × 413", count, n-2)
	}
	if u, _ := e.state.Bridged(strings.ReplaceAll(r.UAID, "-", "")); len(u.Channels) != 3 {
		t.Fatalf("%d channels, want 3", len(u.Channels))
	}
}
