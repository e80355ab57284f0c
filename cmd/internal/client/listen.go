package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// DefaultListenURL is the connection listener of a local `pushlog serve`.
const DefaultListenURL = "ws://127.0.0.1:8080/"

const (
	// requestTimeout is how long hello and register may take (Firefox's 10 s).
	requestTimeout = 10 * time.Second
	// idleTimeout declares a silent socket dead: the server pings idle
	// sockets every 300 s, so two missed pings mean it is gone.
	idleTimeout      = 11 * time.Minute
	writeTimeout     = 10 * time.Second
	maxFrameSize     = 1 << 20 // a notification carries a few KB
	defaultMinDelay  = time.Second
	defaultMaxDelay  = time.Minute
	closeDoNotReturn = 4774 // Firefox: "do not reconnect"
)

// ListenOptions configure Listen.
type ListenOptions struct {
	URL string // connection listener; default DefaultListenURL
	// StateFile, when set, keeps uaid, channel, endpoint, ECDH private key
	// and auth secret, so a restarted listen resumes the same subscription.
	StateFile string
	// ServerKey is an application server (VAPID) public key, base64url; when
	// set, the channel is registered with it (a key-bound v2 endpoint).
	ServerKey string
	Count     int  // exit after this many messages; 0 = run until ctx ends
	JSON      bool // print each message as a JSON line (the subscription then goes to the log)
	// SubscriptionOut, when set, receives the subscription JSON each time
	// one is made or resumed (written atomically).
	SubscriptionOut string
	CAFile          string // PEM CA to trust for wss:// besides the system roots
	Insecure        bool   // skip TLS verification for wss://
	// ReconnectDelay is the first wait after a dropped socket (default 1 s);
	// it doubles up to MaxReconnectDelay (default 1 min) and resets after a
	// successful hello.
	ReconnectDelay    time.Duration
	MaxReconnectDelay time.Duration
	Out               io.Writer // nil = os.Stdout
	Logger            *slog.Logger
}

// listenState is the StateFile's JSON.
type listenState struct {
	UAID       string `json:"uaid"`
	ChannelID  string `json:"channelID"`
	Endpoint   string `json:"endpoint"`
	PrivateKey string `json:"privateKey"` // ECDH P-256 scalar, base64url
	Auth       string `json:"auth"`
	ServerKey  string `json:"serverKey,omitempty"`
}

// errDone ends Listen successfully once Count messages arrived.
var errDone = errors.New("message count reached")

// permanentError stops Listen instead of reconnecting.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

type listener struct {
	opts      ListenOptions
	out       io.Writer
	log       *slog.Logger
	dialer    *websocket.Dialer
	serverKey string // normalized base64url, "" when none

	st        *listenState // the live subscription; nil before the first register
	keys      *webpush.ReceiverKeys
	announced bool // the subscription was printed in this process
	seen      *versionSet
	count     int
}

// Listen acts as a push user agent: it connects, says hello, registers a
// channel (or resumes the saved one), prints the subscription, then
// decrypts, prints and acks every notification, reconnecting with backoff
// when the socket drops. It returns nil when ctx ends or Count messages
// have arrived.
func Listen(ctx context.Context, opts ListenOptions) error {
	l, err := newListener(opts)
	if err != nil {
		return err
	}
	delay := l.opts.ReconnectDelay
	for {
		established, err := l.session(ctx)
		switch {
		case errors.Is(err, errDone), ctx.Err() != nil:
			return nil
		case errors.As(err, new(permanentError)):
			return err
		}
		if established {
			delay = l.opts.ReconnectDelay
		}
		l.log.Warn("push connection lost; reconnecting", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, l.opts.MaxReconnectDelay)
	}
}

func newListener(opts ListenOptions) (*listener, error) {
	if opts.URL == "" {
		opts.URL = DefaultListenURL
	}
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("listen url %q: want ws:// or wss://host[:port]/", opts.URL)
	}
	if opts.Count < 0 {
		return nil, fmt.Errorf("negative message count %d", opts.Count)
	}
	if opts.ReconnectDelay <= 0 {
		opts.ReconnectDelay = defaultMinDelay
	}
	if opts.MaxReconnectDelay < opts.ReconnectDelay {
		opts.MaxReconnectDelay = max(defaultMaxDelay, opts.ReconnectDelay)
	}
	l := &listener{opts: opts, out: opts.Out, log: opts.Logger, seen: newVersionSet(1024)}
	if l.out == nil {
		l.out = os.Stdout
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if opts.ServerKey != "" {
		pub, err := webpush.ParsePublicKey(opts.ServerKey)
		if err != nil {
			return nil, fmt.Errorf("server key: %w", err)
		}
		l.serverKey = base64URL(pub.Bytes())
	}
	tlsCfg, err := tlsConfig(opts.CAFile, opts.Insecure)
	if err != nil {
		return nil, err
	}
	l.dialer = &websocket.Dialer{
		Subprotocols:     []string{subprotocol},
		HandshakeTimeout: requestTimeout,
		TLSClientConfig:  tlsCfg,
		Proxy:            websocket.DefaultDialer.Proxy,
	}
	if opts.StateFile != "" {
		if err := l.loadState(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *listener) loadState() error {
	b, err := os.ReadFile(l.opts.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	bad := func(err error) error {
		return fmt.Errorf("state file %s: %w (delete it to start with a new subscription)", l.opts.StateFile, err)
	}
	var st listenState
	if err := json.Unmarshal(b, &st); err != nil {
		return bad(err)
	}
	if st.UAID, err = schema.NormalizeUAID(st.UAID); err != nil {
		return bad(err)
	}
	if st.ChannelID, err = schema.NormalizeChannelID(st.ChannelID); err != nil {
		return bad(err)
	}
	if _, err := webpush.Origin(st.Endpoint); err != nil {
		return bad(err)
	}
	keys, err := webpush.ParseReceiverKeys(st.PrivateKey, st.Auth)
	if err != nil {
		return bad(err)
	}
	l.st, l.keys = &st, keys
	return nil
}

// session runs one connection. established reports whether hello succeeded.
func (l *listener) session(ctx context.Context) (established bool, err error) {
	conn, resp, err := l.dialer.DialContext(ctx, l.opts.URL, nil)
	if err != nil {
		if resp != nil {
			return false, fmt.Errorf("connect %s: %w (HTTP %s)", l.opts.URL, err, resp.Status)
		}
		return false, fmt.Errorf("connect %s: %w", l.opts.URL, err)
	}
	defer conn.Close()
	if p := conn.Subprotocol(); p != "" && p != subprotocol {
		return false, permanentError{fmt.Errorf("server chose subprotocol %q, not %q", p, subprotocol)}
	}
	stop := context.AfterFunc(ctx, func() { closeConn(conn) })
	defer stop()
	conn.SetReadLimit(maxFrameSize)
	conn.SetPingHandler(func(data string) error {
		// Answer the server's pings, and count them as signs of life.
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})

	uaid, err := l.hello(conn)
	if err != nil {
		return false, err
	}
	l.log.Info("connected", "url", l.opts.URL, "uaid", uaid)
	err = l.serve(conn, uaid)
	if errors.Is(err, errDone) {
		closeConn(conn)
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code == closeDoNotReturn {
		err = permanentError{fmt.Errorf("server closed with %d (do not reconnect): %w", closeDoNotReturn, err)}
	}
	return true, err
}

func closeConn(conn *websocket.Conn) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	_ = conn.Close()
}

func (l *listener) send(conn *websocket.Conn, v any) error {
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := conn.WriteJSON(v); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// hello says hello, with the saved uaid when there is a subscription to
// keep, and returns the uaid the server gives.
func (l *listener) hello(conn *websocket.Conn) (string, error) {
	req := helloRequest{MessageType: "hello", UseWebPush: true, Broadcasts: map[string]string{}}
	if l.st != nil {
		req.UAID = l.st.UAID
	}
	if err := l.send(conn, req); err != nil {
		return "", err
	}
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	_, raw, err := conn.ReadMessage()
	if err != nil {
		return "", fmt.Errorf("waiting for hello: %w", err)
	}
	var rep helloReply
	if err := json.Unmarshal(raw, &rep); err != nil || !strings.EqualFold(rep.MessageType, "hello") {
		return "", fmt.Errorf("expected a hello reply, got %.200s", raw)
	}
	if rep.Status != 200 {
		return "", fmt.Errorf("hello refused with status %d", rep.Status)
	}
	uaid, err := schema.NormalizeUAID(rep.UAID)
	if err != nil {
		return "", fmt.Errorf("hello reply: %w", err)
	}
	return uaid, nil
}

// serve registers a channel when needed and then handles server frames
// until the socket ends or Count messages arrived.
func (l *listener) serve(conn *websocket.Conn, uaid string) error {
	var pending *pendingRegister
	if l.st == nil || l.st.UAID != uaid || l.st.ServerKey != l.serverKey {
		if l.st != nil && l.st.UAID != uaid {
			l.log.Warn("the server gave a new uaid: the old subscription is gone, registering a new one", "old", l.st.UAID, "new", uaid)
		}
		var err error
		if pending, err = l.register(conn, uaid); err != nil {
			return err
		}
	} else {
		if err := l.announce(); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
	}

	for {
		kind, raw, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if pending == nil {
			_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
		}
		if kind != websocket.TextMessage {
			l.log.Warn("ignoring a non-text frame from the server", "type", kind)
			continue
		}
		mt, err := messageType(raw)
		if err != nil {
			l.log.Warn("ignoring a frame that is not JSON", "err", err)
			continue
		}
		switch mt {
		case "register":
			done, err := l.registered(conn, pending, raw)
			if err != nil {
				return err
			}
			if done {
				pending = nil
				_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
			}
		case "notification":
			if err := l.notification(conn, raw); err != nil {
				return err
			}
		case "hello":
			return errors.New("unexpected second hello from the server")
		case "", "ping":
			l.log.Debug("ping reply")
		default:
			l.log.Debug("ignoring a server message", "messageType", mt)
		}
	}
}

type pendingRegister struct {
	uaid, channelID string
	keys            *webpush.ReceiverKeys
}

func (l *listener) register(conn *websocket.Conn, uaid string) (*pendingRegister, error) {
	keys, err := webpush.GenerateReceiverKeys()
	if err != nil {
		return nil, permanentError{err}
	}
	p := &pendingRegister{uaid: uaid, channelID: newChannelID(), keys: keys}
	if err := l.send(conn, registerRequest{MessageType: "register", ChannelID: p.channelID, Key: l.serverKey}); err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	return p, nil
}

// registered handles a register reply; done reports that it answered the
// pending registration.
func (l *listener) registered(conn *websocket.Conn, p *pendingRegister, raw []byte) (done bool, err error) {
	var rep registerReply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return false, fmt.Errorf("bad register reply: %w", err)
	}
	if p == nil || !sameChannel(rep.ChannelID, p.channelID) {
		l.log.Debug("ignoring a register reply for another channel", "channelID", rep.ChannelID)
		return false, nil
	}
	switch {
	case rep.Status >= 500:
		return false, fmt.Errorf("register failed with status %d", rep.Status)
	case rep.Status != 200:
		return false, permanentError{fmt.Errorf("register refused with status %d", rep.Status)}
	}
	if _, err := webpush.Origin(rep.PushEndpoint); err != nil {
		return false, permanentError{fmt.Errorf("register reply: pushEndpoint: %w", err)}
	}
	old := l.st
	l.st = &listenState{
		UAID: p.uaid, ChannelID: p.channelID, Endpoint: rep.PushEndpoint,
		PrivateKey: p.keys.PrivateKeyString(), Auth: p.keys.AuthString(), ServerKey: l.serverKey,
	}
	l.keys, l.announced = p.keys, false
	l.log.Info("registered", "channelID", p.channelID, "endpoint", rep.PushEndpoint)
	if err := l.saveState(); err != nil {
		return false, err
	}
	if err := l.announce(); err != nil {
		return false, err
	}
	// Same uaid, new channel (the server key changed): drop the old one.
	if old != nil && old.UAID == p.uaid && old.ChannelID != p.channelID {
		if err := l.send(conn, unregisterRequest{MessageType: "unregister", ChannelID: old.ChannelID, Code: 200}); err != nil {
			return false, err
		}
	}
	return true, nil
}

func (l *listener) saveState() error {
	if l.opts.StateFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(l.st, "", "  ")
	if err != nil {
		return permanentError{fmt.Errorf("encode state: %w", err)}
	}
	if err := writeFileAtomic(l.opts.StateFile, append(b, '\n'), 0o600); err != nil {
		return permanentError{fmt.Errorf("write state file: %w", err)}
	}
	return nil
}

// announce prints the subscription once per process (and again after a
// new registration) and writes SubscriptionOut.
func (l *listener) announce() error {
	if l.announced {
		return nil
	}
	sub, err := json.Marshal(l.keys.Subscription(l.st.Endpoint))
	if err != nil {
		return permanentError{fmt.Errorf("encode subscription: %w", err)}
	}
	if l.opts.SubscriptionOut != "" {
		if err := writeFileAtomic(l.opts.SubscriptionOut, append(sub, '\n'), 0o644); err != nil {
			return permanentError{fmt.Errorf("write subscription: %w", err)}
		}
	}
	if l.opts.JSON {
		l.log.Info("subscription", "endpoint", l.st.Endpoint, "subscription", string(sub))
	} else if _, err := fmt.Fprintf(l.out, "endpoint: %s\nsubscription: %s\n", l.st.Endpoint, sub); err != nil {
		return permanentError{fmt.Errorf("print subscription: %w", err)}
	}
	l.announced = true
	return nil
}

// notification decrypts, prints and acks one notification.
func (l *listener) notification(conn *websocket.Conn, raw []byte) error {
	if l.st == nil {
		l.log.Warn("notification before any registration; ignored")
		return nil
	}
	r, code, err := openNotification(raw, l.st.ChannelID, l.keys)
	if err != nil {
		l.log.Warn("ignoring a malformed notification", "err", err)
		return nil
	}
	dup := code == ackDelivered && l.seen.seen(r.Version)
	switch {
	case dup:
		l.log.Info("duplicate notification acked again", "version", r.Version)
	case code == ackNotDelivered:
		l.log.Warn("notification for an unknown channel", "channelID", r.ChannelID, "version", r.Version)
	default:
		if r.Error != "" {
			l.log.Warn("cannot decrypt a notification", "version", r.Version, "err", r.Error)
		}
		if err := l.print(r); err != nil {
			return err
		}
	}
	if err := l.send(conn, ackRequest{MessageType: "ack", Updates: []ackUpdate{{ChannelID: r.ChannelID, Version: r.Version, Code: code}}}); err != nil {
		return err
	}
	if dup || code == ackNotDelivered {
		return nil
	}
	l.seen.add(r.Version)
	l.count++
	if l.opts.Count > 0 && l.count >= l.opts.Count {
		return errDone
	}
	return nil
}

func (l *listener) print(r received) error {
	var line string
	if l.opts.JSON {
		b, err := json.Marshal(r)
		if err != nil {
			return permanentError{fmt.Errorf("encode message: %w", err)}
		}
		line = string(b)
	} else {
		line = r.text()
	}
	if _, err := fmt.Fprintln(l.out, line); err != nil {
		return permanentError{fmt.Errorf("print message: %w", err)}
	}
	return nil
}
