package protocol

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
)

// Client message types (the "messageType" field). A bare `{}` is a ping.
const (
	typeHello              = "hello"
	typeRegister           = "register"
	typeUnregister         = "unregister"
	typeAck                = "ack"
	typeNack               = "nack"
	typePing               = "ping"
	typeBroadcastSubscribe = "broadcast_subscribe"
)

// errBadMessage marks a client message that is not valid protocol JSON; the
// socket is closed with 1002.
var errBadMessage = errors.New("bad client message")

// Message is a decoded client message: every field any client message may
// carry. Unknown fields are ignored, as autopush does.
type Message struct {
	MessageType string            `json:"messageType"`
	UAID        json.RawMessage   `json:"uaid"` // any JSON: a non-string is a malformed uaid, not a bad message
	ChannelID   string            `json:"channelID"`
	Key         *string           `json:"key"`
	Code        *float64          `json:"code"`
	Version     string            `json:"version"`
	Updates     []Ack             `json:"updates"`
	Broadcasts  map[string]string `json:"broadcasts"`
}

// Ack is one update of an ack message.
type Ack struct {
	ChannelID string   `json:"channelID"`
	Version   string   `json:"version"`
	Code      *float64 `json:"code"`
}

// uaid returns the hello's uaid when it is a JSON string, else "".
func (m *Message) uaid() string {
	var s string
	if len(m.UAID) == 0 || json.Unmarshal(m.UAID, &s) != nil {
		return ""
	}
	return s
}

// code returns the message's integral code, or def when absent or not an
// integer.
func intCode(c *float64, def int32) int32 {
	if c == nil || *c != math.Trunc(*c) || *c < math.MinInt32 || *c > math.MaxInt32 {
		return def
	}
	return int32(*c)
}

// Parse decodes one text frame. `{}` (any whitespace) is a
// ping; a missing or unknown messageType is errBadMessage.
func Parse(data []byte) (Message, error) {
	if isEmptyObject(data) {
		return Message{MessageType: typePing}, nil
	}
	if m, ok := parseFast(data); ok {
		return m, nil
	}
	return parseJSON(data)
}

// parseJSON decodes any frame with encoding/json: the reference for what
// a message means, and the path of every message parseFast declines.
func parseJSON(data []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	switch m.MessageType {
	case typeHello, typeRegister, typeUnregister, typeAck, typeNack, typePing, typeBroadcastSubscribe:
		return m, nil
	case "":
		return Message{}, fmt.Errorf("%w: no messageType", errBadMessage)
	}
	return Message{}, fmt.Errorf("%w: unknown messageType %.40q", errBadMessage, m.MessageType)
}

// isEmptyObject reports whether data is `{}` with optional JSON whitespace.
func isEmptyObject(data []byte) bool {
	data = bytes.TrimSpace(data)
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return false
	}
	return len(bytes.TrimSpace(data[1:len(data)-1])) == 0
}

// Server messages. Field order is the wire order autopush uses.

type helloReply struct {
	MessageType string         `json:"messageType"`
	UAID        string         `json:"uaid"`
	Status      int            `json:"status"`
	UseWebpush  bool           `json:"use_webpush"`
	Broadcasts  map[string]any `json:"broadcasts"`
}

type registerReply struct {
	MessageType  string `json:"messageType"`
	ChannelID    string `json:"channelID"`
	Status       int    `json:"status"`
	PushEndpoint string `json:"pushEndpoint,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

type unregisterReply struct {
	MessageType string `json:"messageType"`
	ChannelID   string `json:"channelID"`
	Status      int    `json:"status"`
	Reason      string `json:"reason,omitempty"`
}

type broadcastReply struct {
	MessageType string         `json:"messageType"`
	Broadcasts  map[string]any `json:"broadcasts"`
}

type notificationMsg struct {
	MessageType string               `json:"messageType"`
	ChannelID   string               `json:"channelID"`
	Version     string               `json:"version"`
	Data        string               `json:"data,omitempty"`
	Headers     *notificationHeaders `json:"headers,omitempty"`
}

type notificationHeaders struct {
	Encoding   string `json:"encoding"`
	Encryption string `json:"encryption,omitempty"`
	CryptoKey  string `json:"crypto_key,omitempty"`
}

// pingReply is the answer to a client's `{}`.
var pingReply = []byte("{}")

// EncodeNotification renders n as the client sees it: the body base64url
// without padding, its content headers, and nothing else (never TTL, topic,
// urgency or VAPID data). An empty body carries neither data nor headers.
func EncodeNotification(n link.Notification) ([]byte, error) {
	return AppendNotification(make([]byte, 0, notificationSize(n)), n)
}

// AppendNotification appends what EncodeNotification returns to dst.
func AppendNotification(dst []byte, n link.Notification) ([]byte, error) {
	if b, ok := appendNotification(dst, n); ok {
		return b, nil
	}
	b, err := encodeNotificationJSON(n)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// encodeNotificationJSON is EncodeNotification by encoding/json: the
// reference, and the path of strings the fast path does not write.
func encodeNotificationJSON(n link.Notification) ([]byte, error) {
	m := notificationMsg{MessageType: "notification", ChannelID: n.ChannelID, Version: n.Version}
	if len(n.Data) > 0 {
		m.Data = base64.RawURLEncoding.EncodeToString(n.Data)
		m.Headers = &notificationHeaders{Encoding: n.Encoding, Encryption: n.Encryption, CryptoKey: n.CryptoKey}
	}
	return marshal(m)
}

func marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

var errBadKey = errors.New("key must be an uncompressed P-256 public key (65 bytes, base64url)")

// parseAppServerKey decodes a register key: base64url (or standard base64,
// padded or not) of a valid uncompressed P-256 point.
func parseAppServerKey(key string) ([]byte, error) {
	raw, err := schema.DecodeBase64(key)
	if err != nil || len(raw) != 65 || raw[0] != 0x04 {
		return nil, errBadKey
	}
	if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
		return nil, errBadKey
	}
	return raw, nil
}
