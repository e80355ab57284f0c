package ingest

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/fernet/fernet-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushlog/pushlog/schema"
)

// Endpoints minted by Mozilla autopush keep working after a migration:
// autopush's endpoint token is the unpadded base64url of a Fernet token
// (https://github.com/fernet/spec) over UAID bytes (16) + channel id bytes
// (16), plus SHA-256 of the application server key (32) for a key-bound
// "v2" endpoint, under /wpush/v1/, /wpush/v2/ (and the legacy unversioned
// /wpush/, meaning v1). The keys are autopush's CRYPTO_KEY list: Fernet
// keys, the first minting, all opening. Fernet tokens carry no expiry that
// autopush checks, so neither do we.

// Exact binary sizes of autopush tokens: version (1) + timestamp (8) + IV
// (16) + AES-CBC ciphertext of the padded plaintext + HMAC-SHA256 (32).
// Anything else is refused before any cryptography.
const (
	autopushV1Raw = 1 + 8 + 16 + 48 + 32 // 32-byte plaintext pads to 48
	autopushV2Raw = 1 + 8 + 16 + 80 + 32 // 64-byte plaintext pads to 80
	// MaxAutopushToken bounds an autopush token as it appears in the URL
	// (a v2 token is 183 characters unpadded, 184 padded).
	MaxAutopushToken = 192
)

// autopushLegacyVersion is handlePush's version for autopush's unversioned
// /wpush/{token} route: autopush v1 tokens only.
const autopushLegacyVersion = 0

var errAutopushToken = errors.New("invalid autopush token")

// AutopushKeys opens endpoint tokens minted by autopush. A nil
// *AutopushKeys opens nothing.
type AutopushKeys struct {
	keys []*fernet.Key
}

// ParseAutopushKeys parses autopush's CRYPTO_KEY setting: Fernet keys
// (base64url of 32 bytes), comma-separated, optionally in autopush's own
// list syntax ["key1", "key2"] (brackets, quotes and spaces are ignored).
func ParseAutopushKeys(list string) (*AutopushKeys, error) {
	clean := strings.NewReplacer("[", "", "]", "", `"`, "", "'", "", " ", "").Replace(list)
	var out AutopushKeys
	for i, part := range strings.Split(clean, ",") {
		if part == "" {
			continue
		}
		k, err := decodeFernetKey(part)
		if err != nil {
			return nil, fmt.Errorf("autopush key %d: %w", i, err)
		}
		out.keys = append(out.keys, k)
	}
	if len(out.keys) == 0 {
		return nil, errors.New("no autopush keys given")
	}
	return &out, nil
}

// decodeFernetKey takes a key as autopush and Python's cryptography write
// it (base64url, padded), tolerating missing padding and the standard
// alphabet.
func decodeFernetKey(s string) (*fernet.Key, error) {
	raw, err := schema.DecodeBase64(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("%d bytes, want 32 (a Fernet key)", len(raw))
	}
	var k fernet.Key
	copy(k[:], raw)
	return &k, nil
}

// Open decodes an autopush endpoint token of the given path version (1 or
// 2; autopushLegacyVersion for /wpush/{token}) into the pushlog endpoint it
// addresses. The key hash of a v2 token is checked against the VAPID key
// by authenticate, as for pushlog's own v2 endpoints.
func (a *AutopushKeys) Open(version int, token string) (schema.Endpoint, error) {
	if a == nil || len(token) > MaxAutopushToken {
		return schema.Endpoint{}, errAutopushToken
	}
	want := autopushV1Raw
	if version == 2 {
		want = autopushV2Raw
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(token, "="))
	if err != nil || len(raw) != want {
		return schema.Endpoint{}, errAutopushToken
	}
	// fernet-go takes the padded base64url form; a negative TTL skips its
	// age check (autopush checks none).
	plain := fernet.VerifyAndDecrypt([]byte(base64.URLEncoding.EncodeToString(raw)), -1, a.keys)
	switch {
	case version == 2 && len(plain) == 64:
	case version != 2 && len(plain) == 32:
	default:
		return schema.Endpoint{}, errAutopushToken
	}
	ep := schema.Endpoint{UAID: schema.UAID(plain[:16]).String(), ChannelID: schema.FormatChannelID(plain[16:32])}
	if version == 2 {
		ep.KeyHash = append([]byte(nil), plain[32:32+sha256.Size]...)
	}
	return ep, nil
}

// Mint makes an autopush endpoint token (as autopush's make_endpoint
// does), for tests and tools: keyHash empty for v1, SHA-256 of the
// application server key for v2.
func (a *AutopushKeys) Mint(uaid schema.UAID, channel [16]byte, keyHash []byte) (string, error) {
	plain := append(append(append([]byte(nil), uaid[:]...), channel[:]...), keyHash...)
	tok, err := fernet.EncryptAndSign(plain, a.keys[0])
	if err != nil {
		return "", fmt.Errorf("fernet: %w", err)
	}
	return strings.TrimRight(string(tok), "="), nil
}

// autopushCounts counts pushes by the kind of token they came with, for
// pushlog_ingest_autopush_tokens_total.
type autopushCounts struct {
	v1, v2, refused atomic.Int64
}

func (c *autopushCounts) collectors() []prometheus.Collector {
	desc := prometheus.NewDesc("pushlog_ingest_autopush_tokens_total",
		"Pushes to endpoints minted by autopush (--autopush-crypto-keys), by version; result=refused counts tokens that matched neither pushlog's nor autopush's keys while autopush keys are configured.",
		[]string{"version", "result"}, nil)
	return []prometheus.Collector{&autopushCollector{desc: desc, c: c}}
}

type autopushCollector struct {
	desc *prometheus.Desc
	c    *autopushCounts
}

func (a *autopushCollector) Describe(ch chan<- *prometheus.Desc) { ch <- a.desc }

func (a *autopushCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(a.desc, prometheus.CounterValue, float64(a.c.v1.Load()), "1", "opened")
	ch <- prometheus.MustNewConstMetric(a.desc, prometheus.CounterValue, float64(a.c.v2.Load()), "2", "opened")
	ch <- prometheus.MustNewConstMetric(a.desc, prometheus.CounterValue, float64(a.c.refused.Load()), "", "refused")
}

// openEndpoint opens a push's endpoint token: pushlog's sealed tokens
// first, then, when configured, autopush's. version is the path's (1, 2,
// or autopushLegacyVersion). Every failure is the same 404 errno 102.
func (s *Server) openEndpoint(version int, token string) (schema.Endpoint, error) {
	if version != autopushLegacyVersion {
		ep, err := s.cfg.Sealer.OpenEndpoint(token)
		if err == nil && ep.Version() == version {
			return ep, nil
		}
	}
	if s.cfg.AutopushKeys == nil {
		return schema.Endpoint{}, errInvalidToken
	}
	ep, err := s.cfg.AutopushKeys.Open(version, token)
	if err != nil {
		s.autopush.refused.Add(1)
		return schema.Endpoint{}, errInvalidToken
	}
	if version == 2 {
		s.autopush.v2.Add(1)
	} else {
		s.autopush.v1.Add(1)
	}
	return ep, nil
}
