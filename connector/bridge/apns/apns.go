// Package apns sends bridge messages to the Apple Push Notification service
// (Firefox for iOS) over HTTP/2 (net/http, HTTP/2 only) with token-based (ES256 JWT) authentication.
package apns

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushlog/pushlog/connector/bridge"
)

const (
	// DefaultBaseURL is APNs production; SandboxBaseURL the development one.
	DefaultBaseURL = "https://api.push.apple.com"
	SandboxBaseURL = "https://api.sandbox.push.apple.com"
	// MaxPayload is APNs' limit on a (non-VoIP) notification's JSON.
	MaxPayload = 4096
	// DefaultTokenRefresh: Apple refuses provider tokens older than an hour
	// and updates more often than every 20 minutes.
	DefaultTokenRefresh = 50 * time.Minute
	minTokenRefresh     = 20 * time.Minute
	maxTokenRefresh     = 55 * time.Minute
)

// Config is one APNs app (a bundle id and its team's signing key).
type Config struct {
	// Key is the .p8 token-signing key Apple issues (PEM, PKCS#8 P-256).
	Key []byte
	// KeyID is the key's 10-character id (JWT kid); TeamID the developer
	// team (JWT iss).
	KeyID, TeamID string
	// Topic is the app's bundle id (apns-topic), e.g. org.mozilla.ios.Firefox.
	Topic string
	// BaseURL of APNs (default DefaultBaseURL; SandboxBaseURL for
	// development builds).
	BaseURL string
	// RootCAs APNs' certificate must chain to (nil: the system's).
	RootCAs *x509.CertPool
	// HTTPClient replaces the HTTP/2 client built from RootCAs and Timeout.
	HTTPClient *http.Client
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	// TokenRefresh is the provider token's age at which a new one is signed
	// (default 50m, kept within Apple's [20m, 55m]).
	TokenRefresh time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Client is a bridge.Sender for one APNs app.
type Client struct {
	base    string
	topic   string
	keyID   string
	teamID  string
	key     *ecdsa.PrivateKey
	http    *http.Client
	refresh time.Duration
	now     func() time.Time

	mu       sync.Mutex
	token    string
	signedAt time.Time
}

var _ bridge.Sender = (*Client)(nil)

// New checks the config and parses the key; it does no I/O.
func New(cfg Config) (*Client, error) {
	key, err := parseKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("apns: signing key: %w", err)
	}
	if cfg.KeyID == "" || cfg.TeamID == "" || cfg.Topic == "" {
		return nil, errors.New("apns: key id, team id and topic (bundle id) are required")
	}
	base := strings.TrimRight(cmpOr(cfg.BaseURL, DefaultBaseURL), "/")
	if u, err := url.Parse(base); err != nil || u.Scheme != "https" || u.Host == "" {
		// APNs is HTTP/2 over TLS only.
		return nil, fmt.Errorf("apns: base URL %q: want an absolute https URL", base)
	}
	c := &Client{
		base: base, topic: cfg.Topic, keyID: cfg.KeyID, teamID: cfg.TeamID, key: key,
		http:    cfg.HTTPClient,
		refresh: min(max(cmpOr(cfg.TokenRefresh, DefaultTokenRefresh), minTokenRefresh), maxTokenRefresh),
		now:     cfg.Now,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: cmpOr(cfg.Timeout, 10*time.Second), Transport: h2Transport(cfg.RootCAs)}
	}
	return c, nil
}

// h2Transport speaks HTTP/2 only (APNs refuses HTTP/1.1). net/http's own
// HTTP/2 replaces golang.org/x/net/http2.Transport, deprecated since Go 1.24.
func h2Transport(roots *x509.CertPool) *http.Transport {
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		Protocols:           new(http.Protocols),
		// Apple drops idle connections silently; pings find out.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 10 * time.Second},
	}
	t.Protocols.SetHTTP2(true)
	return t
}

func cmpOr[T comparable](vals ...T) T {
	var zero T
	for _, v := range vals {
		if v != zero {
			return v
		}
	}
	return zero
}

// parseKey reads a .p8 key: PEM PKCS#8 (or SEC 1) ECDSA P-256.
func parseKey(p []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if k, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
			return nil, err
		}
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return ek, nil
}

// MaxPayload is APNs' limit on the notification JSON.
func (c *Client) MaxPayload() int { return MaxPayload }

// Check measures m's payload as Send would.
func (c *Client) Check(m bridge.Message) error {
	p, err := Payload(m)
	if err != nil {
		return err
	}
	if len(p) > MaxPayload {
		return &bridge.TooBigError{Size: len(p), Max: MaxPayload}
	}
	return nil
}

// Payload is the notification Firefox for iOS reads (autopush's shape): a
// mutable-content alert its notification service extension decrypts and
// replaces (or the aps the device registered), and beside aps the message: chid, ver, and with data body
// (base64url, unpadded), con, enc, cryptokey.
func Payload(m bridge.Message) ([]byte, error) {
	p := map[string]any{
		"aps": map[string]any{
			"alert": map[string]string{
				"title-loc-key": "SentTab.NoTabArrivingNotification.title",
				"loc-key":       "SentTab.NoTabArrivingNotification.body",
			},
			"mutable-content": 1,
		},
		"chid": m.ChannelID,
		"ver":  m.Version,
	}
	if m.Aps != "" && json.Valid([]byte(m.Aps)) {
		p["aps"] = json.RawMessage(m.Aps) // the device's own, checked an object at registration
	}
	if m.Data != nil {
		p["body"] = base64.RawURLEncoding.EncodeToString(m.Data)
		putNonEmpty(p, "con", m.Encoding)
		putNonEmpty(p, "enc", m.Encryption)
		putNonEmpty(p, "cryptokey", m.CryptoKey)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("apns: payload: %w", err)
	}
	return b, nil
}

func putNonEmpty(p map[string]any, k, v string) {
	if v != "" {
		p[k] = v
	}
}

// Priority maps Urgency: 10 (now) for high, else 5 (power-considerate).
func Priority(urgency string) string {
	if bridge.High(urgency) {
		return "10"
	}
	return "5"
}

// Expiration is apns-expiration: 0 (deliver now or never) for a zero TTL,
// else the UNIX second the push expires.
func Expiration(ttl time.Duration, now time.Time) string {
	if ttl < time.Second {
		return "0"
	}
	return strconv.FormatInt(now.Add(ttl).Unix(), 10)
}

// validToken: APNs device tokens are hex (64 digits today; Apple warns
// they may grow). Checked here so a stored token can never alter the path.
func validToken(t string) bool {
	if t == "" || len(t) > 200 {
		return false
	}
	for _, r := range t {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// Send posts m to the device; see bridge.Outcome for what the answers mean.
func (c *Client) Send(ctx context.Context, token string, m bridge.Message) bridge.Result {
	if !validToken(token) {
		return bridge.Result{Outcome: bridge.Gone, Reason: "BadDeviceToken"}
	}
	body, err := Payload(m)
	if err != nil {
		return bridge.Result{Outcome: bridge.Failed, Reason: "encode"}
	}
	if len(body) > MaxPayload {
		return bridge.Result{Outcome: bridge.Failed, Reason: "too_big"}
	}
	stale := ""
	for attempt := 0; ; attempt++ {
		jwtToken, err := c.providerToken(stale)
		if err != nil {
			// The app's key cannot sign: configuration, not the message.
			return bridge.Result{Outcome: bridge.Retry, Reason: "sign", Unavailable: true}
		}
		res := c.post(ctx, token, jwtToken, body, m)
		// Our token expired or was refused (clock, rotation): sign a new
		// one once. A second refusal is a configuration error (Classify:
		// Retry, Unavailable).
		if attempt == 0 && res.Status == http.StatusForbidden &&
			(res.Reason == "ExpiredProviderToken" || res.Reason == "InvalidProviderToken") {
			stale = jwtToken
			continue
		}
		return res
	}
}

// providerToken returns the cached provider JWT, signing a new one when it
// reaches the refresh age or is the stale one APNs refused.
func (c *Client) providerToken(stale string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.token != "" && c.token != stale && now.Sub(c.signedAt) < c.refresh && !now.Before(c.signedAt) {
		return c.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": c.teamID, "iat": now.Unix()})
	t.Header["kid"] = c.keyID
	s, err := t.SignedString(c.key)
	if err != nil {
		return "", fmt.Errorf("apns: sign provider token: %w", err)
	}
	c.token, c.signedAt = s, now
	return s, nil
}

// maxAnswer bounds how much of an answer is read: APNs' are tiny.
const maxAnswer = 16 << 10

func (c *Client) post(ctx context.Context, token, jwtToken string, body []byte, m bridge.Message) bridge.Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/3/device/"+token, bytes.NewReader(body))
	if err != nil {
		return bridge.Result{Outcome: bridge.Failed, Reason: "request"}
	}
	h := req.Header
	h.Set("authorization", "bearer "+jwtToken)
	h.Set("apns-topic", c.topic)
	// alert: the payload carries an alert the app's extension rewrites
	// (Apple requires the type to match the payload).
	h.Set("apns-push-type", "alert")
	h.Set("apns-priority", Priority(m.Urgency))
	h.Set("apns-expiration", Expiration(m.TTL, c.now()))
	if m.Topic != "" && len(m.Topic) <= 64 {
		h.Set("apns-collapse-id", m.Topic)
	}
	h.Set("content-type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return bridge.Unreachable(ctx)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	return Classify(resp.StatusCode, resp.Header, answer, c.now())
}

// Classify maps an APNs answer to a Result; it never fails.
func Classify(status int, h http.Header, body []byte, now time.Time) bridge.Result {
	if status == http.StatusOK {
		return bridge.Result{Outcome: bridge.Delivered, Status: status}
	}
	var e struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(body, &e) // best effort: the status decides otherwise
	res := bridge.Result{Status: status, Reason: label(e.Reason, status)}
	switch {
	case status == http.StatusGone || (status == http.StatusBadRequest && e.Reason == "BadDeviceToken") || e.Reason == "Unregistered":
		res.Outcome = bridge.Gone
	case status == http.StatusTooManyRequests || status >= 500:
		res.Outcome = bridge.Retry
		res.RetryAfter, _ = bridge.ParseRetryAfter(h.Get("Retry-After"), now)
	case status == http.StatusForbidden || e.Reason == "TopicDisallowed" || e.Reason == "BadTopic" || e.Reason == "MissingTopic":
		// Every 403 (ExpiredProviderToken after the refresh,
		// InvalidProviderToken, BadCertificate, Forbidden) and a refused
		// apns-topic are the app's configuration, not the message: wait
		// (the breaker opens) rather than drop while the operator fixes it.
		res.Outcome, res.Unavailable = bridge.Retry, true
	default:
		// DeviceTokenNotForTopic stays Failed: a wrong topic in OUR config
		// would otherwise unregister every device of the app.
		res.Outcome = bridge.Failed
	}
	return res
}

// label keeps APNs' reason usable as a metric label: a bounded
// identifier, else the HTTP status.
func label(reason string, status int) string {
	ok := reason != "" && len(reason) <= 40
	for _, r := range reason {
		ok = ok && ((r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z'))
	}
	if ok {
		return reason
	}
	return "http_" + strconv.Itoa(status)
}
