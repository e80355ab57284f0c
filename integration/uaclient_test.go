package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// uaSubprotocol is the WebSocket subprotocol Firefox asks for.
const uaSubprotocol = "push-notification"

// uaMessage is any server message of PROTOCOL.md §3; Raw keeps the frame.
type uaMessage struct {
	MessageType  string            `json:"messageType"`
	UAID         string            `json:"uaid"`
	Status       int               `json:"status"`
	UseWebpush   bool              `json:"use_webpush"`
	Broadcasts   map[string]any    `json:"broadcasts"`
	ChannelID    string            `json:"channelID"`
	PushEndpoint string            `json:"pushEndpoint"`
	Reason       string            `json:"reason"`
	Version      string            `json:"version"`
	Data         string            `json:"data"`
	Headers      map[string]string `json:"headers"`
	Raw          string            `json:"-"`
}

// body returns the notification's payload: data is base64url of the exact
// bytes the sender posted (an empty body has no data).
func (m uaMessage) body() ([]byte, error) {
	if m.Data == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(m.Data, "="))
	if err != nil {
		return nil, fmt.Errorf("notification data is not base64url: %w", err)
	}
	return b, nil
}

// decrypt decrypts the notification with the subscription's receiver keys.
func (m uaMessage) decrypt(keys *webpush.ReceiverKeys) ([]byte, error) {
	body, err := m.body()
	if err != nil {
		return nil, err
	}
	return keys.Decrypt(webpush.Message{
		Encoding:   m.Headers["encoding"],
		Body:       body,
		Encryption: m.Headers["encryption"],
		CryptoKey:  m.Headers["crypto_key"],
	})
}

// uaClient is a test user agent speaking Firefox's WebSocket push protocol.
// It never acks on its own: tests decide what is acknowledged. A reader
// goroutine sorts notifications from replies.
type uaClient struct {
	t     testing.TB
	ws    *websocket.Conn
	UAID  string
	Hello uaMessage

	notes   chan uaMessage // notifications, in arrival order
	replies chan uaMessage // everything else (hello, register, unregister, ping, broadcast)
	done    chan struct{}  // closed when the reader stops
	errMu   sync.Mutex
	err     error // why the reader stopped
	closeMu sync.Once
}

// errUARetry marks a connection attempt the server asked to retry (1013,
// e.g. while its partitions are still being assigned after a restart).
var errUARetry = errors.New("server asked to try again")

// uaConnect dials the connection listener and says hello (with uaid when
// not empty), waiting for the hello reply.
func uaConnect(ctx context.Context, t testing.TB, wsURL, uaid string) (*uaClient, error) {
	d := websocket.Dialer{Subprotocols: []string{uaSubprotocol}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", wsURL, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		ws.Close()
		return nil, fmt.Errorf("dial %s: status %d", wsURL, resp.StatusCode)
	}
	if p := ws.Subprotocol(); p != "" && p != uaSubprotocol {
		ws.Close()
		return nil, fmt.Errorf("server chose subprotocol %q, want %q or none", p, uaSubprotocol)
	}
	c := &uaClient{
		t:       t,
		ws:      ws,
		notes:   make(chan uaMessage, 4096),
		replies: make(chan uaMessage, 256),
		done:    make(chan struct{}),
	}
	go c.read()
	hello := map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]string{}}
	if uaid != "" {
		hello["uaid"] = uaid
	}
	if err := c.sendJSON(hello); err != nil {
		c.abort()
		return nil, err
	}
	r, err := c.reply(ctx)
	if err != nil {
		c.abort()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code == websocket.CloseTryAgainLater {
			return nil, fmt.Errorf("%w: %v", errUARetry, err)
		}
		return nil, fmt.Errorf("hello: %w", err)
	}
	if r.MessageType != "hello" || r.Status != 200 || !r.UseWebpush || len(r.UAID) != 32 || strings.ToLower(r.UAID) != r.UAID {
		c.abort()
		return nil, fmt.Errorf("bad hello reply %s", r.Raw)
	}
	if _, err := schema.ParseUAID(r.UAID); err != nil {
		c.abort()
		return nil, fmt.Errorf("hello reply uaid: %w (%s)", err, r.Raw)
	}
	c.UAID, c.Hello = r.UAID, r
	return c, nil
}

// uaDial connects and says hello, retrying while the server asks to try
// again (as Firefox backs off), until ctx ends. The connection is closed
// when the test ends.
func uaDial(ctx context.Context, t testing.TB, wsURL, uaid string) *uaClient {
	t.Helper()
	began, retries := time.Now(), 0
	for ; ; retries++ {
		c, err := uaConnect(ctx, t, wsURL, uaid)
		if err == nil {
			if retries > 0 {
				t.Logf("hello as %q: told to try again %d times over %s", uaid, retries, time.Since(began).Round(time.Millisecond))
			}
			t.Cleanup(c.abort)
			return c
		}
		if !errors.Is(err, errUARetry) || ctx.Err() != nil {
			t.Fatalf("connect as %q: %v", uaid, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("connect as %q: %v (last: %v)", uaid, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// uaRedial reconnects as the same UAID and checks the server kept it.
func uaRedial(ctx context.Context, t testing.TB, wsURL, uaid string) *uaClient {
	t.Helper()
	c := uaDial(ctx, t, wsURL, uaid)
	if c.UAID != uaid {
		t.Fatalf("hello with uaid %s answered with a new uaid %s: the server forgot or reset it", uaid, c.UAID)
	}
	return c
}

func (c *uaClient) read() {
	defer close(c.done)
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.setErr(err)
			return
		}
		if typ != websocket.TextMessage {
			c.setErr(fmt.Errorf("server sent a non-text frame (type %d)", typ))
			return
		}
		var m uaMessage
		if err := json.Unmarshal(data, &m); err != nil {
			c.setErr(fmt.Errorf("server sent bad JSON %q: %w", data, err))
			return
		}
		m.Raw = string(data)
		if m.MessageType == "notification" {
			c.notes <- m
		} else {
			c.replies <- m
		}
	}
}

func (c *uaClient) setErr(err error) {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// readErr is why the connection ended (nil while it is open).
func (c *uaClient) readErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

func (c *uaClient) sendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write %s: %w", b, err)
	}
	return nil
}

func (c *uaClient) mustSend(v any) {
	c.t.Helper()
	if err := c.sendJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

// reply waits for the next non-notification message.
func (c *uaClient) reply(ctx context.Context) (uaMessage, error) {
	select {
	case m := <-c.replies:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.replies: // it may have come just before the close
			return m, nil
		default:
		}
		return uaMessage{}, fmt.Errorf("connection closed: %w", c.readErr())
	case <-ctx.Done():
		return uaMessage{}, fmt.Errorf("no reply: %w", ctx.Err())
	}
}

func (c *uaClient) mustReply(ctx context.Context, msgType string) uaMessage {
	c.t.Helper()
	m, err := c.reply(ctx)
	if err != nil {
		c.t.Fatalf("waiting for %s reply: %v", msgType, err)
	}
	if m.MessageType != msgType {
		c.t.Fatalf("got %s, want a %s reply", m.Raw, msgType)
	}
	return m
}

// register subscribes channelID (with an application server key when key
// is not empty) and returns the reply, whatever its status.
func (c *uaClient) register(ctx context.Context, channelID, key string) uaMessage {
	c.t.Helper()
	msg := map[string]any{"messageType": "register", "channelID": channelID}
	if key != "" {
		msg["key"] = key
	}
	c.mustSend(msg)
	r := c.mustReply(ctx, "register")
	if r.ChannelID != channelID {
		c.t.Fatalf("register reply for channel %q, want %q: %s", r.ChannelID, channelID, r.Raw)
	}
	return r
}

// subscribe registers a fresh channel with fresh receiver keys: what a
// browser's pushManager.subscribe does. key may be empty (v1).
func (c *uaClient) subscribe(ctx context.Context, key string) *uaSubscription {
	c.t.Helper()
	chid := uaChannelID()
	r := c.register(ctx, chid, key)
	if r.Status != 200 || r.PushEndpoint == "" {
		c.t.Fatalf("register: %s", r.Raw)
	}
	keys, err := webpush.GenerateReceiverKeys()
	if err != nil {
		c.t.Fatal(err)
	}
	return &uaSubscription{ChannelID: chid, Endpoint: r.PushEndpoint, Keys: keys}
}

// unregister drops channelID; the reply must be status 200.
func (c *uaClient) unregister(ctx context.Context, channelID string) {
	c.t.Helper()
	c.mustSend(map[string]any{"messageType": "unregister", "channelID": channelID, "code": 200})
	r := c.mustReply(ctx, "unregister")
	if r.Status != 200 || r.ChannelID != channelID {
		c.t.Fatalf("unregister: %s", r.Raw)
	}
}

// ack acknowledges notifications as delivered (code 100), in one message.
func (c *uaClient) ack(notes ...uaMessage) {
	c.t.Helper()
	updates := make([]map[string]any, 0, len(notes))
	for _, n := range notes {
		updates = append(updates, map[string]any{"channelID": n.ChannelID, "version": n.Version, "code": 100})
	}
	c.mustSend(map[string]any{"messageType": "ack", "updates": updates})
}

// sync sends a client ping `{}` and waits for its `{}`. The server handles
// a socket's messages in order, so everything sent before (hello and its
// attach to the owner, acks) has been handled when the answer comes. Only
// one per connection: clients pinging more often than every 45 s are closed.
func (c *uaClient) sync(ctx context.Context) {
	c.t.Helper()
	c.mustSend(map[string]any{})
	m, err := c.reply(ctx)
	if err != nil {
		c.t.Fatalf("ping: %v", err)
	}
	if m.Raw != "{}" {
		c.t.Fatalf("ping answered with %s, want {}", m.Raw)
	}
}

// next waits for the next notification.
func (c *uaClient) next(ctx context.Context) uaMessage {
	c.t.Helper()
	select {
	case m := <-c.notes:
		return m
	default:
	}
	select {
	case m := <-c.notes:
		return m
	case <-c.done:
		select {
		case m := <-c.notes:
			return m
		default:
		}
		c.t.Fatalf("connection closed while waiting for a notification: %v", c.readErr())
	case <-ctx.Done():
		c.t.Fatalf("no notification: %v", ctx.Err())
	}
	return uaMessage{}
}

// nextFor waits for the next notification and checks it is for sub,
// well-formed, and decrypts; it returns the plaintext.
func (c *uaClient) nextFor(ctx context.Context, sub *uaSubscription) (uaMessage, []byte) {
	c.t.Helper()
	n := c.next(ctx)
	if n.ChannelID != sub.ChannelID {
		c.t.Fatalf("notification for channel %s, want %s: %s", n.ChannelID, sub.ChannelID, n.Raw)
	}
	uaCheckNotification(c.t, n)
	plain, err := n.decrypt(sub.Keys)
	if err != nil {
		c.t.Fatalf("decrypt notification %s: %v", n.Version, err)
	}
	return n, plain
}

// uaCheckNotification checks the fields PROTOCOL.md allows: never TTL,
// Topic, Urgency or VAPID data.
func uaCheckNotification(t testing.TB, n uaMessage) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(n.Raw), &fields); err != nil {
		t.Fatal(err)
	}
	for k := range fields {
		switch k {
		case "messageType", "channelID", "version", "data", "headers":
		default:
			t.Errorf("notification carries field %q: %s", k, n.Raw)
		}
	}
	for k := range n.Headers {
		switch k {
		case "encoding", "encryption", "crypto_key":
		default:
			t.Errorf("notification headers carry %q: %s", k, n.Raw)
		}
	}
	if n.Version == "" {
		t.Errorf("notification without a version: %s", n.Raw)
	}
}

// close ends the connection cleanly and waits until the server has closed
// the socket: by then it has detached the UAID, so the user agent is
// offline as far as the owner is concerned.
func (c *uaClient) close() {
	c.t.Helper()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second))
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("server did not close the socket within 15s of the client's close frame")
	}
	c.abort()
}

// abort drops the TCP connection without a close frame.
func (c *uaClient) abort() {
	c.closeMu.Do(func() { _ = c.ws.Close() })
}

// uaSubscription is one registered channel with its receiver keys.
type uaSubscription struct {
	ChannelID string
	Endpoint  string
	Keys      *webpush.ReceiverKeys
}

// json is the subscription JSON a sender library takes.
func (s *uaSubscription) json() []byte {
	b, err := json.Marshal(s.Keys.Subscription(s.Endpoint))
	if err != nil {
		panic(err) // plain strings always marshal
	}
	return b
}

// uaChannelID returns a fresh random (version 4) UUID in the lowercase
// dashed form Firefox uses.
func uaChannelID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return schema.FormatChannelID(b[:])
}
