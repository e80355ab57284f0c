package ingest

// autopush's registration API for mobile user agents (issue 14 point 1):
// Firefox for Android and iOS register over HTTP with their FCM or APNs
// device token instead of holding a WebSocket. Paths, bodies and answers
// follow autopush-rs (autoendpoint/src/routes/registration.rs); every change
// is an event on pushlog.registrations like the WebSocket ones, so the
// channel projector, the gone set and the owners see bridged UAIDs the way
// they see the others.

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Defaults of BridgeConfig.
const (
	DefaultBridgeMaxChannels   = 1000 // like the WebSocket's --max-channels
	DefaultBridgeMaxToken      = 4096 // FCM tokens are ~160 bytes, APNs 64 hex
	DefaultBridgeMaxBody       = 8192
	DefaultBridgeRate          = 1.0 // registration requests per second per source
	DefaultBridgeBurst         = 20
	DefaultBridgeSources       = 100_000
	DefaultBridgePayloadLimit  = 4096 // autopush's max_data of both FCM and APNs
	bridgeSecretHeader         = "Authorization"
	errnoBridgeInvalidRouter   = 108 // 400: router_type is neither fcm nor apns
	bridgeUnregisterReason     = "unregistered"
	bridgeRateLimitRetryAfterS = 1
)

// BridgeConfig enables the registration API. Without Apps and AuthKeys it
// is off and its paths answer 404 like any unknown path.
type BridgeConfig struct {
	// Apps lists the configured app ids of each router type ("fcm",
	// "apns"): the Firebase projects and APNs release channels the
	// senders (connector/bridge) are configured for.
	Apps map[string][]string
	// AuthKeys sign the per-UAID secret, HMAC-SHA256 of the UAID's 32
	// hex characters, hex-encoded, as autopush's AUTH_KEYS do (a key is
	// used as the bytes of its string, never base64-decoded, so an
	// autopush deployment's keys keep its devices' secrets valid). The
	// first signs new secrets; every key verifies (rotation).
	AuthKeys [][]byte
	// State answers which UAIDs are bridged and their channels (a fold of
	// pushlog.registrations; projector.BridgeTable). Required when on.
	State BridgeState
	// MaxChannels bounds the channels of a bridged UAID (default 1000).
	MaxChannels int
	// MaxToken bounds the device token in bytes (default 4096).
	MaxToken int
	// MaxBody bounds a registration request's body (default 8 KiB): larger
	// is 413 errno 104.
	MaxBody int
	// Rate and Burst bound registration requests per source address (the
	// address as ingest's quotas read it, Quota.TrustedProxies included):
	// past them 429 errno 129 with Retry-After. Defaults 1/s, burst 20.
	Rate  float64
	Burst int
	// Sources bounds the tracked source addresses (default 100000; the
	// least recently seen is forgotten).
	Sources int
	// PayloadLimit is the largest push a bridged endpoint accepts, per
	// router type, counted as the bridges carry it: the body
	// base64url-encoded plus the crypto headers (default 4096 each,
	// autopush's max_data). Past it a push is 413 errno 104 at ingest, not
	// a failed send later.
	PayloadLimit map[string]int
}

func (c BridgeConfig) enabled() bool { return len(c.Apps) > 0 }

// BridgeState is the registration API's view of bridged UAIDs.
type BridgeState interface {
	// Bridged returns what this node knows of a bridged UAID; ok false
	// for a UAID never bridged (or reset).
	Bridged(uaid string) (BridgeUser, bool)
	// Apply folds an event this node has just written, so a device's
	// next request to the same node sees its own change at once (other
	// nodes see it when they read it from Kafka, milliseconds later).
	Apply(ev *pb.Event)
	// Ready reports whether the state has caught up with the log: until
	// then an unknown UAID may exist, and is answered 503 (retry), never
	// 410 (which would make the device register again).
	Ready() bool
}

// BridgeUser is a bridged UAID as the registration API needs it.
type BridgeUser struct {
	RouterType string
	AppID      string
	Channels   []string // lowercase dashed channel ids, registered ones only
	// Token, Aps and RegisteredMs are of the newest BridgeRegistered: the
	// daily GET re-appends it when it is older than BridgeRefresh, so an
	// active device's registration never leaves the log by retention.
	Token, Aps   string
	RegisteredMs int64
}

// BridgeRefresh is how old a UAID's BridgeRegistered may be before the
// device's GET re-appends it (pushlog.registrations keeps a week).
const BridgeRefresh = 24 * time.Hour

// validBridgeToken is autopush's check of FCM and APNs tokens: at least 8
// characters, no space (router_data_input.rs).
var validBridgeToken = regexp.MustCompile(`^[^ ]{8,}$`)

// bridgeAPI serves the registration routes.
type bridgeAPI struct {
	cfg   BridgeConfig
	apps  map[string]map[string]bool
	mu    sync.Mutex
	rates *simplelru.LRU[netip.Addr, *rate.Limiter]
	met   *bridgeMetrics
	// subscribe serialises one UAID's channel additions on this node (by
	// a stripe of its id), so concurrent requests cannot all pass the
	// channel bound before any is folded in.
	subscribe [256]sync.Mutex
}

type bridgeMetrics struct {
	requests *prometheus.CounterVec // route, status
	refusals *prometheus.CounterVec // reason
}

// Reasons a registration request is refused by a bound
// (pushlog_ingest_bridge_refusals_total).
const (
	bridgeReasonBody     = "body"
	bridgeReasonToken    = "token"
	bridgeReasonChannels = "channels"
	bridgeReasonRate     = "rate"
	bridgeReasonAuth     = "auth"
	bridgeReasonPayload  = "payload"
)

func newBridgeAPI(cfg BridgeConfig, reg prometheus.Registerer) (*bridgeAPI, error) {
	if !cfg.enabled() {
		return nil, nil
	}
	if len(cfg.AuthKeys) == 0 {
		return nil, errors.New("bridges: AuthKeys required (the per-UAID secrets are signed with them)")
	}
	if cfg.State == nil {
		return nil, errors.New("bridges: State required")
	}
	apps := make(map[string]map[string]bool, len(cfg.Apps))
	for rt, ids := range cfg.Apps {
		if _, ok := schema.ParseBridge(rt); !ok {
			return nil, fmt.Errorf("bridges: router type %q: want fcm or apns", rt)
		}
		apps[rt] = make(map[string]bool, len(ids))
		for _, id := range ids {
			if id == "" {
				return nil, fmt.Errorf("bridges: %s: empty app id", rt)
			}
			apps[rt][id] = true
		}
	}
	cfg.MaxChannels = bridgeOr(cfg.MaxChannels, DefaultBridgeMaxChannels)
	cfg.MaxToken = bridgeOr(cfg.MaxToken, DefaultBridgeMaxToken)
	cfg.MaxBody = bridgeOr(cfg.MaxBody, DefaultBridgeMaxBody)
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultBridgeRate
	}
	cfg.Burst = bridgeOr(cfg.Burst, DefaultBridgeBurst)
	cfg.Sources = bridgeOr(cfg.Sources, DefaultBridgeSources)
	lru, err := simplelru.NewLRU[netip.Addr, *rate.Limiter](cfg.Sources, nil)
	if err != nil {
		return nil, fmt.Errorf("bridges: %w", err)
	}
	b := &bridgeAPI{cfg: cfg, apps: apps, rates: lru}
	if reg != nil {
		b.met = &bridgeMetrics{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pushlog_ingest_bridge_registration_requests_total",
				Help: "Requests to the mobile registration API (/v1/{router_type}/{app_id}/registration…) by route and HTTP status.",
			}, []string{"route", "status"}),
			refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pushlog_ingest_bridge_refusals_total",
				Help: "Registration API requests and bridged pushes refused by a bound, by reason: body, token, channels, rate, auth, payload.",
			}, []string{"reason"}),
		}
		for _, r := range []string{bridgeReasonBody, bridgeReasonToken, bridgeReasonChannels, bridgeReasonRate, bridgeReasonAuth, bridgeReasonPayload} {
			b.met.refusals.WithLabelValues(r)
		}
		for _, c := range []prometheus.Collector{b.met.requests, b.met.refusals} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("bridges: register metrics: %w", err)
			}
		}
	}
	return b, nil
}

func bridgeOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func (b *bridgeAPI) refused(reason string) {
	if b != nil && b.met != nil {
		b.met.refusals.WithLabelValues(reason).Inc()
	}
}

// bridgeRoutes adds the registration API when it is configured.
func (s *Server) bridgeRoutes(e *echo.Echo) {
	if s.bridges == nil {
		return
	}
	const base = "/v1/:router_type/:app_id/registration"
	e.POST(base, s.bridgeRoute("register", s.handleBridgeRegister))
	e.PUT(base+"/:uaid", s.bridgeRoute("update_token", s.handleBridgeUpdate))
	e.GET(base+"/:uaid", s.bridgeRoute("get_channels", s.handleBridgeChannels))
	e.GET(base+"/:uaid/", s.bridgeRoute("get_channels", s.handleBridgeChannels))
	e.DELETE(base+"/:uaid", s.bridgeRoute("unregister_user", s.handleBridgeUnregister))
	e.POST(base+"/:uaid/subscription", s.bridgeRoute("new_channel", s.handleBridgeSubscribe))
	e.DELETE(base+"/:uaid/subscription/:chid", s.bridgeRoute("unregister_channel", s.handleBridgeUnsubscribe))
}

// bridgeRoute counts the answer and applies the per-source rate first.
func (s *Server) bridgeRoute(route string, h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := s.bridgeRate(c.Request())
		if err == nil {
			err = h(c)
		}
		if m := s.bridges.met; m != nil {
			status := c.Response().Status
			if err != nil {
				status = toAPIError(err).status
			}
			m.requests.WithLabelValues(route, fmt.Sprint(status)).Inc()
		}
		return err
	}
}

func (s *Server) bridgeRate(req *http.Request) error {
	src, ok := sourceAddr(req.RemoteAddr, req.Header.Values("X-Forwarded-For"), s.cfg.Quota.TrustedProxies)
	if !ok {
		return nil
	}
	b := s.bridges
	b.mu.Lock()
	lim, found := b.rates.Get(src)
	if !found {
		lim = rate.NewLimiter(rate.Limit(b.cfg.Rate), b.cfg.Burst)
		b.rates.Add(src, lim)
	}
	allowed := lim.AllowN(s.now(), 1)
	b.mu.Unlock()
	if allowed {
		return nil
	}
	b.refused(bridgeReasonRate)
	e := newError(http.StatusTooManyRequests, errnoTooManyRequests, "Too many registration requests; retry later")
	e.retryAfter = bridgeRateLimitRetryAfterS
	return e
}

// routerAndApp checks router_type (400 errno 108) and app_id (400: errno
// 106 for FCM, none for APNs in autopush; here 106 for both).
func (s *Server) routerAndApp(c echo.Context) (schema.Bridge, string, error) {
	rt := c.Param("router_type")
	br, ok := schema.ParseBridge(rt)
	if !ok {
		return 0, "", badRequest(errnoBridgeInvalidRouter, "Invalid router type")
	}
	app := c.Param("app_id")
	if !s.bridges.apps[rt][app] {
		return 0, "", badRequest(errnoNoSubscription, "Invalid app ID")
	}
	return br, app, nil
}

// registrationBody is autopush's RouterDataInput (register, update) and
// NewChannelData (subscription): every field optional to the decoder.
type registrationBody struct {
	Token     *string `json:"token"`
	ChannelID *string `json:"channelID"`
	Key       *string `json:"key"`
	Aps       *string `json:"aps"`
}

// readRegistration decodes the JSON body within MaxBody (413 errno 104).
// An empty body is allowed where empty is (the subscription route).
func (s *Server) readRegistration(c echo.Context, allowEmpty bool) (registrationBody, error) {
	var body registrationBody
	req := c.Request()
	if req.ContentLength > int64(s.bridges.cfg.MaxBody) {
		s.bridges.refused(bridgeReasonBody)
		return body, errTooLarge
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, int64(s.bridges.cfg.MaxBody)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.bridges.refused(bridgeReasonBody)
			return body, errTooLarge
		}
		return body, badRequest(errnoUnknown, "Could not read the request body")
	}
	if len(strings.TrimSpace(string(raw))) == 0 && allowEmpty {
		return body, nil
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return body, badRequest(errnoUnknown, "Invalid JSON body")
	}
	return body, nil
}

// checkToken validates the device token as autopush does, within MaxToken.
func (s *Server) checkToken(body registrationBody) (string, error) {
	if body.Token == nil {
		return "", badRequest(errnoUnknown, "Missing token")
	}
	t := *body.Token
	if len(t) > s.bridges.cfg.MaxToken {
		s.bridges.refused(bridgeReasonToken)
		return "", badRequest(errnoUnknown, fmt.Sprintf("Invalid token: longer than %d bytes", s.bridges.cfg.MaxToken))
	}
	if !validBridgeToken.MatchString(t) {
		return "", badRequest(errnoUnknown, "Invalid token")
	}
	return t, nil
}

// channelFromBody is the given channelID (any UUID form) or a new one.
func channelFromBody(body registrationBody) (string, error) {
	if body.ChannelID == nil {
		return newChannelID(), nil
	}
	id, err := schema.NormalizeChannelID(*body.ChannelID)
	if err != nil {
		return "", badRequest(errnoUnknown, "Invalid channelID")
	}
	return id, nil
}

// newChannelID is a random (version 4) UUID.
func newChannelID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return schema.FormatChannelID(b[:])
}

// keyHash is the SHA-256 of a v2 application server key: an uncompressed
// P-256 point in base64url (or standard base64), as autopush takes it.
func keyHash(body registrationBody) ([]byte, error) {
	if body.Key == nil || *body.Key == "" {
		return nil, nil
	}
	raw, err := schema.DecodeBase64(*body.Key)
	if err != nil || len(raw) > 256 {
		return nil, badRequest(errnoUnknown, "Invalid key: not base64")
	}
	if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
		return nil, badRequest(errnoUnknown, "Invalid key: not an uncompressed P-256 public key")
	}
	h := sha256.Sum256(raw)
	return h[:], nil
}

// secret is autopush's per-UAID secret: hex HMAC-SHA256 of the UAID's 32
// hex characters under key.
func secret(key []byte, uaid string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(uaid))
	return hex.EncodeToString(m.Sum(nil))
}

// authorize checks "Authorization: Bearer <secret>" (or "WebPush", which
// Android's push component sends) against every key (401 errno 109).
func (s *Server) authorize(req *http.Request, uaid string) error {
	h := req.Header.Get(bridgeSecretHeader)
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || len(h) > 512 {
		s.bridges.refused(bridgeReasonAuth)
		return unauthorized("Missing or malformed Authorization header")
	}
	if sc := strings.ToLower(scheme); sc != "bearer" && sc != "webpush" {
		s.bridges.refused(bridgeReasonAuth)
		return unauthorized("Authorization scheme must be Bearer or WebPush")
	}
	for _, k := range s.bridges.cfg.AuthKeys {
		if hmac.Equal([]byte(secret(k, uaid)), []byte(tok)) {
			return nil
		}
	}
	s.bridges.refused(bridgeReasonAuth)
	return unauthorized("Invalid authorization token")
}

// bridgedUser runs autopush's checks of the routes with a UAID, in its
// order: the UAID (410 errno 103), the secret (401 errno 109), router type
// and app (400), the user (410 errno 103).
func (s *Server) bridgedUser(c echo.Context) (string, BridgeUser, error) {
	uaid, err := schema.NormalizeUAID(c.Param("uaid"))
	if err != nil {
		return "", BridgeUser{}, errUAIDReset
	}
	if err := s.authorize(c.Request(), uaid); err != nil {
		return "", BridgeUser{}, err
	}
	if _, _, err := s.routerAndApp(c); err != nil {
		return "", BridgeUser{}, err
	}
	u, ok := s.bridges.cfg.State.Bridged(uaid)
	if !ok {
		if !s.bridges.cfg.State.Ready() {
			return "", BridgeUser{}, unavailable("Registrations are still loading; retry shortly", 2)
		}
		return "", BridgeUser{}, errUAIDReset
	}
	return uaid, u, nil
}

// writeBridgeEvents appends evs (one UAID: one partition, in order) and
// folds them into the local state once durable.
func (s *Server) writeBridgeEvents(c echo.Context, evs ...*pb.Event) error {
	for _, ev := range evs {
		rec, err := s.cfg.Names.Record(ev)
		if err != nil {
			return fmt.Errorf("encode %s: %w", schema.TypeName(ev), err)
		}
		if aerr := s.produce(c.Request().Context(), rec, nil); aerr != nil {
			return aerr
		}
		s.bridges.cfg.State.Apply(ev)
	}
	return nil
}

func (s *Server) bridgeEndpoint(uaid, ch string, hash []byte, br schema.Bridge) (string, error) {
	ep := schema.Endpoint{UAID: uaid, ChannelID: ch, KeyHash: hash, Bridge: br}
	tok, err := s.cfg.Sealer.SealEndpoint(ep)
	if err != nil {
		return "", fmt.Errorf("seal endpoint: %w", err)
	}
	return fmt.Sprintf("%s/wpush/v%d/%s", s.base, ep.Version(), tok), nil
}

// dashedUAID is the UAID as autopush answers it (a serialised Uuid).
func dashedUAID(uaid string) string { return schema.FormatChannelID(mustHex(uaid)) }

func mustHex(s string) []byte {
	u, _ := schema.ParseUAID(s) // callers pass normalised UAIDs
	return u[:]
}

func bridgeEvent(s *Server, uaid string, br schema.Bridge, app, token string, aps *string) *pb.Event {
	ev := schema.NewEvent(uaid, s.now())
	ev.Body = &pb.Event_BridgeRegistered{BridgeRegistered: bridgeRegistered(br, app, token, aps)}
	return ev
}

func bridgeRegistered(br schema.Bridge, app, token string, aps *string) *pb.BridgeRegistered {
	b := &pb.BridgeRegistered{RouterType: br.String(), AppId: app, Token: token}
	if aps != nil {
		b.Aps = *aps
	}
	return b
}

// BridgeRegistration is the BridgeRegistered body the registration API
// writes for a mobile user agent, checked as POST
// /v1/{router_type}/{app_id}/registration checks it (app id present and at
// most maxApp bytes, device token form and at most maxToken bytes, APNs'
// aps a JSON object). `pushlog import autopush` writes the same for
// autopush's bridge users, so both paths make identical events.
func BridgeRegistration(br schema.Bridge, app, token string, aps *string, maxApp, maxToken int) (*pb.BridgeRegistered, error) {
	switch {
	case app == "" || len(app) > maxApp:
		return nil, fmt.Errorf("app id: empty or longer than %d bytes", maxApp)
	case len(token) > maxToken || !validBridgeToken.MatchString(token):
		return nil, fmt.Errorf("device token: not a token of at most %d bytes", maxToken)
	case !validAps(br, aps):
		return nil, errors.New("aps: not a JSON object")
	}
	return bridgeRegistered(br, app, token, aps), nil
}

func channelEvent(s *Server, uaid, ch string, hash []byte) *pb.Event {
	ev := schema.NewEvent(uaid, s.now())
	ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch, KeyHash: hash}}
	return ev
}

// checkAps validates APNs' optional "aps" (a JSON object as a string).
func checkAps(br schema.Bridge, aps *string) error {
	if !validAps(br, aps) {
		return badRequest(errnoUnknown, "Invalid aps data")
	}
	return nil
}

func validAps(br schema.Bridge, aps *string) bool {
	if aps == nil || br != schema.BridgeAPNs {
		return true
	}
	var v map[string]any
	return json.Unmarshal([]byte(*aps), &v) == nil
}

// handleBridgeRegister serves POST /v1/{router_type}/{app_id}/registration:
// a new UAID with one channel; answers uaid, channelID, endpoint, secret.
func (s *Server) handleBridgeRegister(c echo.Context) error {
	br, app, err := s.routerAndApp(c)
	if err != nil {
		return err
	}
	body, err := s.readRegistration(c, false)
	if err != nil {
		return err
	}
	token, err := s.checkToken(body)
	if err != nil {
		return err
	}
	if err := checkAps(br, body.Aps); err != nil {
		return err
	}
	ch, err := channelFromBody(body)
	if err != nil {
		return err
	}
	hash, err := keyHash(body)
	if err != nil {
		return err
	}
	uaid := schema.NewUAID()
	endpoint, err := s.bridgeEndpoint(uaid, ch, hash, br)
	if err != nil {
		return err
	}
	if err := s.writeBridgeEvents(c, bridgeEvent(s, uaid, br, app, token, body.Aps), channelEvent(s, uaid, ch, hash)); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{
		"uaid":      dashedUAID(uaid),
		"channelID": ch,
		"endpoint":  endpoint,
		"secret":    secret(s.bridges.cfg.AuthKeys[0], uaid),
	})
}

// handleBridgeUpdate serves PUT …/registration/{uaid}: a new device token
// (and possibly another router type or app, as autopush allows).
func (s *Server) handleBridgeUpdate(c echo.Context) error {
	uaid, _, err := s.bridgedUser(c)
	if err != nil {
		return err
	}
	br, app, _ := s.routerAndApp(c) // checked by bridgedUser
	body, err := s.readRegistration(c, false)
	if err != nil {
		return err
	}
	token, err := s.checkToken(body)
	if err != nil {
		return err
	}
	if err := checkAps(br, body.Aps); err != nil {
		return err
	}
	if err := s.writeBridgeEvents(c, bridgeEvent(s, uaid, br, app, token, body.Aps)); err != nil {
		return err
	}
	return c.NoContent(http.StatusOK)
}

// handleBridgeChannels serves GET …/registration/{uaid}/: its channels.
func (s *Server) handleBridgeChannels(c echo.Context) error {
	uaid, u, err := s.bridgedUser(c)
	if err != nil {
		return err
	}
	if age := s.now().Sub(time.UnixMilli(u.RegisteredMs)); age > BridgeRefresh {
		br, _ := schema.ParseBridge(u.RouterType)
		aps := &u.Aps
		if err := s.writeBridgeEvents(c, bridgeEvent(s, uaid, br, u.AppID, u.Token, aps)); err != nil {
			return err
		}
	}
	chans := slices.Clone(u.Channels)
	if chans == nil {
		chans = []string{}
	}
	slices.Sort(chans)
	return c.JSON(http.StatusOK, map[string]any{"uaid": dashedUAID(uaid), "channelIDs": chans})
}

// handleBridgeSubscribe serves POST …/registration/{uaid}/subscription:
// another channel, v2 when the body has a key.
func (s *Server) handleBridgeSubscribe(c echo.Context) error {
	uaid, u0, err := s.bridgedUser(c)
	if err != nil {
		return err
	}
	body, err := s.readRegistration(c, true)
	if err != nil {
		return err
	}
	ch, err := channelFromBody(body)
	if err != nil {
		return err
	}
	hash, err := keyHash(body)
	if err != nil {
		return err
	}
	stripe := &s.bridges.subscribe[mustHex(uaid)[0]]
	stripe.Lock()
	defer stripe.Unlock()
	if u, ok := s.bridges.cfg.State.Bridged(uaid); ok {
		u0 = u // what the requests before this one wrote
	}
	if !slices.Contains(u0.Channels, ch) && len(u0.Channels) >= s.bridges.cfg.MaxChannels {
		s.bridges.refused(bridgeReasonChannels)
		return newError(http.StatusRequestEntityTooLarge, errnoUnknown,
			fmt.Sprintf("Too many channels (at most %d); unregister some first", s.bridges.cfg.MaxChannels))
	}
	br, _ := schema.ParseBridge(u0.RouterType)
	endpoint, err := s.bridgeEndpoint(uaid, ch, hash, br)
	if err != nil {
		return err
	}
	if err := s.writeBridgeEvents(c, channelEvent(s, uaid, ch, hash)); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"channelID": ch, "endpoint": endpoint})
}

// handleBridgeUnregister serves DELETE …/registration/{uaid}: every
// channel is gone (a UserReset, so its endpoints answer 410 errno 103).
func (s *Server) handleBridgeUnregister(c echo.Context) error {
	uaid, u, err := s.bridgedUser(c)
	if err != nil {
		return err
	}
	ids := make([][]byte, 0, len(u.Channels))
	for _, ch := range u.Channels {
		if b, err := schema.ParseChannelID(ch); err == nil {
			ids = append(ids, b[:])
		}
	}
	ev := schema.NewEvent(uaid, s.now())
	ev.Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: bridgeUnregisterReason, ChannelIds: ids}}
	if err := s.writeBridgeEvents(c, ev); err != nil {
		return err
	}
	return c.NoContent(http.StatusOK)
}

// handleBridgeUnsubscribe serves DELETE …/subscription/{chid}: 410 errno
// 106 for a channel the UAID does not have, as autopush answers.
func (s *Server) handleBridgeUnsubscribe(c echo.Context) error {
	uaid, u, err := s.bridgedUser(c)
	if err != nil {
		return err
	}
	ch, err := schema.NormalizeChannelID(c.Param("chid"))
	if err != nil || !slices.Contains(u.Channels, ch) {
		return errNoSubscription
	}
	ev := schema.NewEvent(uaid, s.now())
	ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: ch}}
	if err := s.writeBridgeEvents(c, ev); err != nil {
		return err
	}
	return c.NoContent(http.StatusOK)
}

// bridgeOverhead is what a bridge's message carries beside the body and
// crypto headers, rounded up: FCM's data map (chid, the keys, JSON
// quoting); APNs' payload (the aps alert Firefox for iOS expects, ver = the
// sealed message id, the keys). Ingest cannot ask the senders
// (connector/bridge: another role), so it errs on the side of refusing a
// few bytes early rather than accepting what the bridge would refuse.
var bridgeOverhead = map[schema.Bridge]int{schema.BridgeFCM: 128, schema.BridgeAPNs: 400}

// checkBridgePayload refuses a push to a bridged endpoint the bridge could
// not carry (413 errno 104, autopush's TooMuchData), before it is written.
func (s *Server) checkBridgePayload(ep schema.Endpoint, msg *pb.MessageAccepted) *apiError {
	bridge := ep.Bridge
	if bridge == schema.BridgeNone && s.bridges != nil && s.bridges.cfg.State != nil {
		// An endpoint autopush minted carries no bridge mark: a UAID imported
		// from autopush's bridge users is known from the registrations.
		if uaid, err := schema.NormalizeUAID(ep.UAID); err == nil {
			if u, ok := s.bridges.cfg.State.Bridged(uaid); ok {
				bridge, _ = schema.ParseBridge(u.RouterType)
			}
		}
	}
	if bridge == schema.BridgeNone {
		return nil
	}
	limit := DefaultBridgePayloadLimit
	if s.bridges != nil {
		if l, ok := s.bridges.cfg.PayloadLimit[bridge.String()]; ok && l > 0 {
			limit = l
		}
	}
	n := (len(msg.GetPayload())*4+2)/3 + len(msg.GetEncryption()) + len(msg.GetCryptoKey()) + bridgeOverhead[bridge]
	if n > limit {
		s.bridges.refused(bridgeReasonPayload)
		return errTooLarge
	}
	return nil
}
