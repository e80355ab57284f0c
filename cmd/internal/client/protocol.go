package client

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// Messages of the WebSocket push protocol (PROTOCOL.md §3), client side.

const subprotocol = "push-notification"

// Ack codes.
const (
	ackDelivered       = 100
	ackDecryptionError = 101
	ackNotDelivered    = 102
)

type helloRequest struct {
	MessageType string            `json:"messageType"`
	UseWebPush  bool              `json:"use_webpush"`
	Broadcasts  map[string]string `json:"broadcasts"`
	UAID        string            `json:"uaid,omitempty"`
}

type helloReply struct {
	MessageType string `json:"messageType"`
	UAID        string `json:"uaid"`
	Status      int    `json:"status"`
}

type registerRequest struct {
	MessageType string `json:"messageType"`
	ChannelID   string `json:"channelID"`
	Key         string `json:"key,omitempty"`
}

type registerReply struct {
	MessageType  string `json:"messageType"`
	ChannelID    string `json:"channelID"`
	Status       int    `json:"status"`
	PushEndpoint string `json:"pushEndpoint"`
}

type unregisterRequest struct {
	MessageType string `json:"messageType"`
	ChannelID   string `json:"channelID"`
	Code        int    `json:"code"`
}

type ackUpdate struct {
	ChannelID string `json:"channelID"`
	Version   string `json:"version"`
	Code      int    `json:"code"`
}

type ackRequest struct {
	MessageType string      `json:"messageType"`
	Updates     []ackUpdate `json:"updates"`
}

type notification struct {
	ChannelID string          `json:"channelID"`
	Version   string          `json:"version"`
	Data      *string         `json:"data"`
	Headers   json.RawMessage `json:"headers"`
}

// received is one notification as listen prints it (a JSON line with --json).
type received struct {
	ChannelID string `json:"channelID"`
	Version   string `json:"version"`
	// Data is the plaintext: the text itself when it is UTF-8, else base64
	// (and Binary is set).
	Data     string `json:"data"`
	Binary   bool   `json:"binary,omitempty"`
	Encoding string `json:"encoding"`
	Error    string `json:"error,omitempty"`
}

// messageType reads the type of a server frame; "" for `{}`.
func messageType(raw []byte) (string, error) {
	var env struct {
		MessageType string `json:"messageType"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return "", fmt.Errorf("bad frame from server: %w", err)
	}
	return strings.ToLower(env.MessageType), nil
}

// openNotification decrypts a notification frame for the subscription
// (channelID and keys) and returns what to print and the ack code: 100
// delivered, 101 decryption failed, 102 not ours. An error means the frame
// cannot even be acked (no version).
func openNotification(raw []byte, channelID string, keys *webpush.ReceiverKeys) (received, int, error) {
	var n notification
	if err := json.Unmarshal(raw, &n); err != nil {
		return received{}, 0, fmt.Errorf("bad notification: %w", err)
	}
	if n.Version == "" || n.ChannelID == "" {
		return received{}, 0, errors.New("notification without channelID or version")
	}
	r := received{ChannelID: n.ChannelID, Version: n.Version}
	if !sameChannel(n.ChannelID, channelID) {
		r.Error = "notification for a channel this listener does not hold"
		return r, ackNotDelivered, nil
	}
	if n.Data == nil || *n.Data == "" {
		return r, ackDelivered, nil // an empty push: nothing to decrypt
	}
	var h map[string]string
	if len(n.Headers) > 0 && string(n.Headers) != "null" {
		if err := json.Unmarshal(n.Headers, &h); err != nil {
			r.Error = "notification headers are not a JSON object of strings"
			return r, ackDecryptionError, nil
		}
	}
	r.Encoding = h["encoding"]
	body, err := schema.DecodeBase64(*n.Data)
	if err != nil {
		r.Error = "data: " + err.Error()
		return r, ackDecryptionError, nil
	}
	plain, err := keys.Decrypt(webpush.Message{
		Encoding:   r.Encoding,
		Body:       body,
		Encryption: h["encryption"],
		CryptoKey:  h["crypto_key"],
	})
	if err != nil {
		r.Error = err.Error()
		return r, ackDecryptionError, nil
	}
	if utf8.Valid(plain) {
		r.Data = string(plain)
	} else {
		r.Data, r.Binary = base64.StdEncoding.EncodeToString(plain), true
	}
	return r, ackDelivered, nil
}

func sameChannel(a, b string) bool {
	na, errA := schema.NormalizeChannelID(a)
	nb, errB := schema.NormalizeChannelID(b)
	return errA == nil && errB == nil && na == nb
}

// newChannelID is a random (version 4) UUID, lowercase and dashed.
func newChannelID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return schema.FormatChannelID(b[:])
}

// text renders r as one line for a person.
func (r received) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "message channelID=%s version=%s", r.ChannelID, r.Version)
	if r.Encoding != "" {
		fmt.Fprintf(&b, " encoding=%s", r.Encoding)
	}
	switch {
	case r.Error != "":
		fmt.Fprintf(&b, " error=%q", r.Error)
	case r.Binary:
		fmt.Fprintf(&b, " data=base64:%s", r.Data)
	default:
		fmt.Fprintf(&b, " data=%q", r.Data)
	}
	return b.String()
}

// versionSet remembers recently printed versions, because a message whose
// ack was lost is sent again (Firefox drops such duplicates too).
type versionSet struct {
	order []string
	set   map[string]bool
	max   int
}

func newVersionSet(max int) *versionSet {
	return &versionSet{set: make(map[string]bool), max: max}
}

func (s *versionSet) seen(v string) bool { return s.set[v] }

func (s *versionSet) add(v string) {
	if s.set[v] {
		return
	}
	if len(s.order) >= s.max {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	s.order = append(s.order, v)
	s.set[v] = true
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
