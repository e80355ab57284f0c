// Package apnstest is a strict local APNs provider API for tests: HTTP/2
// over TLS only, token authentication (ES256 provider JWT with kid, iss and
// an iat within the hour, updated no more often than every 20 minutes on a
// connection), the request headers and payload checked as Apple does, and
// device tokens known, unknown (400 BadDeviceToken) or unregistered (410).
// It records what it accepted and can be told to answer errors.
package apnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const maxPayload = 4096

// Received is one notification the server accepted.
type Received struct {
	Token      string
	Topic      string
	PushType   string
	Priority   string
	Expiration string
	CollapseID string
	Payload    map[string]any
	Body       []byte
}

// Fault is an answer to give instead of handling a request (after the
// HTTP/2 and path checks).
type Fault struct {
	Status     int
	Reason     string
	RetryAfter string
}

// Server is the fake APNs.
type Server struct {
	*httptest.Server
	topic, teamID, keyID string
	key                  *ecdsa.PrivateKey

	mu           sync.Mutex
	now          func() time.Time
	devices      map[string]bool
	unregistered map[string]time.Time
	faults       []Fault
	received     []Received
	rejected     []string
	lastIat      map[string]int64 // per connection (remote address): the provider token's iat in use
	tokens       int              // distinct provider tokens (by iat) seen
}

// New starts a server for the app topic (bundle id) with a fresh key.
func New(topic string) *Server {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	s := &Server{
		topic: topic, teamID: strings.ToUpper(randHex(5)), keyID: strings.ToUpper(randHex(5)), key: key,
		now: time.Now, devices: map[string]bool{}, unregistered: map[string]time.Time{}, lastIat: map[string]int64{},
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.handle))
	// EnableHTTP2 makes the listener offer ALPN h2 only: an HTTP/1.1-only
	// client fails the handshake, and one without ALPN is refused below.
	s.EnableHTTP2 = true
	// Handshake errors (HTTP/1.1 refused, closed connections) are expected noise.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Key is the token-signing key as Apple's .p8 file holds it.
func (s *Server) Key() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(s.key)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// KeyID, TeamID and Topic are what the client config needs with Key.
func (s *Server) KeyID() string  { return s.keyID }
func (s *Server) TeamID() string { return s.teamID }
func (s *Server) Topic() string  { return s.topic }

// RootCAs trusts the server's certificate.
func (s *Server) RootCAs() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

// CertPEM is the server's certificate, for a CA file.
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// DeviceToken returns a fresh well-formed device token, registered.
func (s *Server) DeviceToken() string {
	t := randHex(32)
	s.Register(t)
	return t
}

// SetNow sets the server's clock (provider token age checks).
func (s *Server) SetNow(now func() time.Time) { s.mu.Lock(); s.now = now; s.mu.Unlock() }

// Register makes device tokens known.
func (s *Server) Register(tokens ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range tokens {
		s.devices[t] = true
		delete(s.unregistered, t)
	}
}

// Unregister: the app was removed; the token answers 410 Unregistered.
func (s *Server) Unregister(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.devices, token)
	s.unregistered[token] = s.now()
}

// Fail queues answers for the next requests, in order.
func (s *Server) Fail(f ...Fault) { s.mu.Lock(); s.faults = append(s.faults, f...); s.mu.Unlock() }

// Received returns the accepted notifications, oldest first.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Rejected returns why each refused request was refused.
func (s *Server) Rejected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rejected...)
}

// ProviderTokens counts distinct provider tokens (by iat) seen.
func (s *Server) ProviderTokens() int { s.mu.Lock(); defer s.mu.Unlock(); return s.tokens }

func (s *Server) refuse(w http.ResponseWriter, st int, reason, why string, extra ...any) {
	s.mu.Lock()
	s.rejected = append(s.rejected, fmt.Sprintf("%d %s: %s", st, reason, why))
	s.mu.Unlock()
	body := map[string]any{"reason": reason}
	for i := 0; i+1 < len(extra); i += 2 {
		body[extra[i].(string)] = extra[i+1]
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("apns-id", newUUID())
	w.WriteHeader(st)
	_ = json.NewEncoder(w).Encode(body)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

var (
	tokenFormat = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	uuidFormat  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	pushTypes   = []string{"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk", "widgets", "controls"}
)

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		s.refuse(w, http.StatusHTTPVersionNotSupported, "BadProtocol", "HTTP/"+strconv.Itoa(r.ProtoMajor))
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || strings.Contains(token, "/") {
		s.refuse(w, 404, "BadPath", r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		s.refuse(w, 405, "MethodNotAllowed", r.Method)
		return
	}
	s.mu.Lock()
	var fault *Fault
	if len(s.faults) > 0 {
		fault = &s.faults[0]
		s.faults = s.faults[1:]
	}
	s.mu.Unlock()
	if fault != nil {
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		s.refuse(w, fault.Status, fault.Reason, "fault injected")
		return
	}
	if st, reason, why := s.checkAuth(r); st != 0 {
		s.refuse(w, st, reason, why)
		return
	}
	if st, reason, why := s.checkHeaders(r.Header); st != 0 {
		s.refuse(w, st, reason, why)
		return
	}
	if !tokenFormat.MatchString(token) {
		s.refuse(w, 400, "BadDeviceToken", "format "+token)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		s.refuse(w, 400, "BadPayload", err.Error())
		return
	}
	payload, st, reason, why := checkPayload(body, r.Header.Get("apns-push-type"))
	if st != 0 {
		s.refuse(w, st, reason, why)
		return
	}
	s.mu.Lock()
	known := s.devices[token]
	gone, wasUnregistered := s.unregistered[token]
	s.mu.Unlock()
	if wasUnregistered {
		s.refuse(w, 410, "Unregistered", token, "timestamp", gone.UnixMilli())
		return
	}
	if !known {
		s.refuse(w, 400, "BadDeviceToken", "unknown "+token)
		return
	}
	h := r.Header
	s.mu.Lock()
	s.received = append(s.received, Received{
		Token: token, Topic: h.Get("apns-topic"), PushType: h.Get("apns-push-type"), Priority: h.Get("apns-priority"),
		Expiration: h.Get("apns-expiration"), CollapseID: h.Get("apns-collapse-id"), Payload: payload, Body: body,
	})
	s.mu.Unlock()
	w.Header().Set("apns-id", cmpOr(h.Get("apns-id"), newUUID()))
	w.WriteHeader(http.StatusOK)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkAuth verifies the provider token: ES256, kid = the key's id, iss =
// the team, iat within the last hour, updated at most every 20 minutes.
func (s *Server) checkAuth(r *http.Request) (int, string, string) {
	raw, ok := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	if !ok || raw == "" {
		return 403, "MissingProviderToken", "no bearer token"
	}
	s.mu.Lock()
	now := s.now()
	s.mu.Unlock()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.keyID {
			return nil, fmt.Errorf("kid %q", kid)
		}
		return &s.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(s.teamID), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return 403, "InvalidProviderToken", err.Error()
	}
	iatF, ok := claims["iat"].(float64)
	if !ok {
		return 403, "InvalidProviderToken", "no iat"
	}
	iat := int64(iatF)
	switch age := now.Sub(time.Unix(iat, 0)); {
	case age > time.Hour:
		return 403, "ExpiredProviderToken", "iat " + age.String() + " ago"
	case age < -time.Minute:
		return 403, "InvalidProviderToken", "iat in the future"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, seen := s.lastIat[r.RemoteAddr]
	if seen && iat != prev {
		if iat < prev || time.Duration(iat-prev)*time.Second < 20*time.Minute {
			return 429, "TooManyProviderTokenUpdates", "iat moved by " + strconv.FormatInt(iat-prev, 10) + "s"
		}
	}
	if !seen || iat != prev {
		s.tokens++
	}
	s.lastIat[r.RemoteAddr] = iat
	return 0, "", ""
}

func (s *Server) checkHeaders(h http.Header) (int, string, string) {
	switch t := h.Get("apns-topic"); {
	case t == "":
		return 400, "MissingTopic", ""
	case t != s.topic:
		return 400, "TopicDisallowed", t
	}
	pt := h.Get("apns-push-type")
	if !slices.Contains(pushTypes, pt) {
		return 400, "InvalidPushType", pt
	}
	switch p := h.Get("apns-priority"); {
	case p != "" && p != "1" && p != "5" && p != "10":
		return 400, "BadPriority", p
	case p == "10" && pt == "background":
		return 400, "BadPriority", "background with priority 10"
	}
	if e := h.Get("apns-expiration"); e != "" {
		if n, err := strconv.ParseInt(e, 10, 64); err != nil || n < 0 {
			return 400, "BadExpirationDate", e
		}
	}
	if id := h.Get("apns-id"); id != "" && !uuidFormat.MatchString(id) {
		return 400, "BadMessageId", id
	}
	if c := h.Get("apns-collapse-id"); len(c) > 64 {
		return 400, "BadCollapseId", c
	}
	return 0, "", ""
}

// checkPayload: ≤ 4096 bytes of JSON object with an aps dictionary; an
// alert push must show something.
func checkPayload(body []byte, pushType string) (map[string]any, int, string, string) {
	if len(body) > maxPayload {
		return nil, 413, "PayloadTooLarge", strconv.Itoa(len(body)) + " bytes"
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, 400, "PayloadEmpty", ""
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, 400, "BadPayload", err.Error()
	}
	aps, ok := p["aps"].(map[string]any)
	if !ok {
		return nil, 400, "BadPayload", "no aps dictionary"
	}
	if pushType == "alert" && aps["alert"] == nil && aps["badge"] == nil && aps["sound"] == nil {
		return nil, 400, "BadPayload", "alert push without alert, badge or sound"
	}
	return p, 0, "", ""
}
