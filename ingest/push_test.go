package ingest

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func randomBody(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPushAccepted covers every accepted form of PROTOCOL.md §1/§2/§5: each
// case answers 201 with an empty body, Location and the applied TTL, and only
// after the event is readable back from Kafka with the expected fields.
func TestPushAccepted(t *testing.T) {
	e := newEnv(t)
	v1 := e.endpoint(testUAID, testChannel, nil)
	v2 := e.endpoint(testUAID, testChannel, e.vapid.keyHash())
	auth := e.vapid.header(t, testPublicURL)
	jwtOnly := strings.TrimPrefix(strings.Split(auth, ",")[0], "vapid t=")
	const maxTTL = 30 * 24 * 3600
	salt := "c2FsdHNhbHRzYWx0c2FsdA==" // 16 bytes, padded
	dh := "BDw9T0eImd4ax818VcYqDK_DOhcuDswKeroYyNkdhYmygoLSDlSiWpuoWYUSSFxi25cyyNTR5k9Ny93DzZc0UI4"

	type want struct {
		ttl        int64
		encoding   string
		encryption string
		cryptoKey  string
		topic      string
		urgency    pb.Urgency
		vapid      bool
		keyBound   bool
	}
	cases := []struct {
		name string
		path string
		hdr  map[string]string
		body int
		want want
	}{
		{"npm web-push: aes128gcm 4096 bytes, vapid", v1,
			map[string]string{"TTL": "2419200", "Urgency": "normal", "Content-Encoding": "aes128gcm", "Authorization": auth},
			4096, want{ttl: 2419200, encoding: "aes128gcm", vapid: true}},
		{"default limit 5630 bytes", v1,
			map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"},
			5630, want{ttl: 60, encoding: "aes128gcm"}},
		{"empty body needs no encoding", v1,
			map[string]string{"TTL": "60"}, 0, want{ttl: 60}},
		{"empty body drops encoding headers", v1,
			map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Encryption": "salt=x"}, 0, want{ttl: 60}},
		{"TTL 0 is accepted", v1,
			map[string]string{"TTL": "0", "Content-Encoding": "aes128gcm"}, 10, want{ttl: 0, encoding: "aes128gcm"}},
		{"TTL above max is clamped", v1,
			map[string]string{"TTL": "99999999", "Content-Encoding": "aes128gcm"}, 10, want{ttl: maxTTL, encoding: "aes128gcm"}},
		{"TTL beyond int64 is clamped", v1,
			map[string]string{"TTL": "99999999999999999999999", "Content-Encoding": "aes128gcm"}, 10, want{ttl: maxTTL, encoding: "aes128gcm"}},
		{"topic of 32 characters", v1,
			map[string]string{"TTL": "60", "Topic": strings.Repeat("aB3_-", 6) + "xy"}, 0, want{ttl: 60, topic: strings.Repeat("aB3_-", 6) + "xy"}},
		{"urgency very-low", v1, map[string]string{"TTL": "60", "Urgency": "very-low"}, 0, want{ttl: 60, urgency: pb.Urgency_URGENCY_VERY_LOW}},
		{"urgency low", v1, map[string]string{"TTL": "60", "Urgency": "low"}, 0, want{ttl: 60, urgency: pb.Urgency_URGENCY_LOW}},
		{"urgency HIGH", v1, map[string]string{"TTL": "60", "Urgency": "HIGH"}, 0, want{ttl: 60, urgency: pb.Urgency_URGENCY_HIGH}},
		{"pywebpush: vapid without space", v1,
			map[string]string{"TTL": "0", "Content-Encoding": "aes128gcm", "Authorization": strings.Replace(auth, ", k=", ",k=", 1)},
			100, want{ttl: 0, encoding: "aes128gcm", vapid: true}},
		{"webpush-go: 4096 bytes, Crypto-Key p256ecdsa beside aes128gcm", v1,
			map[string]string{"TTL": "0", "Content-Encoding": "aes128gcm", "Authorization": auth, "Crypto-Key": "p256ecdsa=" + e.vapid.k},
			4096, want{ttl: 0, encoding: "aes128gcm", vapid: true}},
		{"VAPID scheme case-insensitive, padded key, unknown params", v1,
			map[string]string{"TTL": "60", "Authorization": "VAPID foo=bar, t=" + jwtOnly + ", k=" + e.vapid.k + "=", "Content-Encoding": "aes128gcm"},
			10, want{ttl: 60, encoding: "aes128gcm", vapid: true}},
		{"vapid key in standard base64", v1,
			map[string]string{"TTL": "60", "Authorization": "vapid t=" + jwtOnly + ", k=" + stdB64(e.vapid.raw)},
			0, want{ttl: 60, vapid: true}},
		{"legacy WebPush scheme with Crypto-Key p256ecdsa", v1,
			map[string]string{"TTL": "60", "Authorization": "WebPush " + jwtOnly, "Crypto-Key": "p256ecdsa=" + e.vapid.k},
			0, want{ttl: 60, vapid: true}},
		{"legacy Bearer scheme with dh;p256ecdsa", v1,
			map[string]string{"TTL": "60", "Authorization": "Bearer " + jwtOnly, "Content-Encoding": "aesgcm",
				"Encryption": "salt=" + salt, "Crypto-Key": "dh=" + dh + ";p256ecdsa=" + e.vapid.k},
			50, want{ttl: 60, encoding: "aesgcm", encryption: "salt=c2FsdHNhbHRzYWx0c2FsdA", cryptoKey: "dh=" + dh + ";p256ecdsa=" + e.vapid.k, vapid: true}},
		{"aesgcm: quotes and padding stripped, every parameter and section kept as sent (autopush)", v1,
			map[string]string{"TTL": "60", "Content-Encoding": "aesgcm",
				"Encryption":    `keyid="p256dh"; salt="` + salt + `"; rs=4096`,
				"Crypto-Key":    `keyid="other";dh="AAAA", keyid="p256dh";dh="` + dh + `==",p256ecdsa="` + e.vapid.k + `"`,
				"Authorization": "WebPush " + jwtOnly},
			100, want{ttl: 60, encoding: "aesgcm", encryption: "keyid=p256dh; salt=c2FsdHNhbHRzYWx0c2FsdA; rs=4096",
				cryptoKey: "keyid=other;dh=AAAA, keyid=p256dh;dh=" + dh + ",p256ecdsa=" + e.vapid.k, vapid: true}},
		{"aesgcm: parameters separated by commas", v1,
			map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Encryption": "salt=" + salt + ",rs=3000", "Crypto-Key": "dh=" + dh + ",p256ecdsa=" + e.vapid.k},
			100, want{ttl: 60, encoding: "aesgcm", encryption: "salt=c2FsdHNhbHRzYWx0c2FsdA,rs=3000", cryptoKey: "dh=" + dh + ",p256ecdsa=" + e.vapid.k}},
		{"v2: key-bound endpoint with its key", v2,
			map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm", "Authorization": auth},
			4096, want{ttl: 60, encoding: "aes128gcm", vapid: true, keyBound: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := randomBody(t, tc.body)
			rr := e.do(http.MethodPost, tc.path, tc.hdr, body)
			if rr.Code != http.StatusCreated {
				t.Fatalf("status %d, body %s", rr.Code, rr.Body)
			}
			if rr.Body.Len() != 0 {
				t.Errorf("201 body %q, want empty", rr.Body)
			}
			if got := rr.Header().Get("TTL"); got != strconv.FormatInt(tc.want.ttl, 10) {
				t.Errorf("TTL header %q, want %d", got, tc.want.ttl)
			}
			m := e.openLocation(rr.Header().Get("Location"))
			if m.UAID != testUAID || m.ChannelID != testChannel {
				t.Errorf("message id %+v", m)
			}
			if want := schema.PartitionOf(testUAID, testPartitions); m.Partition != want {
				t.Errorf("partition %d, want %d (murmur2)", m.Partition, want)
			}
			rec, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset)
			if string(rec.Key) != testUAID || ev.GetUaid() != testUAID || len(ev.GetId()) != 16 {
				t.Errorf("record key %q, event uaid %q id %x", rec.Key, ev.GetUaid(), ev.GetId())
			}
			ma := ev.GetMessageAccepted()
			if ma == nil {
				t.Fatalf("event body %T, want MessageAccepted", ev.GetBody())
			}
			if !bytes.Equal(ma.GetPayload(), body) {
				t.Errorf("payload changed: %d bytes stored, %d sent", len(ma.GetPayload()), len(body))
			}
			w := tc.want
			if ma.GetChannelId() != testChannel || ma.GetTtlS() != w.ttl || ma.GetEncoding() != w.encoding ||
				ma.GetEncryption() != w.encryption || ma.GetCryptoKey() != w.cryptoKey || ma.GetTopic() != w.topic ||
				ma.GetUrgency() != w.urgency || ma.GetKeyBound() != w.keyBound {
				t.Errorf("stored %v, want %+v", ma, w)
			}
			if w.vapid {
				if ma.GetVapidSub() != "mailto:ops@example.com" || !bytes.Equal(ma.GetVapidKeyHash(), e.vapid.keyHash()) {
					t.Errorf("vapid sub %q hash %x", ma.GetVapidSub(), ma.GetVapidKeyHash())
				}
			} else if ma.GetVapidSub() != "" || len(ma.GetVapidKeyHash()) != 0 {
				t.Errorf("unexpected vapid fields %q %x", ma.GetVapidSub(), ma.GetVapidKeyHash())
			}
			if strings.Contains(ma.GetCryptoKey(), `"`) || strings.Contains(ma.GetEncryption(), `"`) {
				t.Errorf("forwarded headers not cleaned: %q %q", ma.GetEncryption(), ma.GetCryptoKey())
			}
			if time.Since(time.UnixMilli(ev.GetTimeMs())) > time.Minute {
				t.Errorf("event time %d", ev.GetTimeMs())
			}
		})
	}
}

// TestPushRejected is the errno table: every rejection of PROTOCOL.md §1/§2
// with its status, errno and JSON body, and no event written.
func TestPushRejected(t *testing.T) {
	gone := goneSet{
		testUAID + "/" + "11111111-1111-4111-8111-111111111111": {channel: true},
		"ffffffffffffffffffffffffffffffff/" + testChannel:       {uaid: true},
	}
	e := newEnv(t, func(c *Config) { c.Gone = gone })
	v1 := e.endpoint(testUAID, testChannel, nil)
	v2 := e.endpoint(testUAID, testChannel, e.vapid.keyHash())
	other := newTestVAPID(t)
	auth := e.vapid.header(t, testPublicURL)
	jwtOnly := strings.TrimPrefix(strings.Split(auth, ",")[0], "vapid t=")
	now := time.Now()
	signed := func(claims jwt.MapClaims) string { return "vapid t=" + e.vapid.jwt(t, claims) + ", k=" + e.vapid.k }
	hs256, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix()}).SignedString([]byte("secret"))
	aesgcm := func(enc, ck string) map[string]string {
		return map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Encryption": enc, "Crypto-Key": ck}
	}
	const dh = "BDw9T0eImd4ax818VcYqDK_DOhcuDswKeroYyNkdhYm"
	tokenV1 := strings.TrimPrefix(v1, "/wpush/v1/")
	tokenV2 := strings.TrimPrefix(v2, "/wpush/v2/")

	cases := []struct {
		name   string
		path   string
		hdr    map[string]string
		body   int
		status int
		errno  int
	}{
		{"token does not decode", "/wpush/v1/not-a-token", map[string]string{"TTL": "60"}, 0, 404, 102},
		{"token forged (flipped byte)", "/wpush/v1/" + flip(tokenV1, 20), map[string]string{"TTL": "60"}, 0, 404, 102},
		{"v2 token on the v1 path", "/wpush/v1/" + tokenV2, map[string]string{"TTL": "60", "Authorization": auth}, 0, 404, 102},
		{"v1 token on the v2 path", "/wpush/v2/" + tokenV1, map[string]string{"TTL": "60", "Authorization": auth}, 0, 404, 102},
		{"channel unregistered", e.endpoint(testUAID, "11111111-1111-4111-8111-111111111111", nil), map[string]string{"TTL": "60"}, 0, 410, 106},
		{"uaid reset", e.endpoint("ffffffffffffffffffffffffffffffff", testChannel, nil), map[string]string{"TTL": "60"}, 0, 410, 103},
		{"TTL missing", v1, map[string]string{}, 0, 400, 111},
		{"TTL not a number", v1, map[string]string{"TTL": "soon"}, 0, 400, 111},
		{"TTL fractional", v1, map[string]string{"TTL": "1.5"}, 0, 400, 111},
		{"TTL negative", v1, map[string]string{"TTL": "-1"}, 0, 400, 114},
		{"topic of 33 characters", v1, map[string]string{"TTL": "60", "Topic": strings.Repeat("a", 33)}, 0, 400, 113},
		{"topic outside base64url", v1, map[string]string{"TTL": "60", "Topic": "a+b"}, 0, 400, 113},
		{"urgency unknown", v1, map[string]string{"TTL": "60", "Urgency": "urgent"}, 0, 400, 111},
		{"urgency two values", v1, map[string]string{"TTL": "60", "Urgency": "low, high"}, 0, 400, 111},
		{"body 5631 bytes", v1, map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"}, 5631, 413, 104},
		{"body without Content-Encoding", v1, map[string]string{"TTL": "60"}, 10, 400, 110},
		{"aesgcm128 retired", v1, map[string]string{"TTL": "60", "Content-Encoding": "aesgcm128"}, 10, 400, 110},
		{"unknown encoding", v1, map[string]string{"TTL": "60", "Content-Encoding": "gzip"}, 10, 400, 110},
		{"aes128gcm with Encryption salt", v1, map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm", "Encryption": "salt=abc"}, 10, 400, 110},
		{"aes128gcm with Crypto-Key dh", v1, map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm", "Crypto-Key": "dh=" + dh}, 10, 400, 110},
		{"aesgcm without Encryption", v1, map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Crypto-Key": "dh=" + dh}, 10, 400, 110},
		{"aesgcm without salt", v1, aesgcm("rs=4096", "dh="+dh), 10, 400, 110},
		{"aesgcm with bad salt", v1, aesgcm("salt=a+b/c", "dh="+dh), 10, 400, 110},
		{"aesgcm with bad rs", v1, aesgcm("salt=abc;rs=x", "dh="+dh), 10, 400, 110},
		{"aesgcm without Crypto-Key", v1, map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Encryption": "salt=abc"}, 10, 400, 110},
		{"aesgcm with Crypto-Key lacking dh", v1, aesgcm("salt=abc", "p256ecdsa="+e.vapid.k), 10, 400, 110},
		{"aesgcm with malformed Crypto-Key", v1, aesgcm("salt=abc", "dh"), 10, 400, 110},
		{"aesgcm with Encryption-Key (draft 02)", v1, map[string]string{"TTL": "60", "Content-Encoding": "aesgcm", "Encryption": "salt=abc", "Crypto-Key": "dh=" + dh, "Encryption-Key": "dh=" + dh}, 10, 400, 110},
		{"v2 without VAPID", v2, map[string]string{"TTL": "60"}, 0, 401, 109},
		{"v2 with another key", v2, map[string]string{"TTL": "60", "Authorization": other.header(t, testPublicURL)}, 0, 401, 109},
		{"unknown auth scheme", v1, map[string]string{"TTL": "60", "Authorization": "Basic dXNlcjpwYXNz"}, 0, 401, 109},
		{"vapid without t", v1, map[string]string{"TTL": "60", "Authorization": "vapid k=" + e.vapid.k}, 0, 401, 109},
		{"vapid without k nor Crypto-Key", v1, map[string]string{"TTL": "60", "Authorization": "vapid t=" + jwtOnly}, 0, 401, 109},
		{"vapid key not a point", v1, map[string]string{"TTL": "60", "Authorization": "vapid t=" + jwtOnly + ", k=AAAA"}, 0, 401, 109},
		{"vapid key of another sender", v1, map[string]string{"TTL": "60", "Authorization": "vapid t=" + jwtOnly + ", k=" + other.k}, 0, 401, 109},
		{"WebPush without Crypto-Key", v1, map[string]string{"TTL": "60", "Authorization": "WebPush " + jwtOnly}, 0, 401, 109},
		{"JWT signature flipped", v1, map[string]string{"TTL": "60", "Authorization": "vapid t=" + flip(jwtOnly, len(jwtOnly)-10) + ", k=" + e.vapid.k}, 0, 401, 109},
		{"JWT not ES256", v1, map[string]string{"TTL": "60", "Authorization": "vapid t=" + hs256 + ", k=" + e.vapid.k}, 0, 401, 109},
		{"JWT garbage", v1, map[string]string{"TTL": "60", "Authorization": "vapid t=abc.def.ghi, k=" + e.vapid.k}, 0, 401, 109},
		{"JWT without exp", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL})}, 0, 401, 109},
		{"JWT expired", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(-2 * time.Minute).Unix()})}, 0, 401, 109},
		{"JWT exp more than 24h ahead", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(25 * time.Hour).Unix()})}, 0, 401, 109},
		{"JWT for another origin", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": "https://push.example.net", "exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		{"JWT aud with a path", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL + "/wpush", "exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		{"JWT aud http instead of https", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": "http://push.example.com", "exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		{"JWT without aud", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		// Issue 10 finding 4: parsing exactly as PROTOCOL.md.
		{"TTL with a plus sign", v1, map[string]string{"TTL": "+5"}, 0, 400, 111},
		{"TTL in quotes", v1, map[string]string{"TTL": `" 5 "`}, 0, 400, 111},
		{"TTL with an inner space", v1, map[string]string{"TTL": "5 0"}, 0, 400, 111},
		{"JWT aud with a trailing slash", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL + "/", "exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		{"JWT aud as a list", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": []string{testPublicURL}, "exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		{"JWT aud with the default port", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL + ":443", "exp": now.Add(time.Hour).Unix()})}, 0, 401, 109},
		{"JWT exp as a string", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": strconv.FormatInt(now.Add(time.Hour).Unix(), 10)})}, 0, 401, 109},
		{"JWT exp null", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": nil})}, 0, 401, 109},
		{"JWT nbf as a string", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "nbf": "0"})}, 0, 401, 109},
		{"JWT sub not a string", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "sub": 42})}, 0, 401, 109},
		// Issue 10 finding 3: sizes that bypassed the body limit.
		{"JWT sub of 257 bytes", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "sub": "mailto:" + strings.Repeat("a", 250)})}, 0, 401, 109},
		{"JWT sub of 28 KB", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "sub": "mailto:" + strings.Repeat("a", 28000)})}, 0, 401, 109},
		{"JWT of 37 KB", v1, map[string]string{"TTL": "60", "Authorization": signed(jwt.MapClaims{"aud": testPublicURL, "exp": now.Add(time.Hour).Unix(), "pad": strings.Repeat("x", 37000)})}, 0, 401, 109},
		{"Authorization of 5 KB before the token", v1, map[string]string{"TTL": "60", "Authorization": "vapid x=" + strings.Repeat("y", 5000) + ", t=" + jwtOnly + ", k=" + e.vapid.k}, 0, 401, 109},
		{"aesgcm Encryption of 60 KB", v1, aesgcm("salt=abc;pad="+strings.Repeat("a", 60000), "dh="+dh), 10, 413, 104},
		{"aesgcm Crypto-Key of 2 KB", v1, aesgcm("salt=abc", "dh="+dh+";x="+strings.Repeat("a", 2000)), 10, 413, 104},
		{"crypto headers together above 1024", v1, aesgcm("salt=abc;x="+strings.Repeat("a", 500), "dh="+dh+";x="+strings.Repeat("a", 500)), 10, 413, 104},
		{"aes128gcm with a large Crypto-Key", v1, map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm", "Crypto-Key": "p256ecdsa=" + strings.Repeat("a", 2000)}, 10, 413, 104},
		{"bodiless push with a large Encryption", v1, map[string]string{"TTL": "60", "Encryption": strings.Repeat("a", 2000)}, 0, 413, 104},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.srv.produceCalls.Load()
			rr := e.do(http.MethodPost, tc.path, tc.hdr, randomBody(t, tc.body))
			if rr.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rr.Code, tc.status, rr.Body)
			}
			b := errBody(t, rr)
			if b.Errno != tc.errno {
				t.Errorf("errno %d, want %d (%s)", b.Errno, tc.errno, b.Message)
			}
			if cc := rr.Header().Get("Cache-Control"); (tc.status == 410) != (cc == "max-age=86400") {
				t.Errorf("Cache-Control %q for status %d", cc, tc.status)
			}
			if rr.Header().Get("Location") != "" {
				t.Error("error response carries a Location")
			}
			if e.srv.produceCalls.Load() != before {
				t.Error("a rejected push was produced")
			}
		})
	}
}

// goneSet is a GoneChecker keyed by "uaid/channel".
type goneSet map[string]struct{ channel, uaid bool }

func (g goneSet) Gone(uaid, channelID string) (bool, bool) {
	v := g[uaid+"/"+channelID]
	return v.channel, v.uaid
}

// flip changes the character at i to another base64url character.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

func TestPushBodyBoundaries(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBody = 4096 })
	v1 := e.endpoint(testUAID, testChannel, nil)
	hdr := map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"}
	if rr := e.do(http.MethodPost, v1, hdr, randomBody(t, 4096)); rr.Code != http.StatusCreated {
		t.Fatalf("4096 bytes with MaxBody 4096: %d %s", rr.Code, rr.Body)
	}
	if rr := e.do(http.MethodPost, v1, hdr, randomBody(t, 4097)); rr.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("4097 bytes with MaxBody 4096: %d %s", rr.Code, rr.Body)
	}
	// A body without Content-Length (chunked) is still bounded by reading.
	req, _ := http.NewRequest(http.MethodPost, v1, struct{ *bytes.Reader }{bytes.NewReader(randomBody(t, 10000))})
	req.ContentLength = -1
	req.Header.Set("TTL", "60")
	req.Header.Set("Content-Encoding", "aes128gcm")
	rr := newRecorder()
	e.srv.Handler().ServeHTTP(rr, req)
	if rr.Code != http.StatusRequestEntityTooLarge || errBody(t, rr).Errno != 104 {
		t.Fatalf("unknown-length oversized body: %d %s", rr.Code, rr.Body)
	}
}
