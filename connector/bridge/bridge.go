// Package bridge is what the connector's owner hands a message to when its
// UAID is registered through a mobile bridge (FCM for Firefox for Android,
// APNs for Firefox for iOS) instead of a WebSocket. One Sender per
// configured app; each answers with a Result the owner turns into events.
//
// The clients live in bridge/fcm and bridge/apns, each with a strict local
// server (fcmtest, apnstest) for tests.
package bridge

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pushlog/pushlog/schema"
)

// Message is one push to hand to a bridge.
type Message struct {
	UAID      schema.UAID
	ChannelID string // the channel id as the user agent knows it (dashed UUID)
	Version   string // the message id (APNs payload "ver")
	Data      []byte // the encrypted body as the sender posted it; nil for a push without data
	// Encoding is the Content-Encoding (aes128gcm, aesgcm); Encryption and
	// CryptoKey are the legacy aesgcm headers, passed on as they came.
	Encoding   string
	Encryption string
	CryptoKey  string
	// TTL is what is LEFT of the push's TTL at send time, so a retried
	// message never lives longer at the bridge than the sender asked.
	TTL     time.Duration
	Urgency string // RFC 8030: very-low, low, normal, high ("" = normal)
	Topic   string // RFC 8030 Topic (used as a collapse key where the service has one)
	// Aps is the APNs aps dictionary (a JSON object) the device gave at
	// registration, sent instead of the default alert as autopush does;
	// "" for the default and for FCM.
	Aps string
}

// Outcome is how a send settled.
type Outcome int

const (
	// Delivered: the service accepted the message for the device.
	Delivered Outcome = iota
	// Gone: the device token is invalid or unregistered; the UAID's bridge
	// registration must be dropped (its endpoints answer 410).
	Gone
	// Retry: the service is overloaded or unreachable; try again after
	// Result.RetryAfter (0: the caller's own back-off) while the TTL lasts.
	Retry
	// Failed: a permanent refusal of this message itself (too big,
	// malformed); drop it with Result.Reason. Refused credentials or app
	// configuration are not the message's fault: they are a Retry with
	// Result.Unavailable, so messages wait while the operator fixes them.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Gone:
		return "gone"
	case Retry:
		return "retry"
	case Failed:
		return "failed"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is a send's answer.
type Result struct {
	Outcome    Outcome
	RetryAfter time.Duration // Retry only: the service's Retry-After, 0 if none
	Reason     string        // short machine-friendly reason (metric label material: bounded set plus the service's own codes)
	Status     int           // the service's HTTP status, 0 when no answer came
	// Unavailable (Retry only): the service refused the app's credentials
	// or configuration (bad key, revoked account, wrong project). The
	// owner counts it as a breaker failure like no answer or a 5xx.
	Unavailable bool
}

// Sender sends to one app of one service. token is the device's
// registration token for that service. Implementations are safe for
// concurrent use and never block past ctx.
type Sender interface {
	Send(ctx context.Context, token string, m Message) Result
	// Check reports ErrTooBig when m cannot be sent whatever the device, so
	// ingest can refuse it (413, errno 104) instead of it failing at send.
	Check(m Message) error
	// MaxPayload is the service's limit in bytes on what Check measures.
	MaxPayload() int
}

// TooBigError is returned by Sender.Check.
type TooBigError struct{ Size, Max int }

func (e *TooBigError) Error() string {
	return "bridge payload of " + strconv.Itoa(e.Size) + " bytes exceeds the service's " + strconv.Itoa(e.Max)
}

// MaxRetryAfter bounds a service's Retry-After: a hostile or broken answer
// must not park a message for days.
const MaxRetryAfter = time.Hour

// ParseRetryAfter reads an HTTP Retry-After value (delay-seconds or an
// HTTP-date) relative to now, bounded to [0, MaxRetryAfter]. ok is false
// when the header is absent or unreadable.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), MaxRetryAfter), true
}

// High maps RFC 8030 Urgency to the services' two levels: only "high"
// asks the phone to wake now.
func High(urgency string) bool { return strings.EqualFold(strings.TrimSpace(urgency), "high") }

// LoadRootCAs is the system's roots plus the PEM certificates in file ("":
// the system's only), for bridges behind a private CA or local test servers.
func LoadRootCAs(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if file == "" {
		return pool, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("bridge CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("bridge CA file %s: no PEM certificate", file)
	}
	return pool, nil
}

// Unreachable is the Result of a send that got no answer: Retry, reason
// "canceled" when ctx ended (the caller is shutting down or gave up, the
// service is not to blame) else "unreachable".
func Unreachable(ctx context.Context) Result {
	if ctx.Err() != nil {
		return Result{Outcome: Retry, Reason: "canceled"}
	}
	return Result{Outcome: Retry, Reason: "unreachable"}
}
