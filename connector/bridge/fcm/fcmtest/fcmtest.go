// Package fcmtest is a strict local FCM HTTP v1 server for tests: HTTPS
// only, an OAuth 2.0 token endpoint that verifies the service account's
// JWT assertion, and messages:send that checks the access token it issued
// and the message JSON the way Google does (unknown fields, non-string data
// values, bad ttl or priority: 400 INVALID_ARGUMENT; unknown registration
// token: 404 UNREGISTERED). It records what it accepted and can be told to
// answer errors.
package fcmtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	scope     = "https://www.googleapis.com/auth/firebase.messaging"
	grantType = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	maxData   = 4096
)

// Received is one message the server accepted.
type Received struct {
	Token       string
	Priority    string
	TTL         string
	CollapseKey string
	Data        map[string]string
	Body        []byte // the raw request body
}

// Fault is an answer to give instead of handling a send.
type Fault struct {
	Status     int
	Code       string // FCM errorCode (UNAVAILABLE, QUOTA_EXCEEDED, ...)
	RetryAfter string // Retry-After header value, "" for none
}

// Server is the fake FCM. Use New, then Credentials/Project for the client
// config, Client (or CertPEM) to trust its certificate.
type Server struct {
	*httptest.Server
	project string
	key     *rsa.PrivateKey
	keyID   string
	email   string

	mu          sync.Mutex
	now         func() time.Time
	expiresIn   time.Duration
	tokens      map[string]time.Time // issued access token -> expiry
	issued      int
	devices     map[string]bool // registration token -> known
	faults      []Fault
	received    []Received
	rejected    []string
	tokenFaults []Fault
}

// New starts a server for project with a fresh service account.
func New(project string) *Server {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	s := &Server{
		project:   project,
		key:       key,
		keyID:     randHex(20),
		email:     "pushlog@" + project + ".iam.gserviceaccount.com",
		now:       time.Now,
		expiresIn: time.Hour,
		tokens:    map[string]time.Time{},
		devices:   map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", s.send)
	s.Server = httptest.NewUnstartedServer(mux)
	// Handshake errors of closed or refused connections are expected noise.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Project is the server's Firebase project id.
func (s *Server) Project() string { return s.project }

// TokenURL is the server's OAuth token endpoint.
func (s *Server) TokenURL() string { return s.URL + "/token" }

// Credentials is the service account JSON key, token_uri pointing here.
func (s *Server) Credentials() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(s.key)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     s.project,
		"private_key_id": s.keyID,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   s.email,
		"client_id":      "1",
		"token_uri":      s.TokenURL(),
	})
	return b
}

// CertPEM is the server's TLS certificate, for a CA file.
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// SetNow sets the server's clock (assertion and token expiry checks).
func (s *Server) SetNow(now func() time.Time) { s.mu.Lock(); s.now = now; s.mu.Unlock() }

// SetExpiresIn sets the lifetime of access tokens issued from now on.
func (s *Server) SetExpiresIn(d time.Duration) { s.mu.Lock(); s.expiresIn = d; s.mu.Unlock() }

// Register makes registration tokens known; others answer 404 UNREGISTERED.
func (s *Server) Register(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range tokens {
		s.devices[t] = true
	}
}

// Unregister forgets a registration token (the app was uninstalled).
func (s *Server) Unregister(token string) { s.mu.Lock(); delete(s.devices, token); s.mu.Unlock() }

// RevokeTokens invalidates every access token issued so far (401 next).
func (s *Server) RevokeTokens() { s.mu.Lock(); clear(s.tokens); s.mu.Unlock() }

// Fail queues answers for the next sends, in order, before any checks.
func (s *Server) Fail(f ...Fault) { s.mu.Lock(); s.faults = append(s.faults, f...); s.mu.Unlock() }

// FailToken queues answers for the next token requests.
func (s *Server) FailToken(f ...Fault) {
	s.mu.Lock()
	s.tokenFaults = append(s.tokenFaults, f...)
	s.mu.Unlock()
}

// Received returns the accepted messages, oldest first.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Rejected returns why each refused request was refused (for test logs).
func (s *Server) Rejected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rejected...)
}

// TokensIssued counts access tokens issued.
func (s *Server) TokensIssued() int { s.mu.Lock(); defer s.mu.Unlock(); return s.issued }

func (s *Server) refuse(w http.ResponseWriter, f Fault, msg string, tokenField bool) {
	s.mu.Lock()
	s.rejected = append(s.rejected, fmt.Sprintf("%d %s: %s", f.Status, f.Code, msg))
	s.mu.Unlock()
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	detail := map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": f.Code}
	details := []any{detail}
	if tokenField {
		details = append(details, map[string]any{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []any{map[string]string{"field": "message.token", "description": "Invalid registration token"}},
		})
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(f.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": f.Status, "message": msg, "status": rpcStatus(f.Status), "details": details,
	}})
}

func rpcStatus(st int) string {
	switch st {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 503:
		return "UNAVAILABLE"
	}
	return "INTERNAL"
}

func (s *Server) nextFault(q *[]Fault) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(*q) == 0 {
		return Fault{}, false
	}
	f := (*q)[0]
	*q = (*q)[1:]
	return f, true
}

// token is the OAuth 2.0 JWT bearer grant (RFC 7523) as Google serves it.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	oauthErr := func(st int, code, desc string) {
		s.mu.Lock()
		s.rejected = append(s.rejected, "token: "+desc)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(st)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if f, ok := s.nextFault(&s.tokenFaults); ok {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		oauthErr(f.Status, "temporarily_unavailable", "fault injected")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		oauthErr(400, "invalid_request", "content type "+ct)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		oauthErr(400, "invalid_request", err.Error())
		return
	}
	if g := r.PostForm.Get("grant_type"); g != grantType {
		oauthErr(400, "unsupported_grant_type", "grant_type "+g)
		return
	}
	s.mu.Lock()
	now, expiresIn := s.now(), s.expiresIn
	s.mu.Unlock()
	if err := s.checkAssertion(r.PostForm.Get("assertion"), now); err != nil {
		oauthErr(400, "invalid_grant", err.Error())
		return
	}
	tok := "ya29." + randHex(32)
	s.mu.Lock()
	s.tokens[tok] = now.Add(expiresIn)
	s.issued++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "expires_in": int(expiresIn / time.Second), "token_type": "Bearer",
	})
}

func (s *Server) checkAssertion(assertion string, now time.Time) error {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.keyID {
			return nil, fmt.Errorf("kid %q is not the key's id", kid)
		}
		return &s.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithIssuer(s.email), jwt.WithAudience(s.TokenURL()), jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	if err != nil {
		return fmt.Errorf("assertion: %w", err)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	// Google takes assertions valid up to an hour; libraries backdate iat a
	// few seconds against clock skew (x/oauth2 by 10s), which it tolerates.
	if iat == nil || exp.Sub(iat.Time) > time.Hour+time.Minute || exp.Sub(now) > time.Hour+time.Minute {
		return fmt.Errorf("assertion: iat missing or exp more than an hour ahead")
	}
	if sc, _ := claims["scope"].(string); !strings.Contains(" "+sc+" ", " "+scope+" ") {
		return fmt.Errorf("assertion: scope %q lacks %s", sc, scope)
	}
	return nil
}

// The v1 message, strictly: every field FCM knows that we accept; anything
// else is an unknown field, as Google answers.
type sendRequest struct {
	ValidateOnly bool    `json:"validate_only"`
	Message      message `json:"message"`
}

type message struct {
	Name    string            `json:"name"`
	Token   string            `json:"token"`
	Topic   string            `json:"topic"`
	Data    map[string]string `json:"data"`
	Android *android          `json:"android"`
}

type android struct {
	CollapseKey           string            `json:"collapse_key"`
	Priority              string            `json:"priority"`
	TTL                   string            `json:"ttl"`
	RestrictedPackageName string            `json:"restricted_package_name"`
	Data                  map[string]string `json:"data"`
	DirectBootOK          bool              `json:"direct_boot_ok"`
}

var ttlFormat = regexp.MustCompile(`^\d+(\.\d{1,9})?s$`)

// reserved data keys FCM refuses (and the "google." / "gcm." prefixes).
var reserved = map[string]bool{"from": true, "notification": true, "message_type": true}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	bad := func(msg string) { s.refuse(w, Fault{Status: 400, Code: "INVALID_ARGUMENT"}, msg, false) }
	if f, ok := s.nextFault(&s.faults); ok {
		s.refuse(w, f, "fault injected", false)
		return
	}
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[auth]
	now := s.now()
	s.mu.Unlock()
	if !ok || !known || !now.Before(exp) {
		s.refuse(w, Fault{Status: 401, Code: "THIRD_PARTY_AUTH_ERROR"}, "Request had invalid authentication credentials.", false)
		return
	}
	if r.PathValue("project") != s.project {
		s.refuse(w, Fault{Status: 403, Code: "SENDER_ID_MISMATCH"}, "project "+r.PathValue("project"), false)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		bad("content type " + ct)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		bad("body: " + err.Error())
		return
	}
	var req sendRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		bad("Invalid JSON payload received. " + err.Error())
		return
	}
	if dec.More() {
		bad("Invalid JSON payload received. Trailing data.")
		return
	}
	m := req.Message
	if m.Topic != "" || m.Token == "" {
		bad("Exactly one of token, topic or condition must be set (this fake takes token only).")
		return
	}
	if m.Android == nil {
		bad("This fake expects an android config.")
		return
	}
	a := m.Android
	if a.TTL != "" && !ttlFormat.MatchString(a.TTL) {
		bad("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), Field 'ttl', Illegal duration format")
		return
	}
	if secs, _ := strconv.ParseFloat(strings.TrimSuffix(a.TTL, "s"), 64); secs > 28*24*3600 {
		bad("message.android.ttl exceeds 4 weeks")
		return
	}
	switch a.Priority {
	case "", "NORMAL", "HIGH":
	default:
		bad("Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), \"" + a.Priority + "\"")
		return
	}
	data := a.Data
	if data == nil {
		data = m.Data
	}
	for k := range data {
		if reserved[k] || strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
			bad("Invalid data payload key: " + k)
			return
		}
	}
	if d, _ := json.Marshal(data); len(d) > maxData {
		bad("Message is too big")
		return
	}
	s.mu.Lock()
	knownDevice := s.devices[m.Token]
	s.mu.Unlock()
	if !knownDevice {
		if strings.ContainsAny(m.Token, " /") || len(m.Token) > 4096 {
			s.refuse(w, Fault{Status: 400, Code: "INVALID_ARGUMENT"}, "The registration token is not a valid FCM registration token", true)
			return
		}
		s.refuse(w, Fault{Status: 404, Code: "UNREGISTERED"}, "Requested entity was not found.", false)
		return
	}
	s.mu.Lock()
	s.received = append(s.received, Received{Token: m.Token, Priority: a.Priority, TTL: a.TTL, CollapseKey: a.CollapseKey, Data: data, Body: body})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"name": "projects/" + s.project + "/messages/0:" + randHex(8)})
}
