package protocol

import (
	"errors"
	"reflect"

	"testing"
)

const (
	firefoxAck = `{"messageType":"ack","updates":[{"channelID":"5b2c4e0a-3f7e-4a1b-9c6d-2e8f0a1b3c4d","version":"gAAAAABnZ3h5c2VhbGVkLXRva2VuLWJ5dGVz","code":100}]}`
	gorillaAck = `{"messageType":"ack","updates":[{"channelID":"5b2c4e0a-3f7e-4a1b-9c6d-2e8f0a1b3c4d","version":"gAAAAABn"}]}` + "\n"
)

// The fast path takes the shapes clients send per push, and declines
// (leaving them to encoding/json) everything it does not decode exactly
// as encoding/json does.
func TestParseFastShapes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		fast bool
	}{
		{"firefox ack", firefoxAck, true},
		{"ack without code, trailing newline", gorillaAck, true},
		{"ack of several", `{"messageType":"ack","updates":[{"channelID":"a","version":"v1","code":100},{"version":"v2"},{}]}`, true},
		{"ack with no updates", `{"messageType":"ack","updates":[]}`, true},
		{"ack with whitespace everywhere", " \t{ \"messageType\" : \"ack\" ,\r\n\"updates\" : [ { \"version\" : \"v\" , \"code\" : 0 } ] } \n", true},
		{"keys in any order", `{"updates":[{"code":102,"version":"v","channelID":"c"}],"messageType":"ack"}`, true},
		{"explicit ping", `{"messageType":"ping"}`, true},
		{"nack", `{"messageType":"nack","version":"v","code":301}`, true},
		{"unregister", `{"messageType":"unregister","channelID":"c","code":201}`, true},
		{"register without key", `{"messageType":"register","channelID":"c"}`, true},
		{"code of nine digits", `{"messageType":"nack","version":"v","code":999999999}`, true},

		{"hello (uaid, broadcasts)", `{"messageType":"hello","uaid":"abc","use_webpush":true}`, false},
		{"register with key", `{"messageType":"register","channelID":"c","key":"BAAA"}`, false},
		{"unknown field", `{"messageType":"ack","updates":[],"extra":1}`, false},
		{"unknown field in an update", `{"messageType":"ack","updates":[{"version":"v","x":1}]}`, false},
		{"key of another case", `{"MessageType":"ack","updates":[]}`, false},
		{"duplicate key", `{"messageType":"ack","messageType":"ack","updates":[]}`, false},
		{"duplicate key in an update", `{"messageType":"ack","updates":[{"version":"a","version":"b"}]}`, false},
		{"escaped string", `{"messageType":"ack","updates":[{"version":"\u0041"}]}`, false},
		{"non-ASCII string", `{"messageType":"ack","updates":[{"version":"é"}]}`, false},
		{"control character", "{\"messageType\":\"ack\",\"updates\":[{\"version\":\"\t\"}]}", false},
		{"negative code", `{"messageType":"nack","version":"v","code":-1}`, false},
		{"fractional code", `{"messageType":"nack","version":"v","code":1.5}`, false},
		{"exponent code", `{"messageType":"nack","version":"v","code":1e2}`, false},
		{"leading zero", `{"messageType":"nack","version":"v","code":01}`, false},
		{"code of ten digits", `{"messageType":"nack","version":"v","code":2147483648}`, false},
		{"null code", `{"messageType":"nack","version":"v","code":null}`, false},
		{"null updates", `{"messageType":"ack","updates":null}`, false},
		{"updates not a list", `{"messageType":"ack","updates":{}}`, false},
		{"trailing comma", `{"messageType":"ack","updates":[],}`, false},
		{"trailing comma in list", `{"messageType":"ack","updates":[{},]}`, false},
		{"trailing data", `{"messageType":"ack","updates":[]}x`, false},
		{"two objects", `{"messageType":"ping"}{"messageType":"ping"}`, false},
		{"truncated", `{"messageType":"ack","updates":[`, false},
		{"unknown type", `{"messageType":"urgency"}`, false},
		{"empty type", `{"messageType":""}`, false},
		{"no type", `{"channelID":"c"}`, false},
		{"not an object", `["messageType","ack"]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, ok := parseFast([]byte(tt.in))
			if ok != tt.fast {
				t.Fatalf("fast path taken: %v, want %v", ok, tt.fast)
			}
			checkSameAsJSON(t, []byte(tt.in))
			if ok {
				ref, _ := parseJSON([]byte(tt.in))
				if !reflect.DeepEqual(fast, ref) {
					t.Fatalf("fast %+v\njson %+v", fast, ref)
				}
			}
		})
	}
}

// checkSameAsJSON fails unless Parse (and the fast path, when it takes
// data) decodes data exactly as encoding/json does: the same message, or
// the same class of error (the socket's close code follows from it).
func checkSameAsJSON(t *testing.T, data []byte) {
	t.Helper()
	want, wantErr := parseJSON(data)
	if isEmptyObject(data) {
		want, wantErr = Message{MessageType: typePing}, nil
	}
	if fast, ok := parseFast(data); ok {
		if wantErr != nil {
			t.Fatalf("fast path accepted %q; encoding/json: %v", data, wantErr)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q:\nfast %#v\njson %#v", data, fast, want)
		}
	}
	got, err := Parse(data)
	if (err == nil) != (wantErr == nil) || (err != nil && !errors.Is(err, errBadMessage)) {
		t.Fatalf("%q: Parse error %v, encoding/json error %v", data, err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nParse %#v\njson  %#v", data, got, want)
	}
}

// FuzzParseFastMatchesJSON: for every input the fast path either declines
// or returns exactly what encoding/json decodes, and Parse's result and
// error class are encoding/json's.
func FuzzParseFastMatchesJSON(f *testing.F) {
	for _, s := range []string{
		firefoxAck, gorillaAck, `{}`, `{"messageType":"ping"}`,
		`{"messageType":"ack","updates":[{"channelID":"a","version":"v1","code":100},{"version":"v2"},{}]}`,
		`{"messageType":"ack","updates":[]}`, `{"messageType":"ack","updates":null}`,
		`{"messageType":"nack","version":"v","code":301}`, `{"messageType":"nack","version":"v","code":3.0}`,
		`{"messageType":"unregister","channelID":"c","code":201}`,
		`{"messageType":"ack","messageType":"nack","updates":[]}`, `{"MESSAGETYPE":"ack"}`,
		`{"messageType":"ack","updates":[{"version":"\u0041","code":1}]}`,
		`{"messageType":"hello","uaid":"abc","use_webpush":true,"broadcasts":{"a":"1"}}`,
		`{"messageType":"ack","updates":[{"version":"v","code":99999999999}]}`,
		`{"messageType":"ack","updates":[{"version":"v"},]}`, `{"messageType":"ack"} x`,
		"{\"messageType\":\"ack\",\"updates\":[{\"version\":\"\xff\"}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameAsJSON(t, data)
	})
}

// The fast path is only worth keeping if it is much cheaper than
// encoding/json on the message clients send per push.
func BenchmarkParseAck(b *testing.B) {
	data := []byte(firefoxAck)
	for _, bc := range []struct {
		name  string
		parse func([]byte) (Message, error)
	}{{"Parse", Parse}, {"encoding-json", parseJSON}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.parse(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
