package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pushlog/pushlog/connector/link"
)

func TestParseClientMessage(t *testing.T) {
	code := func(f float64) *float64 { return &f }
	key := "BAAA"
	tests := []struct {
		name string
		in   string
		want Message
		bad  bool
	}{
		{"empty object is a ping", `{}`, Message{MessageType: typePing}, false},
		{"empty object with whitespace", " {\n\t } ", Message{MessageType: typePing}, false},
		{"explicit ping", `{"messageType":"ping"}`, Message{MessageType: typePing}, false},
		{"hello", `{"messageType":"hello","uaid":"abc","use_webpush":true,"broadcasts":{"a":"1"}}`,
			Message{MessageType: typeHello, UAID: json.RawMessage(`"abc"`), Broadcasts: map[string]string{"a": "1"}}, false},
		{"register with key", `{"messageType":"register","channelID":"c","key":"BAAA"}`,
			Message{MessageType: typeRegister, ChannelID: "c", Key: &key}, false},
		{"unregister with code", `{"messageType":"unregister","channelID":"c","code":201}`,
			Message{MessageType: typeUnregister, ChannelID: "c", Code: code(201)}, false},
		{"ack", `{"messageType":"ack","updates":[{"channelID":"c","version":"v","code":100}]}`,
			Message{MessageType: typeAck, Updates: []Ack{{ChannelID: "c", Version: "v", Code: code(100)}}}, false},
		{"nack", `{"messageType":"nack","version":"v","code":301}`,
			Message{MessageType: typeNack, Version: "v", Code: code(301)}, false},
		{"broadcast_subscribe", `{"messageType":"broadcast_subscribe","broadcasts":{"x":"2"}}`,
			Message{MessageType: typeBroadcastSubscribe, Broadcasts: map[string]string{"x": "2"}}, false},
		{"unknown fields ignored", `{"messageType":"ping","extra":[1,2]}`, Message{MessageType: typePing}, false},
		{"unknown type", `{"messageType":"urgency"}`, Message{}, true},
		{"type case matters", `{"messageType":"Hello"}`, Message{}, true},
		{"no type", `{"uaid":"x"}`, Message{}, true},
		{"null", `null`, Message{}, true},
		{"array", `[{}]`, Message{}, true},
		{"truncated", `{"messageType":"hello"`, Message{}, true},
		{"empty", ``, Message{}, true},
		{"broadcast value not a string", `{"messageType":"broadcast_subscribe","broadcasts":{"x":2}}`, Message{}, true},
		{"updates not a list", `{"messageType":"ack","updates":{}}`, Message{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.bad {
				if !errors.Is(err, errBadMessage) {
					t.Fatalf("want errBadMessage, got %v (%+v)", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestHelloUAIDField(t *testing.T) {
	tests := map[string]string{
		`{"messageType":"hello"}`:                 "",
		`{"messageType":"hello","uaid":null}`:     "",
		`{"messageType":"hello","uaid":7}`:        "",
		`{"messageType":"hello","uaid":{"a":1}}`:  "",
		`{"messageType":"hello","uaid":"abc"}`:    "abc",
		`{"messageType":"hello","uaid":"\u0041"}`: "A",
	}
	for in, want := range tests {
		m, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := m.uaid(); got != want {
			t.Errorf("%s: uaid %q, want %q", in, got, want)
		}
	}
}

func TestIntCode(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		in   *float64
		want int32
	}{
		{nil, -1},
		{f(100), 100},
		{f(100.5), -1},
		{f(-3), -3},
		{f(1e20), -1},
	}
	for _, tt := range tests {
		if got := intCode(tt.in, -1); got != tt.want {
			t.Errorf("intCode(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseAppServerKey(t *testing.T) {
	// A valid point: the P-256 generator.
	const g = "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"unpadded", g, true},
		{"padded", g + "=", true},
		{"standard alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(g), true},
		// Neither spelling: refused, as ingest refuses it for VAPID keys
		// (schema.DecodeBase64 is the one decoder of both).
		{"mixed alphabets", strings.Replace(g, "-", "+", 1), false},
		{"empty", "", false},
		{"one byte short", g[:len(g)-2], false},
		{"garbage", "%%%", false},
		{"not on the curve", "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := parseAppServerKey(tt.key)
			if tt.ok != (err == nil) {
				t.Fatalf("ok=%v, err=%v", tt.ok, err)
			}
			if tt.ok && (len(raw) != 65 || raw[0] != 4) {
				t.Fatalf("raw key %x", raw)
			}
		})
	}
}

func TestEncodeNotificationNeverLeaksMetadata(t *testing.T) {
	b, err := EncodeNotification(link.Notification{UAID: "u", ChannelID: "c", Version: "v", Data: []byte{1}, Encoding: "aes128gcm"})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"uaid", "ttl", "TTL", "topic", "urgency", "Ref", "ref"} {
		if _, ok := m[k]; ok {
			t.Errorf("notification carries %q: %s", k, b)
		}
	}
}

// FuzzClientMessage: decoding any frame never panics, and what it accepts
// is a known type that survives a round trip.
func FuzzClientMessage(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"messageType":"ping"}`,
		`{"messageType":"hello","use_webpush":true,"broadcasts":{"remote-settings/monitor_changes":"\"1\""},"uaid":"0123456789abcdef0123456789abcdef"}`,
		`{"messageType":"register","channelID":"01234567-89ab-cdef-0123-456789abcdef","key":"BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU="}`,
		`{"messageType":"unregister","channelID":"x","code":202}`,
		`{"messageType":"ack","updates":[{"channelID":"x","version":"v","code":100},{"version":""}]}`,
		`{"messageType":"nack","version":"v","code":1e400}`,
		`{"messageType":"broadcast_subscribe","broadcasts":{}}`,
		`{"messageType":"hello","uaid":{"nested":[1,2,{"x":null}]}}`,
		`[`, `"\ud800"`, "{\"messageType\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if !errors.Is(err, errBadMessage) {
				t.Fatalf("error not errBadMessage: %v", err)
			}
			return
		}
		switch m.MessageType {
		case typeHello, typeRegister, typeUnregister, typeAck, typeNack, typePing, typeBroadcastSubscribe:
		default:
			t.Fatalf("accepted type %q", m.MessageType)
		}
		_ = m.uaid()
		_ = intCode(m.Code, 0)
		for _, u := range m.Updates {
			_ = intCode(u.Code, 100)
		}
		if m.Key != nil {
			_, _ = parseAppServerKey(*m.Key)
		}
	})
}
