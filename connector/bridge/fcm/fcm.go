// Package fcm sends bridge messages to Firebase Cloud Messaging's HTTP v1
// API (Firefox for Android) with a service account's OAuth 2.0 token.
package fcm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/pushlog/pushlog/connector/bridge"
)

// Defaults: the real services.
const (
	DefaultBaseURL  = "https://fcm.googleapis.com"
	DefaultTokenURL = "https://oauth2.googleapis.com/token"
	// Scope is the OAuth scope FCM's send API requires.
	Scope = "https://www.googleapis.com/auth/firebase.messaging"
	// MaxData is FCM's limit on a message's data: the JSON of the data map,
	// measured the way autopush does.
	MaxData = 4096
	// MaxTTL is FCM's longest android.ttl (4 weeks).
	MaxTTL = 28 * 24 * time.Hour
)

// Config is one FCM app (a Firebase project and its service account).
type Config struct {
	// Credentials is the service account's JSON key as Google issues it
	// (type service_account: client_email, private_key, private_key_id,
	// project_id, token_uri).
	Credentials []byte
	// Project is the Firebase project id; "" takes the key's project_id.
	Project string
	// BaseURL of the FCM API (default DefaultBaseURL).
	BaseURL string
	// TokenURL of the OAuth token endpoint; "" takes the key's token_uri,
	// else DefaultTokenURL. The JWT assertion's aud is this URL.
	TokenURL string
	// HTTPClient for both endpoints; nil builds one with Timeout that
	// trusts RootCAs.
	HTTPClient *http.Client
	// RootCAs the services' certificates must chain to (nil: the system's);
	// see bridge.LoadRootCAs.
	RootCAs *x509.CertPool
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	// TokenMargin: an access token is replaced this long before it expires
	// (default 5 minutes), so no send races its expiry.
	TokenMargin time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// serviceAccount is the part of Google's JSON key the flow needs.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// Client is a bridge.Sender for one FCM project.
type Client struct {
	send   string // the messages:send URL
	jwt    *jwt.Config
	http   *http.Client
	margin time.Duration
	now    func() time.Time

	mu    sync.Mutex // held across a token fetch: one fetch at a time
	token *oauth2.Token
}

var _ bridge.Sender = (*Client)(nil)

// New checks the config and the key; it does no I/O.
func New(cfg Config) (*Client, error) {
	var sa serviceAccount
	if err := json.Unmarshal(cfg.Credentials, &sa); err != nil {
		return nil, fmt.Errorf("fcm: service account key: %w", err)
	}
	if sa.Type != "service_account" || sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, errors.New("fcm: service account key: want type service_account with client_email and private_key")
	}
	project := cfg.Project
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" || strings.ContainsAny(project, "/?#%") {
		return nil, fmt.Errorf("fcm: bad or missing project id %q", project)
	}
	base := cmpOr(cfg.BaseURL, DefaultBaseURL)
	if u, err := url.Parse(base); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fcm: base URL %q: want an absolute http(s) URL", base)
	}
	tokenURL := cmpOr(cfg.TokenURL, sa.TokenURI, DefaultTokenURL)
	if u, err := url.Parse(tokenURL); err != nil || u.Host == "" {
		return nil, fmt.Errorf("fcm: token URL %q: want an absolute URL", tokenURL)
	}
	c := &Client{
		send: strings.TrimRight(base, "/") + "/v1/projects/" + project + "/messages:send",
		jwt: &jwt.Config{
			Email:        sa.ClientEmail,
			PrivateKey:   []byte(sa.PrivateKey),
			PrivateKeyID: sa.PrivateKeyID,
			Scopes:       []string{Scope},
			TokenURL:     tokenURL,
			Expires:      time.Hour, // Google's longest
		},
		http:   cfg.HTTPClient,
		margin: cfg.TokenMargin,
		now:    cfg.Now,
	}
	if c.margin <= 0 {
		c.margin = 5 * time.Minute
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
		c.http = &http.Client{Timeout: cmpOr(cfg.Timeout, 10*time.Second), Transport: t}
	}
	// Parse the key once now so a bad one fails at start, not at first send.
	if _, err := parseKey(c.jwt.PrivateKey); err != nil {
		return nil, fmt.Errorf("fcm: service account private key: %w", err)
	}
	return c, nil
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

// MaxPayload is FCM's limit on the data map's JSON.
func (c *Client) MaxPayload() int { return MaxData }

// Check measures m's data map as Send would.
func (c *Client) Check(m bridge.Message) error {
	data, err := json.Marshal(messageData(m))
	if err != nil {
		return fmt.Errorf("fcm: data: %w", err)
	}
	if len(data) > MaxData {
		return &bridge.TooBigError{Size: len(data), Max: MaxData}
	}
	return nil
}

// messageData is the data map Firefox for Android reads (autopush's shape):
// chid always; body (base64url, unpadded), con, enc, cryptokey only with data.
func messageData(m bridge.Message) map[string]string {
	d := map[string]string{"chid": m.ChannelID}
	if m.Data != nil {
		d["body"] = base64.RawURLEncoding.EncodeToString(m.Data)
		putNonEmpty(d, "con", m.Encoding)
		putNonEmpty(d, "enc", m.Encryption)
		putNonEmpty(d, "cryptokey", m.CryptoKey)
	}
	return d
}

func putNonEmpty(d map[string]string, k, v string) {
	if v != "" {
		d[k] = v
	}
}

// Wire types of the v1 API (the subset we send).
type sendRequest struct {
	Message message `json:"message"`
}

type message struct {
	Token   string        `json:"token"`
	Android androidConfig `json:"android"`
}

type androidConfig struct {
	CollapseKey string            `json:"collapse_key,omitempty"`
	Priority    string            `json:"priority"`
	TTL         string            `json:"ttl"`
	Data        map[string]string `json:"data"`
}

// TTLString renders a TTL as the protobuf Duration JSON FCM takes: whole
// seconds, rounded down, clamped to [0, MaxTTL].
func TTLString(ttl time.Duration) string {
	ttl = min(max(ttl, 0), MaxTTL)
	return strconv.FormatInt(int64(ttl/time.Second), 10) + "s"
}

// Priority maps Urgency: only high wakes the device (HIGH), else NORMAL.
func Priority(urgency string) string {
	if bridge.High(urgency) {
		return "HIGH"
	}
	return "NORMAL"
}

func (c *Client) encode(token string, m bridge.Message) ([]byte, error) {
	if err := c.Check(m); err != nil {
		return nil, err
	}
	return json.Marshal(sendRequest{Message: message{
		Token: token,
		Android: androidConfig{
			CollapseKey: m.Topic,
			Priority:    Priority(m.Urgency),
			TTL:         TTLString(m.TTL),
			Data:        messageData(m),
		},
	}})
}

// Send posts m to the device; see bridge.Outcome for what the answers mean.
func (c *Client) Send(ctx context.Context, token string, m bridge.Message) bridge.Result {
	if token == "" {
		return bridge.Result{Outcome: bridge.Gone, Reason: "no_token"}
	}
	body, err := c.encode(token, m)
	if err != nil {
		if _, ok := errors.AsType[*bridge.TooBigError](err); ok {
			return bridge.Result{Outcome: bridge.Failed, Reason: "too_big"}
		}
		return bridge.Result{Outcome: bridge.Failed, Reason: "encode"}
	}
	var stale *oauth2.Token
	for attempt := 0; ; attempt++ {
		tok, res, ok := c.accessToken(ctx, stale)
		if !ok {
			return res
		}
		res = c.post(ctx, tok.AccessToken, body)
		// A 401 with a token we believed valid: Google revoked or rotated
		// it. Fetch a new one once; a second 401 is a configuration error
		// (Classify: Retry, Unavailable).
		if res.Status == http.StatusUnauthorized && attempt == 0 {
			stale = tok
			continue
		}
		return res
	}
}

// accessToken returns the cached token, or fetches one when there is none,
// it is within the margin of its expiry, or it is stale (refused by FCM).
func (c *Client) accessToken(ctx context.Context, stale *oauth2.Token) (*oauth2.Token, bridge.Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.token; t != nil && t != stale && c.now().Add(c.margin).Before(t.Expiry) {
		return t, bridge.Result{}, true
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	// jwt.Config.TokenSource wraps a fresh source: Token() always fetches.
	t, err := c.jwt.TokenSource(ctx).Token()
	if err != nil {
		return nil, tokenFailure(ctx, err, c.now()), false
	}
	c.token = t
	return t, bridge.Result{}, true
}

// tokenFailure: the token endpoint down or throttling is a Retry; a refusal
// of our assertion (bad key, clock, revoked service account) is also a
// Retry, Unavailable: no message is at fault, so none is dropped and the
// app's breaker opens until the operator fixes the key or the TTLs run out.
func tokenFailure(ctx context.Context, err error, now time.Time) bridge.Result {
	re, ok := errors.AsType[*oauth2.RetrieveError](err)
	if !ok || re.Response == nil {
		if r := bridge.Unreachable(ctx); r.Reason == "canceled" {
			return r
		}
		return bridge.Result{Outcome: bridge.Retry, Reason: "oauth_unreachable"}
	}
	st := re.Response.StatusCode
	if st == http.StatusTooManyRequests || st >= 500 {
		d, _ := bridge.ParseRetryAfter(re.Response.Header.Get("Retry-After"), now)
		return bridge.Result{Outcome: bridge.Retry, RetryAfter: d, Reason: "oauth_unavailable", Status: st}
	}
	return bridge.Result{Outcome: bridge.Retry, Reason: "oauth_refused", Status: st, Unavailable: true}
}

// maxAnswer bounds how much of an answer is read: FCM's errors are small.
const maxAnswer = 64 << 10

func (c *Client) post(ctx context.Context, accessToken string, body []byte) bridge.Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.send, bytes.NewReader(body))
	if err != nil {
		return bridge.Result{Outcome: bridge.Failed, Reason: "request"}
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := c.http.Do(req)
	if err != nil {
		return bridge.Unreachable(ctx)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	return Classify(resp.StatusCode, resp.Header, answer, c.now())
}

// apiError is Google's error answer (google.rpc.Status with FCM details).
type apiError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// Classify maps an FCM answer to a Result. It reads only what it needs and
// never fails: an unreadable body just leaves the status to decide.
func Classify(status int, h http.Header, body []byte, now time.Time) bridge.Result {
	if status >= 200 && status < 300 {
		return bridge.Result{Outcome: bridge.Delivered, Status: status}
	}
	var e apiError
	_ = json.Unmarshal(body, &e) // best effort: the status decides when it is not JSON
	code, tokenField := "", false
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" && code == "" {
			code = d.ErrorCode
		}
		for _, v := range d.FieldViolations {
			tokenField = tokenField || v.Field == "message.token"
		}
	}
	reason := label(cmpOr(code, e.Error.Status), status)
	res := bridge.Result{Status: status, Reason: reason}
	switch {
	case status == http.StatusNotFound || code == "UNREGISTERED":
		res.Outcome, res.Reason = bridge.Gone, "UNREGISTERED"
	case status == http.StatusBadRequest && (tokenField || strings.Contains(e.Error.Message, "registration token")):
		// INVALID_ARGUMENT about message.token: the token is malformed or
		// no longer valid; any other 400 is our message's fault.
		res.Outcome, res.Reason = bridge.Gone, "INVALID_TOKEN"
	case status == http.StatusTooManyRequests || status >= 500:
		res.Outcome = bridge.Retry
		res.RetryAfter, _ = bridge.ParseRetryAfter(h.Get("Retry-After"), now)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// Our credentials or project (THIRD_PARTY_AUTH_ERROR, PERMISSION_DENIED,
		// SENDER_ID_MISMATCH: the key belongs to another project) are
		// refused: the app's configuration, not the message, is at fault.
		res.Outcome, res.Unavailable = bridge.Retry, true
	default:
		// Any other 4xx (INVALID_ARGUMENT about the message, too big) is
		// this message's own fault: sending it again cannot succeed.
		res.Outcome = bridge.Failed
	}
	return res
}

// label keeps a service-chosen code usable as a metric label: an upper-case
// identifier of bounded length, else the HTTP status.
func label(code string, status int) string {
	ok := code != "" && len(code) <= 40
	for _, r := range code {
		ok = ok && (r == '_' || (r >= 'A' && r <= 'Z'))
	}
	if ok {
		return code
	}
	return "http_" + strconv.Itoa(status)
}
