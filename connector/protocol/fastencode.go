package protocol

import (
	"encoding/base64"

	"github.com/pushlog/pushlog/connector/link"
)

// appendNotification renders n as encoding/json renders notificationMsg,
// without reflection, when every string is plain ASCII that encoding/json
// writes as is (always so for the channel ids, sealed versions and content
// codings pushlog stores). ok is false otherwise, and EncodeNotification
// then uses encoding/json. FuzzEncodeNotificationMatchesJSON checks the
// bytes are identical.
func appendNotification(dst []byte, n link.Notification) (b []byte, ok bool) {
	if !plainJSON(n.ChannelID) || !plainJSON(n.Version) {
		return dst, false
	}
	hasData := len(n.Data) > 0
	if hasData && (!plainJSON(n.Encoding) || !plainJSON(n.Encryption) || !plainJSON(n.CryptoKey)) {
		return dst, false
	}
	b = append(dst, `{"messageType":"notification","channelID":"`...)
	b = append(b, n.ChannelID...)
	b = append(b, `","version":"`...)
	b = append(b, n.Version...)
	if !hasData {
		return append(b, `"}`...), true
	}
	b = append(b, `","data":"`...)
	b = base64.RawURLEncoding.AppendEncode(b, n.Data)
	b = append(b, `","headers":{"encoding":"`...)
	b = append(b, n.Encoding...)
	b = append(b, '"')
	if n.Encryption != "" {
		b = append(b, `,"encryption":"`...)
		b = append(b, n.Encryption...)
		b = append(b, '"')
	}
	if n.CryptoKey != "" {
		b = append(b, `,"crypto_key":"`...)
		b = append(b, n.CryptoKey...)
		b = append(b, '"')
	}
	return append(b, "}}"...), true
}

// notificationSize is an upper bound of the fast path's output for n.
func notificationSize(n link.Notification) int {
	const fixed = len(`{"messageType":"notification","channelID":"","version":"","data":"","headers":{"encoding":"","encryption":"","crypto_key":""}}`)
	return fixed + len(n.ChannelID) + len(n.Version) + base64.RawURLEncoding.EncodedLen(len(n.Data)) +
		len(n.Encoding) + len(n.Encryption) + len(n.CryptoKey)
}

// plainJSON reports whether encoding/json writes s unchanged between
// quotes: printable ASCII other than '"' and '\\', and not '<', '>' or
// '&' (which it escapes for HTML).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
