package protocol

import (
	"bytes"
	"testing"

	"github.com/pushlog/pushlog/connector/link"
)

// checkEncodeSameAsJSON fails unless EncodeNotification (and
// AppendNotification after what dst holds) writes exactly encoding/json's
// bytes for n, within its size bound when the fast path takes it.
func checkEncodeSameAsJSON(t *testing.T, n link.Notification) (fast bool) {
	t.Helper()
	want, err := encodeNotificationJSON(n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := EncodeNotification(n)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%+v:\ngot  %s\njson %s", n, got, want)
	}
	appended, err := AppendNotification([]byte("prefix"), n)
	if err != nil || string(appended) != "prefix"+string(want) {
		t.Fatalf("AppendNotification: %q, %v", appended, err)
	}
	b, ok := appendNotification(nil, n)
	if ok && len(b) > notificationSize(n) {
		t.Fatalf("%d bytes, bound %d", len(b), notificationSize(n))
	}
	return ok
}

func TestEncodeNotificationFastPath(t *testing.T) {
	const ch, ver = "5b2c4e0a-3f7e-4a1b-9c6d-2e8f0a1b3c4d", "gAAAAABnZ3h5c2VhbGVkLXRva2VuLWJ5dGVz"
	tests := []struct {
		name string
		n    link.Notification
		fast bool
	}{
		{"aes128gcm", link.Notification{UAID: "u", ChannelID: ch, Version: ver, Data: bytes.Repeat([]byte{0xfb, 0xff, 1}, 90), Encoding: "aes128gcm"}, true},
		{"aesgcm", link.Notification{ChannelID: ch, Version: ver, Data: []byte("x"), Encoding: "aesgcm", Encryption: "salt=abc", CryptoKey: "dh=BAAA"}, true},
		{"empty push", link.Notification{ChannelID: ch, Version: ver, Encoding: "ignored<"}, true},
		{"empty strings", link.Notification{Data: []byte{0}}, true},
		{"html characters", link.Notification{ChannelID: "<&>", Version: ver}, false},
		{"quote", link.Notification{ChannelID: ch, Version: `a"b`}, false},
		{"backslash in a header", link.Notification{ChannelID: ch, Version: ver, Data: []byte{1}, Encoding: "aesgcm", CryptoKey: `\`}, false},
		{"control character", link.Notification{ChannelID: "\n", Version: ver}, false},
		{"non-ASCII", link.Notification{ChannelID: "é", Version: ver}, false},
		{"invalid UTF-8", link.Notification{ChannelID: ch, Version: "\xff"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := checkEncodeSameAsJSON(t, tt.n); fast != tt.fast {
				t.Fatalf("fast path taken: %v, want %v", fast, tt.fast)
			}
		})
	}
}

// FuzzEncodeNotificationMatchesJSON: for any notification EncodeNotification
// writes exactly what encoding/json writes.
func FuzzEncodeNotificationMatchesJSON(f *testing.F) {
	f.Add("5b2c4e0a-3f7e-4a1b-9c6d-2e8f0a1b3c4d", "gAAAAABn", []byte{1, 2, 3}, "aes128gcm", "", "")
	f.Add("c", "v", []byte("x"), "aesgcm", "salt=abc", "dh=BAAA")
	f.Add("c", "v", []byte(nil), "", "", "")
	f.Add("<c>", "v&", []byte{0}, "\u2028", "\x7f", "\xff")
	f.Fuzz(func(t *testing.T, ch, ver string, data []byte, enc, encryption, key string) {
		checkEncodeSameAsJSON(t, link.Notification{ChannelID: ch, Version: ver, Data: data, Encoding: enc, Encryption: encryption, CryptoKey: key})
	})
}

func BenchmarkEncodeNotification(b *testing.B) {
	n := link.Notification{ChannelID: "5b2c4e0a-3f7e-4a1b-9c6d-2e8f0a1b3c4d", Version: "gAAAAABnZ3h5c2VhbGVkLXRva2VuLWJ5dGVzZ0FBQUFBQm5aM2g1YzJWaGJHVmtMWFJ2YTJWdUxXSjVkR1Z6",
		Data: make([]byte, 256), Encoding: "aes128gcm"}
	for _, bc := range []struct {
		name string
		enc  func(link.Notification) ([]byte, error)
	}{{"EncodeNotification", EncodeNotification}, {"encoding-json", encodeNotificationJSON}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.enc(n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
