package main

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// target is how every push mode reaches the server under test and what it
// sends.
type target struct {
	WS               string        `name:"ws" default:"ws://127.0.0.1:8080/" help:"WebSocket URL of the server (pushlog serve's PUSHLOG_WS_ADDR); push endpoints come from its register replies."`
	PID              int           `name:"pid" help:"Server process id: CPU time (and RSS) are read from /proc/PID (0: not read)."`
	Agents           int           `default:"1000" help:"User agents (one UAID and one channel each) the pushes are spread over."`
	Body             int           `default:"256" help:"aes128gcm body size in bytes (at least 104: header, 65-byte key id, delimiter, tag)."`
	TTL              int           `name:"ttl" default:"60" help:"TTL header of every push."`
	Subject          string        `default:"mailto:pushload@example.com" help:"VAPID sub claim."`
	Timeout          time.Duration `default:"10s" help:"Bound on one push request or one user agent's setup."`
	SetupConcurrency int           `default:"20" help:"User agents being set up at a time."`
	Duration         time.Duration `default:"10s" help:"Measured window."`
	Warmup           time.Duration `default:"2s" help:"Load before the measured window, not counted."`
}

// aes128gcm overhead of one single-record body: salt, record size, key id
// length, the 65-byte sender key as key id, padding delimiter, tag.
const bodyOverhead = 16 + 4 + 1 + 65 + 1 + 16

func (t *target) check() error {
	switch {
	case t.Agents <= 0:
		return errors.New("--agents must be positive")
	case t.Body < bodyOverhead || t.Body > webpush.DefaultRecordSize:
		return fmt.Errorf("--body must be within %d..%d", bodyOverhead, webpush.DefaultRecordSize)
	case t.SetupConcurrency <= 0:
		return errors.New("--setup-concurrency must be positive")
	case t.Duration <= 0 || t.Warmup < 0:
		return errors.New("--duration must be positive and --warmup not negative")
	}
	return nil
}

// setup checks the target's flags, makes a pusher of at most conns HTTP
// connections (fresh: a new VAPID JWT per push) and subscribes Agents user
// agents, connected or not. The caller closes the agents.
func (t *target) setup(ctx context.Context, conns int, fresh, connected bool) (*pusher, []*agent, error) {
	if err := t.check(); err != nil {
		return nil, nil, err
	}
	p, err := newPusher(t, conns, fresh)
	if err != nil {
		return nil, nil, err
	}
	agents, err := t.subscribe(ctx, t.Agents, connected)
	if err != nil {
		return nil, nil, err
	}
	return p, agents, nil
}

// agent is one subscribed user agent.
type agent struct {
	client   // its ws is nil once disconnected
	endpoint string
}

// subscribe sets up n user agents (hello + register), SetupConcurrency at a
// time; without stay they disconnect once registered, so pushes to them are
// stored.
func (t *target) subscribe(ctx context.Context, n int, stay bool) ([]*agent, error) {
	dialer := &websocket.Dialer{Subprotocols: []string{"push-notification"}, HandshakeTimeout: t.Timeout}
	agents := make([]*agent, n)
	errs := make([]error, n)
	sem := make(chan struct{}, t.SetupConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			agents[i], errs[i] = t.subscribeOne(ctx, dialer, stay)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, a := range agents {
			if a != nil && a.ws != nil {
				_ = a.ws.Close()
			}
		}
		return nil, fmt.Errorf("subscribe %d user agents: %w", n, err)
	}
	return agents, nil
}

func (t *target) subscribeOne(ctx context.Context, dialer *websocket.Dialer, stay bool) (*agent, error) {
	c, endpoint, err := dialHello(ctx, dialer, t.WS, t.Timeout, true)
	if err != nil {
		return nil, err
	}
	a := &agent{client: *c, endpoint: endpoint}
	if !stay {
		goodbye(a.ws)
		_ = a.ws.Close()
		a.ws = nil
	}
	return a, nil
}

// closeAgents says goodbye on every connected agent.
func closeAgents(agents []*agent) {
	for _, a := range agents {
		if a.ws != nil {
			goodbye(a.ws)
			_ = a.ws.Close()
		}
	}
}

// listen reads the notifications of every connected agent
// (readNotifications) until hangUp, which closes the agents and waits a
// bounded while for their readers.
func listen(agents []*agent, seen func(salt [16]byte)) (hangUp func()) {
	var readers sync.WaitGroup
	for _, a := range agents {
		if a.ws != nil {
			readers.Add(1)
			go func() { defer readers.Done(); a.readNotifications(seen) }()
		}
	}
	return func() {
		closeAgents(agents)
		waitTimeout(&readers, 5*time.Second)
	}
}

// notification is the part of a server notification the load modes read.
type notification struct {
	MessageType string `json:"messageType"`
	ChannelID   string `json:"channelID"`
	Version     string `json:"version"`
	Data        string `json:"data"`
}

type ackUpdate struct {
	ChannelID string `json:"channelID"`
	Version   string `json:"version"`
	Code      int    `json:"code"`
}

type ackMessage struct {
	MessageType string      `json:"messageType"`
	Updates     []ackUpdate `json:"updates"`
}

// readNotifications reads a connected agent's socket until it fails,
// acking every notification (as a browser does) after handing its salt to
// seen. It returns once the socket is closed.
func (a *agent) readNotifications(seen func(salt [16]byte)) {
	for {
		_, data, err := a.ws.ReadMessage()
		if err != nil {
			return
		}
		var n notification
		if json.Unmarshal(data, &n) != nil || n.MessageType != "notification" {
			continue
		}
		if salt, ok := saltOf(n.Data); ok {
			seen(salt)
		}
		_ = a.ws.WriteJSON(ackMessage{MessageType: "ack", Updates: []ackUpdate{{ChannelID: n.ChannelID, Version: n.Version, Code: 100}}})
	}
}

// saltOf returns the salt that starts an aes128gcm body given as the
// notification's base64url data: random per push, it identifies the push.
func saltOf(data string) ([16]byte, bool) {
	var salt [16]byte
	if len(data) < 24 {
		return salt, false
	}
	// 24 base64 characters are 18 bytes, without padding questions.
	var buf [18]byte
	if _, err := base64.RawURLEncoding.Decode(buf[:], []byte(data[:24])); err != nil {
		return salt, false
	}
	copy(salt[:], buf[:16])
	return salt, true
}

// sealer makes aes128gcm bodies. Every agent of a run shares one receiver
// key pair (user agents keep their keys to themselves; the server never
// sees them) and the run uses one sender key, so the RFC 8291 input keying
// material is computed once and each body costs one AES-GCM seal, not an
// ECDH: the load tool must not be the bottleneck on a two-core machine.
// The salt is random per body, so every body is distinct (ingest
// deduplicates identical retries) and identifies its push.
type sealer struct {
	receiver  *webpush.ReceiverKeys
	senderPub []byte
	ikm       []byte
	plaintext []byte
}

func newSealer(bodySize int) (*sealer, error) {
	receiver, err := webpush.GenerateReceiverKeys()
	if err != nil {
		return nil, err
	}
	sender, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sender key: %w", err)
	}
	secret, err := sender.ECDH(receiver.Private.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("ecdh: %w", err)
	}
	uaPub, asPub := receiver.Private.PublicKey().Bytes(), sender.PublicKey().Bytes()
	// RFC 8291 §3.3: IKM = HKDF(auth, ecdh_secret, "WebPush: info" || 0 || ua_public || as_public).
	info := "WebPush: info\x00" + string(uaPub) + string(asPub)
	ikm, err := hkdf.Key(sha256.New, secret, receiver.Auth, info, 32)
	if err != nil {
		return nil, fmt.Errorf("ikm: %w", err)
	}
	plaintext := make([]byte, bodySize-bodyOverhead)
	for i := range plaintext {
		plaintext[i] = 'a' + byte(i%26)
	}
	return &sealer{receiver: receiver, senderPub: asPub, ikm: ikm, plaintext: plaintext}, nil
}

// seal returns a fresh body and its salt.
func (s *sealer) seal() ([]byte, [16]byte, error) {
	var salt [16]byte
	_, _ = rand.Read(salt[:])
	body, err := webpush.EncryptContent(s.ikm, salt[:], s.senderPub, webpush.DefaultRecordSize, s.plaintext, 0)
	return body, salt, err
}

// pusher sends pushes: real aes128gcm bodies and VAPID, either one token
// signed at start (what a sender caching its JWT does) or a fresh one per
// push (what npm web-push and pywebpush do by default).
type pusher struct {
	client  *http.Client
	seal    *sealer
	vapid   *webpush.VAPIDKey
	subject string
	fresh   bool
	ttl     string
	auth    atomic.Pointer[string] // the cached Authorization

	// fresh: tokens signed ahead (presign), each used once, for the
	// origin presignedFor; past them each push is signed as it is sent.
	presigned    []string
	presignedFor string
	nextToken    atomic.Int64
	signedLive   atomic.Int64
}

func newPusher(t *target, conns int, fresh bool) (*pusher, error) {
	seal, err := newSealer(t.Body)
	if err != nil {
		return nil, err
	}
	key, err := webpush.GenerateVAPIDKey()
	if err != nil {
		return nil, err
	}
	// A bounded pool, as a real sender has: without it an overloaded
	// moment opens a new connection per push and the handshakes snowball.
	tr := &http.Transport{MaxConnsPerHost: conns, MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &pusher{
		client: &http.Client{Transport: tr, Timeout: t.Timeout},
		seal:   seal, vapid: key, subject: t.Subject, fresh: fresh, ttl: strconv.Itoa(t.TTL),
	}, nil
}

// presign signs n fresh tokens for endpoint's origin ahead of the load:
// each is still used for one push only, but the load tool's own signing
// (an ECDSA signature per push) then takes none of the measured window's
// CPU, so it does not cap the rate a fast server reaches.
func (p *pusher) presign(ctx context.Context, endpoint string, n int) error {
	origin, err := webpush.Origin(endpoint)
	if err != nil {
		return err
	}
	exp := time.Now().Add(webpush.DefaultVAPIDExpiry)
	tokens := make([]string, n)
	for i := range tokens {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if tokens[i], err = p.vapid.Authorization(endpoint, p.subject, exp); err != nil {
			return err
		}
	}
	p.presigned, p.presignedFor = tokens, origin
	return nil
}

func (p *pusher) authorization(endpoint string) (string, error) {
	if !p.fresh {
		if a := p.auth.Load(); a != nil {
			return *a, nil
		}
	} else if len(p.presigned) > 0 && p.nextToken.Load() < int64(len(p.presigned)) {
		if o, err := webpush.Origin(endpoint); err == nil && o == p.presignedFor {
			if i := p.nextToken.Add(1) - 1; i < int64(len(p.presigned)) {
				t := p.presigned[i]
				p.presigned[i] = "" // used once; let it go
				return t, nil
			}
		}
	}
	if p.fresh {
		p.signedLive.Add(1)
	}
	a, err := p.vapid.Authorization(endpoint, p.subject, time.Now().Add(webpush.DefaultVAPIDExpiry))
	if err != nil {
		return "", err
	}
	if !p.fresh {
		p.auth.Store(&a)
	}
	return a, nil
}

// prepared is a push ready to be sent.
type prepared struct {
	req  *http.Request
	salt [16]byte
}

// prepare seals a body and builds the request (the costly client work,
// kept out of the latency measurement).
func (p *pusher) prepare(ctx context.Context, endpoint string) (prepared, error) {
	body, salt, err := p.seal.seal()
	if err != nil {
		return prepared{}, fmt.Errorf("seal: %w", err)
	}
	auth, err := p.authorization(endpoint)
	if err != nil {
		return prepared{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return prepared{}, fmt.Errorf("request: %w", err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("TTL", p.ttl)
	req.Header.Set("Content-Encoding", webpush.AES128GCM)
	req.Header.Set("Authorization", auth)
	return prepared{req: req, salt: salt}, nil
}

// send posts a prepared push and returns its status (0: no answer).
func (p *pusher) send(pr prepared) int {
	resp, err := p.client.Do(pr.req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode
}

// statusCounter counts push statuses from many goroutines.
type statusCounter struct {
	mu sync.Mutex
	m  map[int]int64
}

func (s *statusCounter) add(status int) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[int]int64{}
	}
	s.m[status]++
	s.mu.Unlock()
}

func (s *statusCounter) snapshot() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int64, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}
