package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// snTimeout bounds each single-node test (server start-up included).
const snTimeout = 2 * time.Minute

// snLongTTL is the TTL of messages that must survive the test.
const snLongTTL = 600

// snServer starts pushlog on real Kafka with sealing keys the test knows
// (so it can build endpoints of UAIDs the server never issued).
func snServer(t *testing.T, env ...string) (*server, *schema.Sealer) {
	t.Helper()
	key := make([]byte, schema.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keys := base64.RawURLEncoding.EncodeToString(key)
	sealer, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, serverOpts{Env: append([]string{"PUSHLOG_CRYPTO_KEYS=" + keys}, env...)})
	return s, sealer
}

// snOffline connects a fresh user agent, subscribes one channel and
// disconnects; the owner has detached it when this returns.
func snOffline(ctx context.Context, t *testing.T, s *server, key string) (uaid string, sub *uaSubscription) {
	t.Helper()
	ua := uaDial(ctx, t, s.WSURL, "")
	sub = ua.subscribe(ctx, key)
	ua.close()
	return ua.UAID, sub
}

// snExpect waits for the next notification and checks it is for sub and
// decrypts to want.
func snExpect(ctx context.Context, t *testing.T, ua *uaClient, sub *uaSubscription, want string) uaMessage {
	t.Helper()
	n, plain := ua.nextFor(ctx, sub)
	if string(plain) != want {
		t.Fatalf("received %q, want %q", plain, want)
	}
	return n
}

// snMarker proves a negative on a connected user agent: it sends a fresh
// message and requires it to be the very next notification. A UAID's
// messages are delivered in log order, so anything that should not have
// arrived (expired, replaced, deleted, acked) and was accepted earlier
// would have come first.
func snMarker(ctx context.Context, t *testing.T, ua *uaClient, sub *uaSubscription, vapid snVAPID) uaMessage {
	t.Helper()
	marker := "marker-" + uaChannelID()
	snMustCreate(ctx, t, sub, []byte(marker), snPush{TTL: snLongTTL, VAPID: vapid})
	return snExpect(ctx, t, ua, sub, marker)
}

// snMessageID is the id in a Location URL.
func snMessageID(t *testing.T, s *server, res snResult) string {
	t.Helper()
	loc := res.Header.Get("Location")
	id, ok := strings.CutPrefix(loc, s.HTTPURL+"/m/")
	if !ok || id == "" || strings.Contains(id, "/") {
		t.Fatalf("Location %q is not %s/m/{id}", loc, s.HTTPURL)
	}
	return id
}

// TestSingleNode runs the wire-level scenarios of the single-node issue
// against one pushlog process on real Kafka, one user agent per scenario.
func TestSingleNode(t *testing.T) {
	s, sealer := snServer(t)
	vapid := snNewVAPID(t)

	t.Run("DeliveryByteForByte", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		ua := uaDial(ctx, t, s.WSURL, "")
		sub := ua.subscribe(ctx, "")
		if !strings.HasPrefix(sub.Endpoint, s.HTTPURL+"/wpush/v1/") {
			t.Fatalf("endpoint %q is not %s/wpush/v1/…", sub.Endpoint, s.HTTPURL)
		}
		msg := []byte("Hello from webpush-go, byte for byte ✓")
		res := snMustCreate(ctx, t, sub, msg, snPush{TTL: 60, VAPID: vapid})
		if len(res.Posted) != 4096 {
			t.Fatalf("webpush-go posted %d bytes, expected its default 4096-byte padding", len(res.Posted))
		}
		n, plain := ua.nextFor(ctx, sub)
		if !bytes.Equal(plain, msg) {
			t.Fatalf("decrypted %q, want %q", plain, msg)
		}
		body, err := n.body()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, res.Posted) {
			t.Fatalf("data (%d bytes) differs from the %d bytes webpush-go posted", len(body), len(res.Posted))
		}
		if got := n.Headers["encoding"]; got != "aes128gcm" || len(n.Headers) != 1 {
			t.Fatalf("headers %v, want exactly encoding aes128gcm", n.Headers)
		}
		if id := snMessageID(t, s, res); n.Version != id {
			t.Fatalf("version %q, want the Location id %q", n.Version, id)
		}
		ua.ack(n)
	})

	t.Run("EmptyBody", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		ua := uaDial(ctx, t, s.WSURL, "")
		sub := ua.subscribe(ctx, "")
		key, err := webpush.ParseVAPIDPrivateKey(vapid.Private)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := key.Authorization(sub.Endpoint, "mailto:integration@pushlog.example", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sub.Endpoint, nil)
		req.Header.Set("TTL", "60")
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("empty push: status %d, want 201", resp.StatusCode)
		}
		n := ua.next(ctx)
		uaCheckNotification(t, n)
		if n.ChannelID != sub.ChannelID || n.Data != "" || n.Headers != nil {
			t.Fatalf("empty push arrived as %s, want a notification without data and headers", n.Raw)
		}
	})

	t.Run("ErrorBodies", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		ua := uaDial(ctx, t, s.WSURL, "")
		sub := ua.subscribe(ctx, "")
		do := func(method, url string, hdr map[string]string, body []byte) (int, http.Header, []byte) {
			t.Helper()
			req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header, b
		}
		st, h, b := do(http.MethodPost, sub.Endpoint, map[string]string{"Content-Encoding": "aes128gcm"}, []byte("x"))
		snCheckError(t, "missing TTL", st, h, b, http.StatusBadRequest, 111)
		st, h, b = do(http.MethodPost, sub.Endpoint, map[string]string{"TTL": "-1", "Content-Encoding": "aes128gcm"}, []byte("x"))
		snCheckError(t, "negative TTL", st, h, b, http.StatusBadRequest, 114)
		st, h, b = do(http.MethodPost, s.HTTPURL+"/wpush/v1/not-a-token", map[string]string{"TTL": "60"}, nil)
		snCheckError(t, "forged token", st, h, b, http.StatusNotFound, 102)
		st, h, b = do(http.MethodDelete, s.HTTPURL+"/m/not-a-message-id", nil, nil)
		snCheckError(t, "DELETE of a malformed message id", st, h, b, http.StatusBadRequest, -1)
	})

	t.Run("OfflineDeliveryInOrder", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		uaid, sub := snOffline(ctx, t, s, "")
		want := []string{"offline-1", "offline-2", "offline-3"}
		for _, m := range want {
			snMustCreate(ctx, t, sub, []byte(m), snPush{TTL: snLongTTL, VAPID: vapid})
		}
		ua := uaRedial(ctx, t, s.WSURL, uaid)
		var notes []uaMessage
		for _, m := range want {
			notes = append(notes, snExpect(ctx, t, ua, sub, m))
		}
		ua.ack(notes...)
		snMarker(ctx, t, ua, sub, vapid) // and no duplicates before it
	})

	t.Run("TopicReplacement", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		uaid, sub := snOffline(ctx, t, s, "")
		snMustCreate(ctx, t, sub, []byte("older"), snPush{TTL: snLongTTL, Topic: "scores", VAPID: vapid})
		snMustCreate(ctx, t, sub, []byte("other-topic"), snPush{TTL: snLongTTL, Topic: "news", VAPID: vapid})
		snMustCreate(ctx, t, sub, []byte("newer"), snPush{TTL: snLongTTL, Topic: "scores", VAPID: vapid})
		ua := uaRedial(ctx, t, s.WSURL, uaid)
		// "older" would have come first: it was accepted first.
		a := snExpect(ctx, t, ua, sub, "other-topic")
		b := snExpect(ctx, t, ua, sub, "newer")
		ua.ack(a, b)
		snMarker(ctx, t, ua, sub, vapid)
	})

	t.Run("TTLExpiry", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		uaid, sub := snOffline(ctx, t, s, "")
		snMustCreate(ctx, t, sub, []byte("long-1"), snPush{TTL: snLongTTL, VAPID: vapid})
		snMustCreate(ctx, t, sub, []byte("short"), snPush{TTL: 1, VAPID: vapid})
		accepted := time.Now()
		snMustCreate(ctx, t, sub, []byte("long-2"), snPush{TTL: snLongTTL, VAPID: vapid})
		// The condition here is time itself: the 1 s TTL must have passed
		// (with a margin for millisecond rounding) before the UA returns.
		time.Sleep(time.Until(accepted.Add(2500 * time.Millisecond)))
		ua := uaRedial(ctx, t, s.WSURL, uaid)
		a := snExpect(ctx, t, ua, sub, "long-1")
		b := snExpect(ctx, t, ua, sub, "long-2") // not "short": it expired
		ua.ack(a, b)
	})

	t.Run("TTLZero", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		uaid, sub := snOffline(ctx, t, s, "")
		// webpush-go's default TTL is 0: deliver now or never.
		snMustCreate(ctx, t, sub, []byte("zero-while-offline"), snPush{VAPID: vapid})
		ua := uaRedial(ctx, t, s.WSURL, uaid)
		snMarker(ctx, t, ua, sub, vapid) // not the TTL 0 message
		// Connected (the marker proves the owner has the session): TTL 0
		// is delivered.
		snMustCreate(ctx, t, sub, []byte("zero-while-online"), snPush{VAPID: vapid})
		n := snExpect(ctx, t, ua, sub, "zero-while-online")
		ua.ack(n)
	})

	t.Run("GoneAfterUnregister", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		ua := uaDial(ctx, t, s.WSURL, "")
		sub := ua.subscribe(ctx, "")
		snMustCreate(ctx, t, sub, []byte("before"), snPush{TTL: 60, VAPID: vapid})
		ua.ack(snExpect(ctx, t, ua, sub, "before"))
		ua.unregister(ctx, sub.ChannelID)
		// The gone set is projected from the log: eventually consistent.
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res := snSendUntil(gctx, t, sub, snPush{TTL: 60, VAPID: vapid}, http.StatusGone)
		snCheckError(t, "push after unregister", res.Status, res.Header, res.Body, http.StatusGone, 106)
		if cc := res.Header.Get("Cache-Control"); cc != "max-age=86400" {
			t.Errorf("410 Cache-Control %q, want max-age=86400", cc)
		}
		// The other channels of the UAID are unaffected.
		other := ua.subscribe(ctx, "")
		snMustCreate(ctx, t, other, []byte("still here"), snPush{TTL: 60, VAPID: vapid})
		ua.ack(snExpect(ctx, t, ua, other, "still here"))
	})

	t.Run("GoneAfterUAIDReset", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		// An endpoint of a UAID this deployment sealed but no longer knows
		// (its registrations are lost): the client's hello with that UAID
		// resets it and gets a new one; its endpoints then answer 410 103.
		lost := schema.NewUAID()
		token, err := sealer.SealEndpoint(schema.Endpoint{UAID: lost, ChannelID: uaChannelID()})
		if err != nil {
			t.Fatal(err)
		}
		keys, err := webpush.GenerateReceiverKeys()
		if err != nil {
			t.Fatal(err)
		}
		sub := &uaSubscription{Endpoint: s.HTTPURL + "/wpush/v1/" + token, Keys: keys}
		ua := uaDial(ctx, t, s.WSURL, lost)
		if ua.UAID == lost {
			t.Fatalf("hello with the unknown uaid %s kept it", lost)
		}
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res := snSendUntil(gctx, t, sub, snPush{TTL: 60, VAPID: vapid}, http.StatusGone)
		snCheckError(t, "push to a reset uaid", res.Status, res.Header, res.Body, http.StatusGone, 103)
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		uaid, sub := snOffline(ctx, t, s, "")
		res := snMustCreate(ctx, t, sub, []byte("regretted"), snPush{TTL: snLongTTL, VAPID: vapid})
		snMessageID(t, s, res)
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, res.Header.Get("Location"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE %s: %d %s, want 204", res.Header.Get("Location"), resp.StatusCode, b)
		}
		ua := uaRedial(ctx, t, s.WSURL, uaid)
		snMarker(ctx, t, ua, sub, vapid) // not "regretted"
	})

	t.Run("Redelivery", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		ua := uaDial(ctx, t, s.WSURL, "")
		uaid := ua.UAID
		sub := ua.subscribe(ctx, "")
		snMustCreate(ctx, t, sub, []byte("ack me"), snPush{TTL: snLongTTL, VAPID: vapid})
		first := snExpect(ctx, t, ua, sub, "ack me")
		ua.close() // without acking

		ua = uaRedial(ctx, t, s.WSURL, uaid)
		again := snExpect(ctx, t, ua, sub, "ack me")
		if again.Version != first.Version {
			t.Fatalf("redelivered as version %q, first delivered as %q", again.Version, first.Version)
		}
		ua.ack(again)
		ua.sync(ctx) // the ack has been handled
		ua.close()

		ua = uaRedial(ctx, t, s.WSURL, uaid)
		snMarker(ctx, t, ua, sub, vapid) // not "ack me" again
	})

	t.Run("KeyBoundSubscription", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, snTimeout)
		ua := uaDial(ctx, t, s.WSURL, "")
		if r := ua.register(ctx, uaChannelID(), "BAD-KEY"); r.Status != 400 {
			t.Fatalf("register with a bad key: %s, want status 400", r.Raw)
		}
		sub := ua.subscribe(ctx, vapid.Public)
		if !strings.HasPrefix(sub.Endpoint, s.HTTPURL+"/wpush/v2/") {
			t.Fatalf("key-bound endpoint %q is not %s/wpush/v2/…", sub.Endpoint, s.HTTPURL)
		}
		snMustCreate(ctx, t, sub, []byte("signed by the bound key"), snPush{TTL: 60, VAPID: vapid})
		ua.ack(snExpect(ctx, t, ua, sub, "signed by the bound key"))

		res := snSend(ctx, t, sub, []byte("signed by a stranger"), snPush{TTL: 60, VAPID: snNewVAPID(t)})
		snCheckError(t, "v2 push signed with another key", res.Status, res.Header, res.Body, http.StatusUnauthorized, 109)
		snMarker(ctx, t, ua, sub, vapid) // the stranger's message was not delivered
	})
}

// TestSingleNodeAckAcrossRestart: what was acked stays acked and what was
// not comes again, across graceful restarts of the process.
func TestSingleNodeAckAcrossRestart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	s, _ := snServer(t)
	vapid := snNewVAPID(t)
	ua := uaDial(ctx, t, s.WSURL, "")
	uaid := ua.UAID
	sub := ua.subscribe(ctx, "")
	snMustCreate(ctx, t, sub, []byte("acked before restart"), snPush{TTL: snLongTTL, VAPID: vapid})
	snMustCreate(ctx, t, sub, []byte("not acked"), snPush{TTL: snLongTTL, VAPID: vapid})
	a := snExpect(ctx, t, ua, sub, "acked before restart")
	b := snExpect(ctx, t, ua, sub, "not acked")
	ua.ack(a)
	ua.sync(ctx)
	ua.close()

	s.terminate()
	s.restart()
	ua = uaRedial(ctx, t, s.WSURL, uaid)
	again := snExpect(ctx, t, ua, sub, "not acked")
	if again.Version != b.Version {
		t.Fatalf("redelivered as version %q, first delivered as %q", again.Version, b.Version)
	}
	ua.ack(again)
	ua.sync(ctx)
	ua.close()

	s.terminate()
	s.restart()
	ua = uaRedial(ctx, t, s.WSURL, uaid)
	snMarker(ctx, t, ua, sub, vapid) // neither message again
}
