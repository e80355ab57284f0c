package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// DefaultSubject is the VAPID sub claim when none is given.
const DefaultSubject = "mailto:pushlog@example.com"

// sendTimeout bounds one push request when ctx has no deadline.
const sendTimeout = 30 * time.Second

// SendOptions configure Send.
type SendOptions struct {
	// Subscription is the subscription JSON
	// {"endpoint":…,"keys":{"p256dh":…,"auth":…}} or "@path" of a file
	// holding it (what listen writes).
	Subscription string
	Message      []byte // plaintext; empty sends a push without a body
	// VAPIDPrivateKey is a base64url private key or "@keyfile" (from Keys,
	// or PEM); empty generates a fresh pair for this send, which a
	// key-bound (v2) subscription will refuse.
	VAPIDPrivateKey string
	Subject         string // VAPID sub (mailto: or https: URI); default DefaultSubject
	// TTL, Topic and Urgency are sent as given (Topic and Urgency only when
	// set): the push service is the one to judge them.
	TTL      int
	Topic    string
	Urgency  string
	Encoding string // webpush.AES128GCM (default) or webpush.AESGCM
	CAFile   string // PEM CA to trust besides the system roots (self-signed HTTPS ingest)
	Insecure bool   // skip TLS verification
	Out      io.Writer
}

// Send encrypts one message for a subscription, signs VAPID (aud = the
// endpoint's origin, exp = now+12h) and POSTs it to the endpoint. It prints
// and returns the status and Location; a non-2xx answer is an error that
// carries the response body (autopush-style JSON).
func Send(ctx context.Context, opts SendOptions) (status int, location string, err error) {
	out := opts.Out
	if out == nil {
		out = os.Stdout
	}
	req, generated, err := buildPush(ctx, opts)
	if err != nil {
		return 0, "", err
	}
	if generated != "" {
		fmt.Fprintf(out, "vapid public key: %s (generated for this send)\n", generated)
		if strings.Contains(req.URL.Path, "/wpush/v2/") {
			fmt.Fprintln(out, "note: this endpoint is bound to an application server key; sign with that key's private half or the push is refused")
		}
	}
	client, err := httpClient(opts.CAFile, opts.Insecure)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("push to %s: %w", req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	location = resp.Header.Get("Location")
	fmt.Fprintf(out, "status: %s\n", resp.Status)
	if location != "" {
		fmt.Fprintf(out, "location: %s\n", location)
	}
	if ttl := resp.Header.Get("TTL"); ttl != "" {
		fmt.Fprintf(out, "ttl: %s\n", ttl)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, location, fmt.Errorf("push service answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return resp.StatusCode, location, nil
}

// buildPush makes the POST request; generated is the public key of a
// VAPID pair made for this send ("" when one was given).
func buildPush(ctx context.Context, opts SendOptions) (req *http.Request, generated string, err error) {
	if opts.Subscription == "" {
		return nil, "", errors.New("a subscription is required")
	}
	raw, err := readArg(opts.Subscription)
	if err != nil {
		return nil, "", fmt.Errorf("subscription: %w", err)
	}
	sub, err := webpush.ParseSubscription(raw)
	if err != nil {
		return nil, "", err
	}
	encoding := strings.ToLower(opts.Encoding)
	if encoding == "" {
		encoding = webpush.AES128GCM
	}
	if encoding != webpush.AES128GCM && encoding != webpush.AESGCM {
		return nil, "", fmt.Errorf("encoding %q: want %s or %s", opts.Encoding, webpush.AES128GCM, webpush.AESGCM)
	}
	key, fresh, err := loadVAPIDKey(opts.VAPIDPrivateKey)
	if err != nil {
		return nil, "", err
	}
	if fresh {
		generated = key.PublicKeyString()
	}
	subject := opts.Subject
	switch {
	case subject == "":
		subject = DefaultSubject
	case !strings.Contains(subject, ":") && strings.Contains(subject, "@"):
		subject = "mailto:" + subject // a bare address, as webpush-go accepts
	}
	token, err := key.Token(sub.Endpoint, subject, time.Now().Add(webpush.DefaultVAPIDExpiry))
	if err != nil {
		return nil, "", err
	}

	var msg *webpush.Message
	if len(opts.Message) > 0 {
		if msg, err = webpush.Encrypt(sub, opts.Message, webpush.EncryptOptions{Encoding: encoding}); err != nil {
			return nil, "", fmt.Errorf("encrypt: %w", err)
		}
	}
	var body io.Reader = http.NoBody
	if msg != nil {
		body = bytes.NewReader(msg.Body)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, sub.Endpoint, body)
	if err != nil {
		return nil, "", fmt.Errorf("push request: %w", err)
	}
	h := req.Header
	h.Set("TTL", strconv.Itoa(opts.TTL))
	if opts.Topic != "" {
		h.Set("Topic", opts.Topic)
	}
	if opts.Urgency != "" {
		h.Set("Urgency", opts.Urgency)
	}
	if msg != nil {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Encoding", msg.Encoding)
	}
	if encoding == webpush.AES128GCM {
		h.Set("Authorization", "vapid t="+token+", k="+key.PublicKeyString())
		return req, generated, nil
	}
	// aesgcm senders use the older VAPID form: the key rides in Crypto-Key
	// beside the message's dh.
	cryptoKey := "p256ecdsa=" + key.PublicKeyString()
	if msg != nil {
		h.Set("Encryption", msg.Encryption)
		cryptoKey = msg.CryptoKey + ";" + cryptoKey
	}
	h.Set("Crypto-Key", cryptoKey)
	h.Set("Authorization", "WebPush "+token)
	return req, generated, nil
}

// httpClient trusts the system roots plus caFile, or nothing when insecure.
func httpClient(caFile string, insecure bool) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	cfg, err := tlsConfig(caFile, insecure)
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: sendTimeout}, nil
}

func tlsConfig(caFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile == "" {
		return cfg, nil
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("ca file %s: no PEM certificates", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
