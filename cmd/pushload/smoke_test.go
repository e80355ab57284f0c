package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakePush is a push service in miniature, enough to drive every push
// mode: hello/register on WebSocket, POST /push/UAID answered 201 and
// forwarded as a notification when the UAID is connected. It checks what
// a real server checks first: VAPID and an aes128gcm body.
type fakePush struct {
	mu    sync.Mutex
	conns map[string]*fakeConn
	seq   int
	srv   *httptest.Server
	bad   int            // pushes without VAPID or aes128gcm
	auths map[string]int // Authorization → pushes that carried it
}

type fakeConn struct {
	mu sync.Mutex
	ws *websocket.Conn
}

func newFakePush(t *testing.T) *fakePush {
	f := &fakePush{conns: map[string]*fakeConn{}, auths: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", f.socket)
	mux.HandleFunc("POST /push/{uaid}", f.push)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePush) wsURL() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/" }

func (f *fakePush) socket(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{"push-notification"}}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	c := &fakeConn{ws: ws}
	var uaid string
	defer func() {
		f.mu.Lock()
		if f.conns[uaid] == c {
			delete(f.conns, uaid)
		}
		f.mu.Unlock()
	}()
	for {
		var m map[string]any
		if ws.ReadJSON(&m) != nil {
			return
		}
		var reply map[string]any
		switch m["messageType"] {
		case "hello":
			f.mu.Lock()
			f.seq++
			uaid = fmt.Sprintf("ua%d", f.seq)
			f.conns[uaid] = c
			f.mu.Unlock()
			reply = map[string]any{"messageType": "hello", "status": 200, "uaid": uaid}
		case "register":
			reply = map[string]any{"messageType": "register", "status": 200, "channelID": m["channelID"],
				"pushEndpoint": f.srv.URL + "/push/" + uaid}
		default:
			continue
		}
		c.mu.Lock()
		err := ws.WriteJSON(reply)
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (f *fakePush) push(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !strings.HasPrefix(r.Header.Get("Authorization"), "vapid t=") || r.Header.Get("Content-Encoding") != "aes128gcm" || len(body) < bodyOverhead {
		f.mu.Lock()
		f.bad++
		f.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	c := f.conns[r.PathValue("uaid")]
	f.auths[r.Header.Get("Authorization")]++
	f.mu.Unlock()
	if c != nil {
		c.mu.Lock()
		_ = c.ws.WriteJSON(map[string]any{"messageType": "notification", "channelID": "c", "version": "v",
			"data": base64.RawURLEncoding.EncodeToString(body)})
		c.mu.Unlock()
	}
	w.WriteHeader(http.StatusCreated)
}

func smokeTarget(f *fakePush) target {
	return target{WS: f.wsURL(), Agents: 5, Body: 256, TTL: 60, Subject: "mailto:t@example.com",
		Timeout: 5 * time.Second, SetupConcurrency: 5, Duration: 300 * time.Millisecond}
}

// Every push mode runs end to end against the fake service and counts what
// it sent and saw. Counts only: nothing here is timed.
func TestModesSmoke(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		run  func(target) (*report, error)
		want map[string]func(string) bool
	}{
		{"rate", func(tg target) (*report, error) {
			c := rateCmd{target: tg, Rate: 200, MaxInflight: 100, Conns: 4, Drain: 5 * time.Second}
			return c.run(ctx)
		}, map[string]func(string) bool{"lost": eq("0"), "skipped": eq("0"), "delivered": positive}},
		{"offline", func(tg target) (*report, error) {
			c := throughput{target: tg, Concurrency: 2}
			return c.run(ctx, "offline", false, false)
		}, map[string]func(string) bool{"accepted": positive}},
		{"connected", func(tg target) (*report, error) {
			c := throughput{target: tg, Concurrency: 2}
			return c.run(ctx, "connected", true, false)
		}, map[string]func(string) bool{"accepted": positive, "delivered": positive}},
		{"fresh-jwt", func(tg target) (*report, error) {
			c := throughput{target: tg, Concurrency: 2}
			return c.run(ctx, "fresh-jwt", false, true)
		}, map[string]func(string) bool{"accepted": positive, "signed_live": positive}},
		// 20 tokens signed ahead, then signed as sent: a fresh one per push either way.
		{"fresh-jwt presigned", func(tg target) (*report, error) {
			c := throughput{target: tg, Concurrency: 2, presign: 20}
			return c.run(ctx, "fresh-jwt", false, true)
		}, map[string]func(string) bool{"accepted": positive, "signed_live": positive}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePush(t)
			r, err := tc.run(smokeTarget(f))
			if err != nil {
				t.Fatal(err)
			}
			if f.bad != 0 {
				t.Fatalf("%d pushes without VAPID or an aes128gcm body", f.bad)
			}
			if st := r.get("statuses"); strings.ContainsAny(strings.ReplaceAll(st, "201:", ""), ":") {
				t.Errorf("statuses other than 201: %s", st)
			}
			for k, ok := range tc.want {
				if !ok(r.get(k)) {
					t.Errorf("%s=%q in %s", k, r.get(k), r)
				}
			}
			if strings.HasPrefix(tc.name, "fresh-jwt") {
				f.mu.Lock()
				received := len(f.auths)
				for a, n := range f.auths {
					if n > 1 {
						t.Errorf("a token carried %d pushes: %.40s…", n, a)
						break
					}
				}
				f.mu.Unlock()
				// Every push carried a presigned token or one signed as it
				// was sent; at most one per sender was cut off unsent.
				live, _ := strconv.Atoi(r.get("signed_live"))
				if tc.name == "fresh-jwt presigned" && received-live < 20-2 {
					t.Errorf("%d pushes received, %d signed as sent: the 20 presigned tokens were not used", received, live)
				}
			}
			if tc.name == "rate" && r.get("delivered") != r.get("accepted") {
				t.Errorf("delivered %s of %s accepted", r.get("delivered"), r.get("accepted"))
			}
		})
	}
}

func eq(want string) func(string) bool { return func(v string) bool { return v == want } }

func positive(v string) bool { return v != "" && v != "0" && !strings.HasPrefix(v, "-") }
