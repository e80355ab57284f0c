package main

// Mobile bridges (issue 14): the flags of the registration API (ingest),
// the bridge table it reads, and the FCM/APNs senders the owner delivers
// through.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/bridge"
	"github.com/pushlog/pushlog/connector/bridge/apns"
	"github.com/pushlog/pushlog/connector/bridge/fcm"
	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/ingest"
	"github.com/pushlog/pushlog/projector"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// bridgeFlags are embedded in serveConfig.
type bridgeFlags struct {
	FCMApps     string `name:"fcm-apps" env:"PUSHLOG_FCM_APPS" help:"Firebase (FCM HTTP v1) apps of the mobile registration API, as JSON or @file: {\"<app_id>\": {\"credentials\": \"/path/service-account.json\", \"project\": \"(optional: the key's project_id)\"}}. Empty: no FCM bridge."`
	FCMBaseURL  string `name:"fcm-base-url" default:"https://fcm.googleapis.com" env:"PUSHLOG_FCM_BASE_URL" help:"Base URL of the FCM API (tests and air-gapped relays point it elsewhere)."`
	FCMTokenURL string `name:"fcm-token-url" env:"PUSHLOG_FCM_TOKEN_URL" help:"OAuth 2.0 token endpoint for FCM's service-account flow. Empty: the key's token_uri (Google's)."`
	APNsApps    string `name:"apns-apps" env:"PUSHLOG_APNS_APPS" help:"APNs apps (release channels) of the mobile registration API, as JSON or @file: {\"<app_id>\": {\"key\": \"/path/AuthKey.p8\", \"key_id\": \"…\", \"team_id\": \"…\", \"topic\": \"org.mozilla.ios.Firefox\", \"sandbox\": false}}. Empty: no APNs bridge."`
	APNsBaseURL string `name:"apns-base-url" env:"PUSHLOG_APNS_BASE_URL" help:"Base URL of APNs for every app. Empty: production, or the sandbox for apps with \"sandbox\": true."`
	BridgeCA    string `name:"bridge-ca-file" env:"PUSHLOG_BRIDGE_CA_FILE" help:"PEM certificates the bridges' services may also chain to (a private relay, local test servers). Empty: the system's roots."`
	// AuthKeys as autopush's AUTH_KEYS: strings, used as bytes.
	BridgeAuthKeys        string        `name:"bridge-auth-keys" env:"PUSHLOG_BRIDGE_AUTH_KEYS" help:"Keys of the per-UAID secrets of the registration API (HMAC-SHA256; autopush's AUTH_KEYS, comma-separated or [\"k1\",\"k2\"]): the first signs, all verify. Required with --fcm-apps or --apns-apps."`
	BridgeRegRate         float64       `name:"bridge-registration-rate" default:"1" env:"PUSHLOG_BRIDGE_REGISTRATION_RATE" help:"Registration API requests per second per source address (per ingest node); past it 429 errno 129."`
	BridgeRegBurst        int           `name:"bridge-registration-burst" default:"20" env:"PUSHLOG_BRIDGE_REGISTRATION_BURST" help:"Registration API requests a source address may make at once before --bridge-registration-rate applies."`
	BridgeTableEntries    int           `name:"bridge-table-entries" default:"1000000" env:"PUSHLOG_BRIDGE_TABLE_ENTRIES" help:"Bridged UAIDs an ingest node keeps for the registration API (about 400 bytes each); past it new ones are not tracked (counted)."`
	BridgeInFlight        int           `name:"bridge-in-flight" default:"512" env:"PUSHLOG_BRIDGE_IN_FLIGHT" help:"Concurrent sends to FCM/APNs per connector node."`
	BridgeBreakerFailures int           `name:"bridge-breaker-failures" default:"5" env:"PUSHLOG_BRIDGE_BREAKER_FAILURES" help:"Consecutive failed sends (no answer, 5xx) that open an app's bridge circuit breaker."`
	BridgeBreakerOpen     time.Duration `name:"bridge-breaker-open" default:"30s" env:"PUSHLOG_BRIDGE_BREAKER_OPEN" help:"How long an app's open breaker refuses sends before one probe; messages wait meanwhile (until their TTL)."`
	BridgeRetryMax        time.Duration `name:"bridge-retry-max" default:"5m" env:"PUSHLOG_BRIDGE_RETRY_MAX" help:"Longest back-off between attempts of one message when the service names no Retry-After."`
}

type fcmApp struct {
	Credentials string `json:"credentials"`
	Project     string `json:"project"`
}

type apnsApp struct {
	Key     string `json:"key"`
	KeyID   string `json:"key_id"`
	TeamID  string `json:"team_id"`
	Topic   string `json:"topic"`
	Sandbox bool   `json:"sandbox"`
}

func (b bridgeFlags) enabled() bool { return b.FCMApps != "" || b.APNsApps != "" }

// readJSONFlag decodes a flag given inline or as @file.
func readJSONFlag(name, v string, into any) error {
	raw := []byte(v)
	if path, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		raw = b
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// apps parses --fcm-apps and --apns-apps.
func (b bridgeFlags) apps() (map[string]fcmApp, map[string]apnsApp, error) {
	var f map[string]fcmApp
	var a map[string]apnsApp
	if b.FCMApps != "" {
		if err := readJSONFlag("--fcm-apps", b.FCMApps, &f); err != nil {
			return nil, nil, err
		}
	}
	if b.APNsApps != "" {
		if err := readJSONFlag("--apns-apps", b.APNsApps, &a); err != nil {
			return nil, nil, err
		}
	}
	for id := range f {
		if id == "" || strings.ContainsAny(id, "/ ") {
			return nil, nil, fmt.Errorf("--fcm-apps: bad app id %q", id)
		}
	}
	for id := range a {
		if id == "" || strings.ContainsAny(id, "/ ") {
			return nil, nil, fmt.Errorf("--apns-apps: bad app id %q", id)
		}
	}
	return f, a, nil
}

// authKeys parses --bridge-auth-keys (a list or comma-separated).
func (b bridgeFlags) authKeys() ([][]byte, error) {
	v := strings.TrimSpace(b.BridgeAuthKeys)
	var list []string
	if strings.HasPrefix(v, "[") {
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, fmt.Errorf("--bridge-auth-keys: %w", err)
		}
	} else {
		list = strings.Split(v, ",")
	}
	var out [][]byte
	for _, k := range list {
		if k = strings.TrimSpace(k); k != "" {
			if len(k) < 16 {
				return nil, errors.New("--bridge-auth-keys: every key needs at least 16 characters")
			}
			out = append(out, []byte(k))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--bridge-auth-keys is required with --fcm-apps or --apns-apps")
	}
	return out, nil
}

// ingestBridges builds ingest's registration API config and the bridge
// table it reads (nil, nil when no app is configured).
func ingestBridges(b bridgeFlags, maxChannels int, names schema.Names, clientOpts []kgo.Opt, met *serveMetrics) (ingest.BridgeConfig, *projector.BridgeTable, error) {
	if !b.enabled() {
		return ingest.BridgeConfig{}, nil, nil
	}
	f, a, err := b.apps()
	if err != nil {
		return ingest.BridgeConfig{}, nil, err
	}
	keys, err := b.authKeys()
	if err != nil {
		return ingest.BridgeConfig{}, nil, err
	}
	tbl, err := projector.NewBridgeTable(projector.BridgeTableConfig{Names: names, ClientOpts: clientOpts, Metrics: met.reg, MaxEntries: b.BridgeTableEntries})
	if err != nil {
		return ingest.BridgeConfig{}, nil, err
	}
	apps := map[string][]string{}
	for id := range f {
		apps["fcm"] = append(apps["fcm"], id)
	}
	for id := range a {
		apps["apns"] = append(apps["apns"], id)
	}
	return ingest.BridgeConfig{
		Apps: apps, AuthKeys: keys, State: bridgeState{tbl}, MaxChannels: maxChannels,
		Rate: b.BridgeRegRate, Burst: b.BridgeRegBurst,
	}, tbl, nil
}

// bridgeState adapts the projector's table to ingest's interface.
type bridgeState struct{ t *projector.BridgeTable }

func (s bridgeState) Bridged(uaid string) (ingest.BridgeUser, bool) {
	r, ok := s.t.Lookup(uaid)
	return ingest.BridgeUser{RouterType: r.RouterType, AppID: r.AppID, Channels: r.Channels,
		Token: r.Token, Aps: r.Aps, RegisteredMs: r.RegisteredMs}, ok
}

func (s bridgeState) Apply(ev *pb.Event) { s.t.Apply(ev) }

func (s bridgeState) Ready() bool { return s.t.Ready() }

// ownerBridges builds the senders of every configured app.
func ownerBridges(b bridgeFlags) (owner.BridgeConfig, error) {
	if !b.enabled() {
		return owner.BridgeConfig{}, nil
	}
	f, a, err := b.apps()
	if err != nil {
		return owner.BridgeConfig{}, err
	}
	roots, err := bridge.LoadRootCAs(b.BridgeCA)
	if err != nil {
		return owner.BridgeConfig{}, err
	}
	senders := map[string]bridge.Sender{}
	for _, id := range slices.Sorted(maps.Keys(f)) {
		app := f[id]
		creds, err := os.ReadFile(app.Credentials)
		if err != nil {
			return owner.BridgeConfig{}, fmt.Errorf("--fcm-apps %s: %w", id, err)
		}
		c, err := fcm.New(fcm.Config{Credentials: creds, Project: app.Project, BaseURL: b.FCMBaseURL, TokenURL: b.FCMTokenURL, RootCAs: roots})
		if err != nil {
			return owner.BridgeConfig{}, fmt.Errorf("--fcm-apps %s: %w", id, err)
		}
		senders["fcm/"+id] = c
	}
	for _, id := range slices.Sorted(maps.Keys(a)) {
		app := a[id]
		key, err := os.ReadFile(app.Key)
		if err != nil {
			return owner.BridgeConfig{}, fmt.Errorf("--apns-apps %s: %w", id, err)
		}
		base := b.APNsBaseURL
		if base == "" && app.Sandbox {
			base = apns.SandboxBaseURL
		}
		c, err := apns.New(apns.Config{Key: key, KeyID: app.KeyID, TeamID: app.TeamID, Topic: app.Topic, BaseURL: base, RootCAs: roots})
		if err != nil {
			return owner.BridgeConfig{}, fmt.Errorf("--apns-apps %s: %w", id, err)
		}
		senders["apns/"+id] = c
	}
	return owner.BridgeConfig{
		Senders: senders, InFlight: b.BridgeInFlight, RetryMax: b.BridgeRetryMax,
		BreakerFailures: uint32(max(b.BridgeBreakerFailures, 0)), BreakerOpen: b.BridgeBreakerOpen,
	}, nil
}
