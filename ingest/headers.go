package ingest

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/pushlog/pushlog/schema/pb"
)

// maxTopicLen is RFC 8030's limit on the Topic header (32 base64url chars).
const maxTopicLen = 32

// parseTTL reads the TTL header values (net/http canonicalises the name, so
// pywebpush's lowercase "ttl" is found too) and returns the applied TTL in
// seconds, clamped to max.
//
// The value must be ASCII digits only (RFC 8030 §5.2: delta-seconds): no
// sign, no inner spaces, no quotes, no fraction. Spaces and tabs at either
// end are optional whitespace (RFC 9110 §5.5), not part of the value; Go's
// HTTP/1 server already strips them, so they are stripped here too and
// "TTL:  5 " means 5, while `TTL: " 5 "` (with the quote characters) and
// "TTL: +5" are 400 errno 111.
func parseTTL(values []string, max time.Duration) (int64, *apiError) {
	if len(values) != 1 {
		return 0, errNoTTL // missing, or repeated (ambiguous)
	}
	v := strings.Trim(values[0], " \t")
	if !isDigits(v) {
		if len(v) > 1 && v[0] == '-' && isDigits(v[1:]) {
			return 0, errNegativeTTL
		}
		return 0, errNoTTL
	}
	maxS := int64(max / time.Second)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > maxS {
		// Only ErrRange is possible for digits: a number beyond int64
		// is beyond max too.
		return maxS, nil
	}
	return n, nil
}

// isDigits reports whether s is non-empty ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseUrgency reads the Urgency header (RFC 8030 §5.3): one of very-low,
// low, normal, high; absent means normal; more than one value is an error.
func parseUrgency(values []string) (pb.Urgency, *apiError) {
	switch len(values) {
	case 0:
		return pb.Urgency_URGENCY_NORMAL, nil
	case 1:
	default:
		return 0, badRequest(errnoMissingHeader, "Urgency must have a single value")
	}
	v := strings.TrimSpace(values[0])
	switch {
	case v == "" || strings.EqualFold(v, "normal"):
		return pb.Urgency_URGENCY_NORMAL, nil
	case strings.EqualFold(v, "very-low"):
		return pb.Urgency_URGENCY_VERY_LOW, nil
	case strings.EqualFold(v, "low"):
		return pb.Urgency_URGENCY_LOW, nil
	case strings.EqualFold(v, "high"):
		return pb.Urgency_URGENCY_HIGH, nil
	case strings.ContainsRune(v, ','):
		return 0, badRequest(errnoMissingHeader, "Urgency must have a single value")
	}
	return 0, badRequest(errnoMissingHeader, "Urgency must be one of very-low, low, normal, high")
}

// parseTopic reads the Topic header: at most 32 characters of the URL- and
// filename-safe base64 alphabet; absent or empty means no topic.
func parseTopic(values []string) (string, *apiError) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", badRequest(errnoInvalidTopic, "Topic must have a single value")
	}
	v := strings.TrimSpace(values[0])
	if len(v) > maxTopicLen {
		return "", badRequest(errnoInvalidTopic, "Topic must be no greater than 32 characters")
	}
	if !isBase64URL(v) {
		return "", badRequest(errnoInvalidTopic, "Topic must be URL and Filename safe Base64 alphabet")
	}
	return v, nil
}

// isBase64URL reports whether s consists only of [A-Za-z0-9_-].
func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// param is one key=value item of an Encryption or Crypto-Key header.
type param struct{ key, value string }

// paramList is one comma-separated section of such a header; its items are
// separated by semicolons.
type paramList []param

func (l paramList) get(key string) (string, bool) {
	for _, p := range l {
		if p.key == key {
			return p.value, true
		}
	}
	return "", false
}

// cryptoHeader is a parsed Encryption or Crypto-Key header
// (draft-ietf-httpbis-encryption-encoding-02 §3/§4).
type cryptoHeader []paramList

var errBadParams = errors.New("malformed header parameters")

// parseCryptoHeader parses "k=v;k=v,k=v" with keys lowercased (see
// parseParams).
func parseCryptoHeader(h string) (cryptoHeader, error) {
	return parseParams(h, true)
}

// parseParams parses "k=v;k=v,k=v". Keys are lowercased when fold is set,
// else kept as written; values lose surrounding whitespace, every double
// quote and trailing base64 padding. Empty items are skipped; an item
// without "=" or whose key is not a plain token is an error.
func parseParams(h string, fold bool) (cryptoHeader, error) {
	var out cryptoHeader
	for section := range strings.SplitSeq(h, ",") {
		var l paramList
		for item := range strings.SplitSeq(section, ";") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			k, v, ok := strings.Cut(item, "=")
			k = strings.TrimSpace(k)
			if fold {
				k = strings.ToLower(k)
			}
			if !ok || k == "" || !isBase64URL(k) {
				return nil, errBadParams // keys are tokens like dh, salt, rs
			}
			v = strings.TrimSpace(strings.TrimRight(strings.ReplaceAll(v, `"`, ""), "= \t"))
			l = append(l, param{key: k, value: v})
		}
		if len(l) > 0 {
			out = append(out, l)
		}
	}
	return out, nil
}

// get returns the first value of key in any section.
func (h cryptoHeader) get(key string) (string, bool) {
	for _, l := range h {
		if v, ok := l.get(key); ok {
			return v, true
		}
	}
	return "", false
}

// dh returns the sender's ECDH key: from the section whose keyid matches the
// Encryption keyid when both name one, else from the first section with dh.
func (h cryptoHeader) dh(keyid string) (string, bool) {
	var dh string
	found := false
	for _, l := range h {
		v, ok := l.get("dh")
		if !ok {
			continue
		}
		if !found {
			dh, found = v, true
		}
		if id, ok := l.get("keyid"); ok && keyid != "" && id == keyid {
			return v, true
		}
	}
	return dh, found
}

// encoding is the validated content coding of a push body.
type encoding struct {
	name       string // "aes128gcm", "aesgcm" or "" for an empty body
	encryption string // aesgcm: the Encryption header as forwarded (forwardCryptoHeader)
	cryptoKey  string // aesgcm: the Crypto-Key header as forwarded (forwardCryptoHeader)
}

// encodingHeaders carries the raw request headers checkEncoding looks at.
type encodingHeaders struct {
	contentEncoding []string
	encryption      string
	cryptoKey       string
	encryptionKey   string
}

// checkEncoding validates the content-coding headers of a non-empty body
// (RFC 8291 aes128gcm or the legacy aesgcm draft). An empty body needs none
// and carries none.
func checkEncoding(h encodingHeaders, hasBody bool) (encoding, *apiError) {
	if !hasBody {
		return encoding{}, nil
	}
	if len(h.contentEncoding) == 0 || strings.TrimSpace(h.contentEncoding[0]) == "" {
		return encoding{}, badRequest(errnoInvalidCrypto, "Missing Content-Encoding header")
	}
	if len(h.contentEncoding) > 1 {
		return encoding{}, badRequest(errnoInvalidCrypto, "Unknown Content-Encoding header")
	}
	ce := strings.ToLower(strings.TrimSpace(h.contentEncoding[0]))
	switch ce {
	case "aes128gcm":
		return checkAES128GCM(h)
	case "aesgcm":
		return checkAESGCM(h)
	}
	return encoding{}, badRequest(errnoInvalidCrypto, "Unknown Content-Encoding header")
}

// checkAES128GCM: the salt and key live in the body, so the headers must not
// carry them; Crypto-Key may still hold p256ecdsa (webpush-go sends it).
func checkAES128GCM(h encodingHeaders) (encoding, *apiError) {
	if h.encryption != "" {
		enc, err := parseCryptoHeader(h.encryption)
		if err != nil {
			return encoding{}, badRequest(errnoInvalidCrypto, "Invalid aes128gcm Encryption header")
		}
		if _, ok := enc.get("salt"); ok {
			return encoding{}, badRequest(errnoInvalidCrypto, "Do not include 'salt' header in aes128gcm Encryption header")
		}
	}
	if h.cryptoKey != "" {
		ck, err := parseCryptoHeader(h.cryptoKey)
		if err != nil {
			return encoding{}, badRequest(errnoInvalidCrypto, "Invalid aes128gcm Crypto-Key header")
		}
		if _, ok := ck.get("dh"); ok {
			return encoding{}, badRequest(errnoInvalidCrypto, "Do not include 'dh' header in aes128gcm Crypto-Key header")
		}
	}
	return encoding{name: "aes128gcm"}, nil
}

// checkAESGCM: Encryption salt=…[;rs=N] and Crypto-Key dh=… are required.
// The user agent gets the headers themselves, cleaned only as autopush
// cleans them (forwardCryptoHeader), so they are validated in that form
// with keys as written, as autopush and Firefox read them: "Salt=" is no
// salt, and a parameter left without a value ("keyid=") is refused rather
// than forwarded bare.
func checkAESGCM(h encodingHeaders) (encoding, *apiError) {
	if h.encryptionKey != "" {
		return encoding{}, badRequest(errnoInvalidCrypto, "Encryption-Key header is not valid for webpush draft 02 or later")
	}
	if h.encryption == "" {
		return encoding{}, badRequest(errnoInvalidCrypto, "Missing Encryption header")
	}
	out := encoding{name: "aesgcm", encryption: forwardCryptoHeader(h.encryption), cryptoKey: forwardCryptoHeader(h.cryptoKey)}
	enc, err := parseParams(out.encryption, false)
	if err != nil || len(enc) == 0 || !isHeaderText(h.encryption) {
		return encoding{}, badRequest(errnoInvalidCrypto, "Invalid Encryption header")
	}
	salt, ok := enc.get("salt")
	if !ok {
		return encoding{}, badRequest(errnoInvalidCrypto, "Missing salt value in Encryption header")
	}
	if salt == "" || !isBase64URL(salt) {
		return encoding{}, badRequest(errnoInvalidCrypto, "Invalid salt value in Encryption header")
	}
	if rs, ok := enc.get("rs"); ok {
		if n, err := strconv.ParseUint(rs, 10, 32); err != nil || n < 2 {
			return encoding{}, badRequest(errnoInvalidCrypto, "Invalid rs value in Encryption header")
		}
	}
	if h.cryptoKey == "" {
		return encoding{}, badRequest(errnoInvalidCrypto, "Missing Crypto-Key header")
	}
	ck, err := parseParams(out.cryptoKey, false)
	if err != nil || !isHeaderText(h.cryptoKey) {
		return encoding{}, badRequest(errnoInvalidCrypto, "Invalid Crypto-Key header")
	}
	keyid, _ := enc.get("keyid")
	dh, ok := ck.dh(keyid)
	if !ok {
		return encoding{}, badRequest(errnoInvalidCrypto, "Missing dh value in Crypto-Key header")
	}
	if dh == "" || !isBase64URL(dh) {
		return encoding{}, badRequest(errnoInvalidCrypto, "Invalid dh value in Crypto-Key header")
	}
	return out, nil
}

// isHeaderText reports whether s is visible ASCII, spaces and tabs only:
// what autopush can read as a header value at all (anything else it treats
// as absent, which for aesgcm is a 400 errno 110 too), and what survives
// the JSON notification frame unchanged.
func isHeaderText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\t' && (c < 0x20 || c > 0x7e) {
			return false
		}
	}
	return true
}

// forwardCryptoHeader is an aesgcm Encryption or Crypto-Key header as the
// user agent receives it (headers.encryption, headers.crypto_key): the
// sender's value with autopush's cleaning and nothing else. Every double
// quote is removed, then every run of '=' that follows a base64url
// character and ends a value (the end of the header, ',' or ';' comes
// next): base64 padding. Every parameter (keyid, rs, p256ecdsa, ...) and
// every section stays, in order and as written, so a user agent matching
// dh to the Encryption keyid (Firefox) finds it. Whitespace is kept too:
// padding followed by a space is not stripped, as in autopush.
func forwardCryptoHeader(v string) string {
	v = strings.ReplaceAll(strings.Trim(v, " \t"), `"`, "")
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); {
		if v[i] != '=' {
			b.WriteByte(v[i])
			i++
			continue
		}
		j := i
		for j < len(v) && v[j] == '=' {
			j++
		}
		padding := i > 0 && isBase64URL(v[i-1:i]) && (j == len(v) || v[j] == ',' || v[j] == ';')
		if !padding {
			b.WriteString(v[i:j])
		}
		i = j
	}
	return b.String()
}
