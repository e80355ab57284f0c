package attack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	subprotocol  = "push-notification"
	writeTimeout = 10 * time.Second
	// replyWait is how long a flood waits for any reply before it counts
	// what is in flight as unanswered and goes on.
	replyWait = 5 * time.Second
)

// frame is one server message of PROTOCOL.md §3.
type frame struct {
	MessageType  string `json:"messageType"`
	UAID         string `json:"uaid"`
	Status       int    `json:"status"`
	ChannelID    string `json:"channelID"`
	PushEndpoint string `json:"pushEndpoint"`
	Version      string `json:"version"`
	raw          []byte
}

// wsClient is a minimal user agent: a reader goroutine sorts notifications
// from replies; one goroutine at a time writes.
type wsClient struct {
	ws      *websocket.Conn
	uaid    string
	replies chan frame
	notes   chan frame
	done    chan struct{}
	mu      sync.Mutex
	err     error
	once    sync.Once
}

// dialHello connects and says hello (with uaid when not empty).
func dialHello(ctx context.Context, wsURL, uaid string) (*wsClient, error) {
	d := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", wsURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		ws.Close()
		return nil, fmt.Errorf("dial %s: status %d", wsURL, resp.StatusCode)
	}
	c := &wsClient{
		ws:      ws,
		replies: make(chan frame, 1024),
		notes:   make(chan frame, 256),
		done:    make(chan struct{}),
	}
	go c.read()
	hello := map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]string{}}
	if uaid != "" {
		hello["uaid"] = uaid
	}
	if err := c.send(hello); err != nil {
		c.close()
		return nil, err
	}
	f, err := c.reply(ctx, 10*time.Second)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	if f.MessageType != "hello" || f.Status != 200 || f.UAID == "" {
		c.close()
		return nil, fmt.Errorf("hello answered %s", f.raw)
	}
	c.uaid = f.UAID
	return c, nil
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.setErr(err)
			return
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			c.setErr(fmt.Errorf("server sent bad JSON %q: %w", data, err))
			return
		}
		f.raw = data
		if f.MessageType == "notification" {
			select {
			case c.notes <- f:
			default: // nobody reads this socket's notifications
			}
			continue
		}
		c.replies <- f
	}
}

func (c *wsClient) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// closeReason names why the connection ended: "closed 4774" for a close
// frame, "closed" for a dropped connection.
func (c *wsClient) closeReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return closeKind(c.err)
}

func closeKind(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("closed %d", ce.Code)
	}
	return "closed"
}

func (c *wsClient) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return c.sendRaw(b)
}

func (c *wsClient) sendRaw(b []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// reply waits for the next non-notification frame, at most wait.
func (c *wsClient) reply(ctx context.Context, wait time.Duration) (frame, error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case f := <-c.replies:
		return f, nil
	case <-c.done:
		select {
		case f := <-c.replies:
			return f, nil
		default:
		}
		return frame{}, errors.New(c.closeReason())
	case <-ctx.Done():
		return frame{}, ctx.Err()
	case <-t.C:
		return frame{}, errors.New("no reply")
	}
}

// register subscribes channelID and returns the reply.
func (c *wsClient) register(ctx context.Context, channelID string) (frame, error) {
	if err := c.send(map[string]any{"messageType": "register", "channelID": channelID}); err != nil {
		return frame{}, err
	}
	for {
		f, err := c.reply(ctx, 10*time.Second)
		if err != nil {
			return frame{}, fmt.Errorf("register: %w", err)
		}
		if f.MessageType == "register" {
			return f, nil
		}
	}
}

// closed reports whether the connection has ended.
func (c *wsClient) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitClosed waits up to d for the connection to end (a failed write
// usually means the server closed it and the reader is about to see why).
func (c *wsClient) waitClosed(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// close sends a close frame and drops the connection.
func (c *wsClient) close() {
	c.once.Do(func() {
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.ws.Close()
	})
}

// newChannelID is a random version 4 UUID, lowercase and dashed.
func newChannelID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
