package connector

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

func TestSubprotocol(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		name      string
		requested []string
		want      string
	}{
		{"push-notification echoed", []string{Subprotocol}, Subprotocol},
		{"none requested, none sent", nil, ""},
		{"another is never sent", []string{"chat"}, ""},
		{"picked among several", []string{"chat", Subprotocol}, Subprotocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tt.requested}
			c, resp, err := d.Dial(h.url, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			resp.Body.Close()
			if got := c.Subprotocol(); got != tt.want {
				t.Fatalf("subprotocol %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNonUpgradeRequests(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		path string
		want int
	}{
		{"/", http.StatusBadRequest},
		{"/other", http.StatusNotFound},
	}
	for _, tt := range tests {
		resp, err := http.Get(h.http.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s: %d, want %d", tt.path, resp.StatusCode, tt.want)
		}
	}
}

// Every way a client can break the framing or the JSON rules, and the close
// code it gets.
func TestProtocolViolationsClose(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxMessage = 1024 })
	helloMsg := `{"messageType":"hello","use_webpush":true}`
	tests := []struct {
		name   string
		hello  bool // say hello first
		binary bool
		msg    string
		code   int
	}{
		{"binary frame", false, true, helloMsg, closeUnsupported},
		{"binary frame after hello", true, true, `{}`, closeUnsupported},
		{"bad JSON", false, false, `{"messageType":`, closeProtocol},
		{"bad JSON after hello", true, false, `not json`, closeProtocol},
		{"JSON array", true, false, `[]`, closeProtocol},
		{"unknown messageType", true, false, `{"messageType":"urgency","min":"high"}`, closeProtocol},
		{"no messageType", true, false, `{"channelID":"x"}`, closeProtocol},
		{"wrong field type", true, false, `{"messageType":"register","channelID":5}`, closeProtocol},
		{"ping before hello", false, false, `{}`, closeProtocol},
		{"register before hello", false, false, `{"messageType":"register","channelID":"` + newChannelID() + `"}`, closeProtocol},
		{"second hello", true, false, helloMsg, closeProtocol},
		{"invalid UTF-8", true, false, "{\"messageType\":\"ping\",\"x\":\"\xff\"}", closeInvalidData},
		{"message too big", true, false, `{"messageType":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`, websocket.CloseMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial()
			if tt.hello {
				send(t, c, helloMsg)
				recv(t, c)
			}
			typ := websocket.TextMessage
			if tt.binary {
				typ = websocket.BinaryMessage
			}
			if err := c.WriteMessage(typ, []byte(tt.msg)); err != nil {
				t.Fatal(err)
			}
			expectClose(t, c, tt.code)
		})
	}
}

func TestHelloTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HelloTimeout = 100 * time.Millisecond })
	c := h.dial()
	expectClose(t, c, closeProtocol)
	waitFor(t, "no connections", func() bool { return h.srv.Connections() == 0 })
}

var helloReplyRE = regexp.MustCompile(`^\{"messageType":"hello","uaid":"[0-9a-f]{32}","status":200,"use_webpush":true,"broadcasts":\{\}\}$`)

func TestHelloNewUAID(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		name string
		msg  string
	}{
		{"no uaid", `{"messageType":"hello","use_webpush":true,"broadcasts":{}}`},
		{"minimal", `{"messageType":"hello"}`},
		{"empty uaid", `{"messageType":"hello","uaid":""}`},
		{"malformed uaid", `{"messageType":"hello","uaid":"not-a-uaid"}`},
		{"uaid not a string", `{"messageType":"hello","uaid":42}`},
		{"null uaid", `{"messageType":"hello","uaid":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial()
			send(t, c, tt.msg)
			raw := recvRaw(t, c)
			if !helloReplyRE.Match(raw) {
				t.Fatalf("hello reply %s", raw)
			}
		})
	}
	h.link.mu.Lock()
	checks := len(h.link.checks)
	h.link.mu.Unlock()
	if checks != 0 {
		t.Errorf("CheckUAID called %d times for missing/malformed uaids", checks)
	}
	if resets := h.settle(isType[*pb.Event_UserReset]); len(resets) != 0 {
		t.Errorf("%d UserReset events for missing/malformed uaids", len(resets))
	}
}

func isType[T any](ev *pb.Event) bool {
	_, ok := ev.GetBody().(T)
	return ok
}

func TestHelloKnownUAIDKept(t *testing.T) {
	h := newHarness(t, nil)
	uaid := schema.NewUAID()
	h.link.known[uaid] = true
	for _, given := range []string{uaid, strings.ToUpper(uaid)} {
		c, reply := h.hello(given)
		if reply["uaid"] != uaid {
			t.Fatalf("hello with %s: uaid %v, want %s", given, reply["uaid"], uaid)
		}
		c.Close()
	}
	ev := h.event("connected", func(ev *pb.Event) bool { return ev.GetUaid() == uaid && ev.GetConnected() != nil })
	con := ev.GetConnected()
	if con.GetNode() != "node-1" || con.GetLinkAddr() != "127.0.0.1:7000" || len(con.GetConnId()) != 16 || con.GetSinceMs() == 0 {
		t.Errorf("connected event %v", con)
	}
	if !strings.Contains(con.GetUserAgent(), "Go-http-client") {
		t.Errorf("user agent %q", con.GetUserAgent())
	}
}

func TestHelloUnknownUAIDReset(t *testing.T) {
	h := newHarness(t, nil)
	old := schema.NewUAID()
	_, reply := h.hello(old)
	if reply["uaid"] == old {
		t.Fatal("unknown uaid kept")
	}
	ev := h.event("user reset", func(ev *pb.Event) bool { return ev.GetUserReset() != nil })
	if ev.GetUaid() != old {
		t.Fatalf("reset of %s, want %s", ev.GetUaid(), old)
	}
	h.event("connected of the new uaid", func(ev *pb.Event) bool {
		return ev.GetConnected() != nil && ev.GetUaid() == reply["uaid"]
	})
}

func TestHelloOwnerErrors(t *testing.T) {
	tests := []struct {
		name      string
		checkErr  error
		attachErr error
		uaid      bool
	}{
		{"CheckUAID fails", link.ErrNotOwner, nil, true},
		{"Attach fails", nil, link.ErrNotOwner, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.link.checkErr, h.link.attachErr = tt.checkErr, tt.attachErr
			c := h.dial()
			msg := map[string]any{"messageType": "hello"}
			if tt.uaid {
				msg["uaid"] = schema.NewUAID()
			}
			send(t, c, msg)
			expectClose(t, c, closeTryAgain)
			if resets := h.settle(isType[*pb.Event_UserReset]); len(resets) != 0 {
				t.Errorf("uaid reset on an owner error")
			}
		})
	}
}

func TestNewerConnectionReplacesOlder(t *testing.T) {
	h := newHarness(t, nil)
	uaid := schema.NewUAID()
	h.link.known[uaid] = true
	first, _ := h.hello(uaid)
	firstSession := h.link.session(t, uaid)
	second, _ := h.hello(uaid)
	expectClose(t, first, closeNormal)
	waitFor(t, "one connection", func() bool { return h.srv.Connections() == 1 })
	send(t, second, `{}`)
	if got := recvRaw(t, second); string(got) != "{}" {
		t.Fatalf("ping reply %s", got)
	}
	if err := firstSession.Deliver(link.Notification{ChannelID: newChannelID(), Version: "v"}); !errors.Is(err, link.ErrSessionClosed) {
		t.Fatalf("deliver to replaced session: %v", err)
	}
	firstID := firstSession.(*conn).ConnID()
	h.event("disconnected of the first", func(ev *pb.Event) bool {
		return ev.GetDisconnected().GetConnId() == firstID
	})
}

func TestStoredMessagesFollowHello(t *testing.T) {
	h := newHarness(t, nil)
	chid := newChannelID()
	h.link.onAttach = func(uaid string, s link.Session) {
		for i := range 3 {
			v := h.sealedVersion(uaid, chid, int64(i))
			if err := s.Deliver(link.Notification{UAID: uaid, ChannelID: chid, Version: v}); err != nil {
				t.Errorf("deliver: %v", err)
			}
		}
	}
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	for i := range 3 {
		m := recv(t, c)
		if m["messageType"] != "notification" || m["version"] != h.sealedVersion(uaid, chid, int64(i)) {
			t.Fatalf("message %d: %v", i, m)
		}
	}
}

func TestRegister(t *testing.T) {
	h := newHarness(t, nil)
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)

	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rawKey := priv.PublicKey().Bytes()
	keyHash := sha256.Sum256(rawKey)
	notOnCurve := append([]byte{4}, make([]byte, 64)...)
	compressed := append([]byte{5}, rawKey[1:]...)
	chid := newChannelID()
	keyed := newChannelID()
	endpoints := map[string]string{}

	tests := []struct {
		name    string
		msg     map[string]any
		status  float64
		version int // endpoint version expected on 200
	}{
		{"no key", map[string]any{"channelID": chid}, 200, 1},
		{"same channel again", map[string]any{"channelID": chid}, 200, 1},
		{"key padded (Firefox)", map[string]any{"channelID": keyed, "key": base64.URLEncoding.EncodeToString(rawKey)}, 200, 2},
		{"key unpadded", map[string]any{"channelID": keyed, "key": base64.RawURLEncoding.EncodeToString(rawKey)}, 200, 2},
		{"key standard base64", map[string]any{"channelID": keyed, "key": base64.StdEncoding.EncodeToString(rawKey)}, 200, 2},
		{"null key", map[string]any{"channelID": newChannelID(), "key": nil}, 200, 1},
		{"empty key", map[string]any{"channelID": newChannelID(), "key": ""}, 400, 0},
		{"key not base64", map[string]any{"channelID": newChannelID(), "key": "!!!"}, 400, 0},
		{"key too short", map[string]any{"channelID": newChannelID(), "key": base64.RawURLEncoding.EncodeToString(rawKey[:64])}, 400, 0},
		{"key not on the curve", map[string]any{"channelID": newChannelID(), "key": base64.RawURLEncoding.EncodeToString(notOnCurve)}, 400, 0},
		{"key with wrong prefix", map[string]any{"channelID": newChannelID(), "key": base64.RawURLEncoding.EncodeToString(compressed)}, 400, 0},
		{"uppercase channel", map[string]any{"channelID": strings.ToUpper(newChannelID())}, 401, 0},
		{"undashed channel", map[string]any{"channelID": strings.ReplaceAll(newChannelID(), "-", "")}, 401, 0},
		{"garbage channel", map[string]any{"channelID": "abc"}, 401, 0},
		{"missing channel", map[string]any{}, 401, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.msg["messageType"] = "register"
			send(t, c, tt.msg)
			r := recv(t, c)
			wantChannel := tt.msg["channelID"]
			if wantChannel == nil {
				wantChannel = ""
			}
			if r["messageType"] != "register" || r["status"] != tt.status || r["channelID"] != wantChannel {
				t.Fatalf("reply %v, want status %v", r, tt.status)
			}
			if tt.status != 200 {
				if _, ok := r["pushEndpoint"]; ok {
					t.Fatalf("endpoint in a failed reply: %v", r)
				}
				return
			}
			ep := r["pushEndpoint"].(string)
			prefix := "https://push.example.test/wpush/v" + string(rune('0'+tt.version)) + "/"
			if !strings.HasPrefix(ep, prefix) {
				t.Fatalf("endpoint %s, want prefix %s", ep, prefix)
			}
			tok, err := h.sealer.OpenEndpoint(strings.TrimPrefix(ep, prefix))
			if err != nil || tok.UAID != uaid || tok.ChannelID != tt.msg["channelID"] || tok.Version() != tt.version {
				t.Fatalf("endpoint token %+v, %v", tok, err)
			}
			if prev, ok := endpoints[tok.ChannelID]; ok && prev != ep {
				t.Fatalf("re-register changed the endpoint: %s then %s", prev, ep)
			}
			endpoints[tok.ChannelID] = ep
		})
	}
	// The reply follows a durable event.
	regs := h.settle(func(ev *pb.Event) bool { return ev.GetChannelRegistered() != nil })
	if len(regs) != 6 {
		t.Fatalf("%d ChannelRegistered events, want 6", len(regs))
	}
	for _, ev := range regs {
		r := ev.GetChannelRegistered()
		if ev.GetUaid() != uaid {
			t.Errorf("event of %s", ev.GetUaid())
		}
		wantHash := []byte(nil)
		if r.GetChannelId() == keyed {
			wantHash = keyHash[:]
		}
		if !bytes.Equal(r.GetKeyHash(), wantHash) {
			t.Errorf("channel %s key hash %x, want %x", r.GetChannelId(), r.GetKeyHash(), wantHash)
		}
	}
}

func TestRegisterUnregisterWhenKafkaIsDown(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ProduceTimeout = 300 * time.Millisecond }, kgo.RecordDeliveryTimeout(time.Second))
	// A known UAID holding chid, so the unregister below has something to
	// write (an unknown channel's unregister writes nothing).
	uaid, chid := schema.NewUAID(), newChannelID()
	h.link.addUAID(uaid, chid)
	c, _ := h.hello(uaid)
	h.cluster.Close()
	send(t, c, map[string]any{"messageType": "register", "channelID": chid})
	if r := recv(t, c); r["status"] != 500.0 || r["pushEndpoint"] != nil {
		t.Fatalf("register reply %v", r)
	}
	send(t, c, map[string]any{"messageType": "unregister", "channelID": chid})
	if r := recv(t, c); r["status"] != 500.0 {
		t.Fatalf("unregister reply %v", r)
	}
}

func TestUnregister(t *testing.T) {
	h := newHarness(t, nil)
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	chid := newChannelID()
	tests := []struct {
		name     string
		channel  string
		code     any
		status   float64
		event    string // channel id in the event, "" for none
		evCode   int32
		regFirst bool // register chid first (an unknown channel's unregister writes nothing)
	}{
		{"registered channel", chid, 200, 200, chid, 200, true},
		{"unknown channel is still 200", newChannelID(), 202, 200, "", 202, false},
		{"uppercase is normalized", strings.ToUpper(chid), nil, 200, chid, 0, true},
		{"malformed channel", "nope", 200, 401, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.regFirst {
				send(t, c, map[string]any{"messageType": "register", "channelID": chid})
				if r := recv(t, c); r["status"] != 200.0 {
					t.Fatalf("register reply %v", r)
				}
			}
			msg := map[string]any{"messageType": "unregister", "channelID": tt.channel}
			if tt.code != nil {
				msg["code"] = tt.code
			}
			send(t, c, msg)
			r := recv(t, c)
			if r["messageType"] != "unregister" || r["status"] != tt.status || r["channelID"] != tt.channel {
				t.Fatalf("reply %v", r)
			}
			if tt.event == "" {
				return
			}
			h.event("unregistered", func(ev *pb.Event) bool {
				u := ev.GetChannelUnregistered()
				return ev.GetUaid() == uaid && u.GetChannelId() == tt.event && u.GetCode() == tt.evCode
			})
		})
	}
}

func TestNotificationFormat(t *testing.T) {
	h := newHarness(t, nil)
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	chid := newChannelID()
	tests := []struct {
		name string
		n    link.Notification
		want string
	}{
		{"aes128gcm",
			link.Notification{ChannelID: chid, Version: "v1", Data: []byte{0xfb, 0xff, 0x01}, Encoding: "aes128gcm"},
			`{"messageType":"notification","channelID":"` + chid + `","version":"v1","data":"-_8B","headers":{"encoding":"aes128gcm"}}`},
		{"aesgcm",
			link.Notification{ChannelID: chid, Version: "v2", Data: []byte("hi"), Encoding: "aesgcm", Encryption: "salt=abc", CryptoKey: "dh=xyz"},
			`{"messageType":"notification","channelID":"` + chid + `","version":"v2","data":"aGk","headers":{"encoding":"aesgcm","encryption":"salt=abc","crypto_key":"dh=xyz"}}`},
		{"empty body",
			link.Notification{ChannelID: chid, Version: "v3"},
			`{"messageType":"notification","channelID":"` + chid + `","version":"v3"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.n.UAID = uaid
			if err := s.Deliver(tt.n); err != nil {
				t.Fatal(err)
			}
			if got := recvRaw(t, c); string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAckAndNack(t *testing.T) {
	h := newHarness(t, nil)
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	chid := newChannelID()
	delivered := h.sealedVersion(uaid, chid, 7)
	ref := &pb.MessageRef{Partition: 0, Offset: 7, ChannelId: chid, AcceptedMs: 12345, VapidSub: "mailto:a@example.com"}
	if err := s.Deliver(link.Notification{UAID: uaid, ChannelID: chid, Version: delivered, Ref: ref}); err != nil {
		t.Fatal(err)
	}
	recv(t, c)
	earlier := h.sealedVersion(uaid, chid, 3) // delivered on an earlier connection
	otherUAID := h.sealedVersion(schema.NewUAID(), chid, 9)

	send(t, c, map[string]any{"messageType": "nack", "version": delivered, "code": 302})
	send(t, c, map[string]any{"messageType": "nack", "version": earlier, "code": 999})
	send(t, c, map[string]any{"messageType": "ack", "updates": []map[string]any{
		{"channelID": chid, "version": delivered, "code": 101},
		{"channelID": chid, "version": earlier},
		{"channelID": chid, "version": otherUAID, "code": 100},
		{"channelID": chid, "version": "garbage", "code": 100},
		{"channelID": chid, "version": "", "code": 100},
	}})
	send(t, c, `{}`) // replies once everything before it was handled
	recv(t, c)

	acked := h.link.ackedRefs()
	if len(acked) != 2 || acked[0].GetOffset() != 7 || acked[0].GetAcceptedMs() != 12345 || acked[1].GetOffset() != 3 {
		t.Fatalf("Link.Acked refs %v", acked)
	}
	acks := h.settle(func(ev *pb.Event) bool { return ev.GetAcked() != nil })
	nacks := h.settle(func(ev *pb.Event) bool { return ev.GetNacked() != nil })
	if len(acks) != 2 || len(nacks) != 2 {
		t.Fatalf("%d acks, %d nacks; want 2 and 2", len(acks), len(nacks))
	}
	a0, a1 := acks[0].GetAcked(), acks[1].GetAcked()
	if a0.GetCode() != 101 || a0.GetMsg().GetVapidSub() != "mailto:a@example.com" || a0.GetMsg().GetOffset() != 7 {
		t.Errorf("ack of the delivered message: %v", a0)
	}
	if a1.GetCode() != 100 || a1.GetMsg().GetOffset() != 3 || a1.GetMsg().GetChannelId() != chid || a1.GetMsg().GetAcceptedMs() != 0 {
		t.Errorf("ack of an earlier message: %v", a1)
	}
	n0, n1 := nacks[0].GetNacked(), nacks[1].GetNacked()
	if n0.GetCode() != 302 || n0.GetMsg().GetAcceptedMs() != 12345 || n1.GetCode() != 0 || n1.GetMsg().GetOffset() != 3 {
		t.Errorf("nacks %v, %v", n0, n1)
	}
	for _, ev := range append(acks, nacks...) {
		if ev.GetUaid() != uaid {
			t.Errorf("event of uaid %s", ev.GetUaid())
		}
	}
}

func TestClientPing(t *testing.T) {
	tests := []struct {
		name    string
		minPing time.Duration
		second  int // close code for a second ping right away, 0 for a reply
	}{
		{"often enough", time.Nanosecond, 0},
		{"too often", time.Hour, closeBackoff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MinClientPing = tt.minPing })
			c, _ := h.hello("")
			send(t, c, " { } ")
			if got := recvRaw(t, c); string(got) != "{}" {
				t.Fatalf("ping reply %s", got)
			}
			send(t, c, `{"messageType":"ping"}`)
			if tt.second != 0 {
				expectClose(t, c, tt.second)
				return
			}
			if got := recvRaw(t, c); string(got) != "{}" {
				t.Fatalf("ping reply %s", got)
			}
		})
	}
}

func TestServerPing(t *testing.T) {
	t.Run("answered pings keep the socket", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.PingInterval, c.PongTimeout = 20*time.Millisecond, 2*time.Second })
		c, _ := h.hello("")
		pings := make(chan struct{}, 10)
		c.SetPingHandler(func(data string) error {
			pings <- struct{}{}
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		for i := range 3 {
			select {
			case <-pings:
			case <-time.After(testTimeout):
				t.Fatalf("ping %d not received", i)
			}
		}
	})
	t.Run("no pong closes", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.PingInterval, c.PongTimeout = 20*time.Millisecond, 100*time.Millisecond })
		c, _ := h.hello("")
		c.SetPingHandler(func(string) error { return nil })
		expectClose(t, c, closeGoingAway)
		waitFor(t, "detach", func() bool { return h.link.detachCount() == 1 })
	})
}

// A client's control Ping gets a Pong with the same payload.
func TestClientControlPing(t *testing.T) {
	h := newHarness(t, nil)
	c, _ := h.hello("")
	pong := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	send(t, c, `{}`)
	recvRaw(t, c)
	select {
	case got := <-pong:
		if got != "are you there" {
			t.Fatalf("pong payload %q", got)
		}
	default:
		t.Fatal("no pong before the ping reply")
	}
}

// maskedFrame builds a client frame by hand, so several can share one write.
func maskedFrame(op byte, payload []byte) []byte {
	if len(payload) > 125 {
		panic("short frames only")
	}
	mask := []byte{1, 2, 3, 4}
	f := []byte{0x80 | op, 0x80 | byte(len(payload))}
	f = append(f, mask...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// Messages and control frames arriving in one TCP segment are all handled:
// the server drains its read buffer before it waits again.
func TestPipelinedMessages(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	chid := newChannelID()
	var burst []byte
	burst = append(burst, maskedFrame(0x1, []byte(`{"messageType":"hello"}`))...)
	burst = append(burst, maskedFrame(opPing, []byte("p"))...)
	burst = append(burst, maskedFrame(0x1, []byte(`{"messageType":"register","channelID":"`+chid+`"}`))...)
	burst = append(burst, maskedFrame(0x1, []byte(`{}`))...)
	if _, err := c.NetConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	pong := make(chan struct{}, 1)
	c.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
	for _, want := range []string{"hello", "register"} {
		if m := recv(t, c); m["messageType"] != want {
			t.Fatalf("got %v, want %s", m, want)
		}
	}
	if got := recvRaw(t, c); string(got) != "{}" {
		t.Fatalf("ping reply %s", got)
	}
	select {
	case <-pong:
	default:
		t.Fatal("no pong")
	}
}

func TestBroadcasts(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Broadcasts = map[string]string{"remote-settings/monitor_changes": "v2", "b": "1"}
		c.MinClientPing = time.Nanosecond
	})
	c := h.dial()
	send(t, c, `{"messageType":"hello","broadcasts":{"remote-settings/monitor_changes":"v1","b":"1","nope":"x"}}`)
	r := recv(t, c)
	bc := r["broadcasts"].(map[string]any)
	if len(bc) != 2 || bc["remote-settings/monitor_changes"] != "v2" || bc["errors"].(map[string]any)["nope"] != "Broadcast not found" {
		t.Fatalf("hello broadcasts %v", bc)
	}
	tests := []struct {
		name string
		msg  string
		want string // "" for no reply
	}{
		{"up to date: no reply", `{"messageType":"broadcast_subscribe","broadcasts":{"b":"1"}}`, ""},
		{"outdated", `{"messageType":"broadcast_subscribe","broadcasts":{"b":"0"}}`, `{"messageType":"broadcast","broadcasts":{"b":"1"}}`},
		{"unknown", `{"messageType":"broadcast_subscribe","broadcasts":{"x":"1"}}`, `{"messageType":"broadcast","broadcasts":{"errors":{"x":"Broadcast not found"}}}`},
		{"empty", `{"messageType":"broadcast_subscribe","broadcasts":{}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send(t, c, tt.msg)
			if tt.want != "" {
				if got := recvRaw(t, c); string(got) != tt.want {
					t.Fatalf("got %s, want %s", got, tt.want)
				}
			}
			send(t, c, `{"messageType":"ping"}`) // the next message must be its reply
			if got := recvRaw(t, c); string(got) != "{}" {
				t.Fatalf("unexpected message %s", got)
			}
		})
	}
	h.srv.SetBroadcasts(map[string]string{"remote-settings/monitor_changes": "v2", "b": "2", "c": "1"})
	if got := recvRaw(t, c); string(got) != `{"messageType":"broadcast","broadcasts":{"b":"2"}}` {
		t.Fatalf("broadcast update %s", got)
	}
}

func TestDisconnect(t *testing.T) {
	h := newHarness(t, nil)
	c, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	if n := h.srv.Connections(); n != 1 {
		t.Fatalf("%d connections", n)
	}
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.Close()
	waitFor(t, "detach", func() bool { return h.link.detachCount() == 1 })
	waitFor(t, "no connections", func() bool { return h.srv.Connections() == 0 })
	ev := h.event("disconnected", func(ev *pb.Event) bool { return ev.GetDisconnected() != nil })
	d := ev.GetDisconnected()
	if ev.GetUaid() != uaid || d.GetConnId() != s.ConnID() || d.GetNode() != "node-1" || d.GetDurationMs() < 0 {
		t.Fatalf("disconnected %v", d)
	}
	if err := s.Deliver(link.Notification{ChannelID: newChannelID(), Version: "v"}); !errors.Is(err, link.ErrSessionClosed) {
		t.Fatalf("deliver after close: %v", err)
	}
}

// A client that does not read makes its queue overflow: the socket closes
// and Deliver reports the session gone without ever blocking.
func TestDeliverOverflowCloses(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.SendQueue = 4 })
	_, reply := h.hello("")
	uaid := reply["uaid"].(string)
	s := h.link.session(t, uaid)
	body := make([]byte, 32<<10)
	var err error
	for i := 0; i < 20000 && err == nil; i++ {
		err = s.Deliver(link.Notification{UAID: uaid, ChannelID: newChannelID(), Version: "v", Data: body, Encoding: "aes128gcm"})
	}
	if !errors.Is(err, link.ErrSessionClosed) {
		t.Fatalf("deliver never failed: %v", err)
	}
	waitFor(t, "detach", func() bool { return h.link.detachCount() == 1 })
	waitFor(t, "no connections", func() bool { return h.srv.Connections() == 0 })
}

func TestShutdownClosesGracefully(t *testing.T) {
	h := newHarness(t, nil)
	c1, r1 := h.hello("")
	c2, r2 := h.hello("")
	// The hello reply goes out before the session is attached: wait for both
	// attaches, or a close in between rightly needs no detach.
	h.link.session(t, r1["uaid"].(string))
	h.link.session(t, r2["uaid"].(string))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctx) }()
	expectClose(t, c1, closeGoingAway)
	expectClose(t, c2, closeGoingAway)
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if h.srv.Connections() != 0 || h.link.detachCount() != 2 {
		t.Fatalf("%d connections, %d detaches after shutdown", h.srv.Connections(), h.link.detachCount())
	}
	h.event("disconnected", func(ev *pb.Event) bool { return ev.GetDisconnected() != nil && ev.GetUaid() == r1["uaid"] })
	d := websocket.Dialer{}
	if _, resp, err := d.Dial(h.url, nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v %v", resp, err)
	}
}

func TestRun(t *testing.T) {
	h := newHarness(t, nil)
	ln, err := newLocalListener()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.Run(ctx, ln) }()
	h.url = "ws://" + ln.Addr().String() + "/"
	c, _ := h.hello("")
	cancel()
	expectClose(t, c, closeGoingAway)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// Idle sockets hold no goroutine: after traffic, the goroutine count comes
// back down although the sockets stay open.
func TestIdleConnectionsHaveNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("epoll only")
	}
	h := newHarness(t, nil)
	const n = 100
	h.hello("") // start the poller and sweeper
	h.poll(10 * time.Millisecond)
	base := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i], _ = h.hello("")
		if err := conns[i].WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		send(t, conns[i], map[string]any{"messageType": "register", "channelID": newChannelID()})
		recv(t, conns[i])
	}
	waitFor(t, "reader goroutines to end", func() bool { return runtime.NumGoroutine() < base+n/5 })
	if h.srv.Connections() != n+1 {
		t.Fatalf("%d connections", h.srv.Connections())
	}
}

func TestConfigValidation(t *testing.T) {
	sealer, _ := schema.NewSealer([][]byte{make([]byte, schema.KeySize)})
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing everything", Config{}, "missing Sealer"},
		{"relative public URL", Config{Sealer: sealer, Link: newFakeLink(), PublicURL: "/x"}, "PublicURL"},
		{"reserved broadcast id", Config{Sealer: sealer, Link: newFakeLink(), PublicURL: "https://a", Broadcasts: map[string]string{"errors": "1"}}, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TLS sockets have no pollable fd: they are served by a blocking reader
// goroutine with the same protocol behaviour.
func TestTLSConnections(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MinClientPing = time.Nanosecond })
	ts := httptest.NewTLSServer(h.srv.Handler())
	defer ts.Close()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, TLSClientConfig: ts.Client().Transport.(*http.Transport).TLSClientConfig}
	c, resp, err := d.Dial("wss"+strings.TrimPrefix(ts.URL, "https")+"/", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	resp.Body.Close()
	send(t, c, `{"messageType":"hello"}`)
	uaid := recv(t, c)["uaid"].(string)
	for range 3 {
		send(t, c, map[string]any{"messageType": "register", "channelID": newChannelID()})
		if r := recv(t, c); r["status"] != 200.0 {
			t.Fatalf("register %v", r)
		}
		time.Sleep(20 * time.Millisecond) // idle between messages: the reader waits without a deadline
	}
	s := h.link.session(t, uaid)
	if err := s.Deliver(link.Notification{UAID: uaid, ChannelID: newChannelID(), Version: "v"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, c); m["messageType"] != "notification" {
		t.Fatalf("got %v", m)
	}
	send(t, c, `{"messageType":"urgency"}`)
	expectClose(t, c, closeProtocol)
	waitFor(t, "detach", func() bool { return h.link.detachCount() == 1 })
}
