package client

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// checkVAPID verifies a push request's VAPID with golang-jwt and returns
// the key (k= or Crypto-Key p256ecdsa=) and claims. wantKey "" accepts any.
func checkVAPID(t *testing.T, r *http.Request, origin, wantKey string) (string, jwt.MapClaims) {
	t.Helper()
	auth := r.Header.Get("Authorization")
	var token, key string
	if rest, ok := strings.CutPrefix(auth, "WebPush "); ok {
		token = rest
		for _, p := range strings.Split(r.Header.Get("Crypto-Key"), ";") {
			if v, ok := strings.CutPrefix(p, "p256ecdsa="); ok {
				key = v
			}
		}
	} else if rest, ok := strings.CutPrefix(auth, "vapid "); ok {
		for _, p := range strings.Split(rest, ", ") {
			if v, ok := strings.CutPrefix(p, "t="); ok {
				token = v
			} else if v, ok := strings.CutPrefix(p, "k="); ok {
				key = v
			}
		}
	}
	if token == "" || key == "" {
		t.Errorf("no VAPID in Authorization %q / Crypto-Key %q", auth, r.Header.Get("Crypto-Key"))
		return "", nil
	}
	if wantKey != "" && key != wantKey {
		t.Errorf("VAPID key %s, want %s", key, wantKey)
	}
	raw, err := schema.DecodeBase64(key)
	if err != nil {
		t.Errorf("VAPID key: %v", err)
		return "", nil
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		t.Errorf("VAPID key: %v", err)
		return "", nil
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(origin), jwt.WithExpirationRequired()); err != nil {
		t.Errorf("VAPID token does not verify: %v", err)
		return "", nil
	}
	exp, _ := claims.GetExpirationTime()
	if d := time.Until(exp.Time); d < 11*time.Hour || d > 12*time.Hour+time.Minute {
		t.Errorf("VAPID exp is %v ahead, want about 12h", d)
	}
	return key, claims
}

type capturedPush struct {
	header http.Header
	body   []byte
	key    string
	claims jwt.MapClaims
}

// pushServer answers every POST with status and body, after capturing it.
func pushServer(t *testing.T, status int, respBody string, tlsServer bool) (*httptest.Server, <-chan capturedPush) {
	got := make(chan capturedPush, 10)
	var srv *httptest.Server
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key, claims := checkVAPID(t, r, srv.URL, "")
		got <- capturedPush{r.Header.Clone(), body, key, claims}
		w.Header().Set("Location", srv.URL+"/m/msg1")
		w.Header().Set("TTL", r.Header.Get("TTL"))
		w.WriteHeader(status)
		io.WriteString(w, respBody)
	})
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused TLS handshakes are expected
	if tlsServer {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, got
}

func subscriptionFor(t *testing.T, endpoint string) (*webpush.ReceiverKeys, string) {
	t.Helper()
	k, err := webpush.GenerateReceiverKeys()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(k.Subscription(endpoint))
	return k, string(b)
}

func TestSendEncodings(t *testing.T) {
	srv, got := pushServer(t, http.StatusCreated, "", false)
	keys, sub := subscriptionFor(t, srv.URL+"/wpush/v1/token")
	vapid, _ := webpush.GenerateVAPIDKey()
	for _, enc := range []string{"", "aes128gcm", "AESGCM"} {
		t.Run(enc, func(t *testing.T) {
			var out bytes.Buffer
			status, loc, err := Send(t.Context(), SendOptions{
				Subscription: sub, Message: []byte("hello " + enc), VAPIDPrivateKey: vapid.PrivateKeyString(),
				Subject: "https://example.com/contact", TTL: 3600, Topic: "news", Urgency: "high", Encoding: enc, Out: &out,
			})
			if err != nil || status != 201 || loc != srv.URL+"/m/msg1" {
				t.Fatalf("Send = %d %q %v", status, loc, err)
			}
			if want := "status: 201 Created\nlocation: " + loc + "\nttl: 3600\n"; out.String() != want {
				t.Fatalf("printed %q, want %q", out.String(), want)
			}
			c := <-got
			h := c.header
			if h.Get("TTL") != "3600" || h.Get("Topic") != "news" || h.Get("Urgency") != "high" || h.Get("Content-Type") != "application/octet-stream" {
				t.Fatalf("headers %v", h)
			}
			if c.key != vapid.PublicKeyString() || c.claims["sub"] != "https://example.com/contact" {
				t.Fatalf("vapid key %s claims %v", c.key, c.claims)
			}
			m := webpush.Message{Encoding: h.Get("Content-Encoding"), Body: c.body}
			switch strings.ToLower(enc) {
			case "", "aes128gcm":
				if m.Encoding != "aes128gcm" || h.Get("Encryption") != "" || h.Get("Crypto-Key") != "" ||
					!strings.HasPrefix(h.Get("Authorization"), "vapid t=") {
					t.Fatalf("aes128gcm headers %v", h)
				}
			default:
				m.Encryption = h.Get("Encryption")
				m.CryptoKey = h.Get("Crypto-Key")
				if m.Encoding != "aesgcm" || !strings.HasPrefix(m.Encryption, "salt=") ||
					!strings.HasPrefix(m.CryptoKey, "dh=") || !strings.Contains(m.CryptoKey, ";p256ecdsa="+vapid.PublicKeyString()) ||
					!strings.HasPrefix(h.Get("Authorization"), "WebPush ") {
					t.Fatalf("aesgcm headers %v", h)
				}
			}
			plain, err := keys.Decrypt(m)
			if err != nil || string(plain) != "hello "+enc {
				t.Fatalf("decrypted %q, %v", plain, err)
			}
		})
	}
}

// No key given: a fresh pair signs, and its public key is printed. An
// empty message goes without body or encryption headers; default subject.
func TestSendEmptyWithFreshKey(t *testing.T) {
	srv, got := pushServer(t, http.StatusCreated, "", false)
	_, sub := subscriptionFor(t, srv.URL+"/wpush/v2/token")
	var out bytes.Buffer
	if _, _, err := Send(t.Context(), SendOptions{Subscription: sub, Out: &out}); err != nil {
		t.Fatal(err)
	}
	c := <-got
	if len(c.body) != 0 || c.header.Get("Content-Encoding") != "" || c.header.Get("TTL") != "0" || c.header.Get("Topic") != "" || c.header.Get("Urgency") != "" {
		t.Fatalf("empty push: headers %v body %d bytes", c.header, len(c.body))
	}
	if c.claims["sub"] != DefaultSubject {
		t.Fatalf("claims %v", c.claims)
	}
	if _, _, err := Send(t.Context(), SendOptions{Subscription: sub, Subject: "ops@example.com", Out: io.Discard}); err != nil {
		t.Fatal(err)
	}
	if c := <-got; c.claims["sub"] != "mailto:ops@example.com" {
		t.Fatalf("bare address: claims %v", c.claims)
	}
	if !strings.Contains(out.String(), "vapid public key: "+c.key+" (generated") || !strings.Contains(out.String(), "bound to an application server key") {
		t.Fatalf("printed %q", out.String())
	}
}

func TestSendErrorStatus(t *testing.T) {
	body := `{"code":410,"errno":106,"error":"Gone","message":"Request did not validate","more_info":"x"}`
	srv, _ := pushServer(t, http.StatusGone, body, false)
	_, sub := subscriptionFor(t, srv.URL+"/wpush/v1/token")
	status, _, err := Send(t.Context(), SendOptions{Subscription: sub, Message: []byte("x"), Out: io.Discard})
	if status != http.StatusGone || err == nil || !strings.Contains(err.Error(), `"errno":106`) || !strings.Contains(err.Error(), "410") {
		t.Fatalf("status %d err %v", status, err)
	}
}

func TestSendTLS(t *testing.T) {
	srv, _ := pushServer(t, http.StatusCreated, "", true)
	_, sub := subscriptionFor(t, srv.URL+"/wpush/v1/token")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Send(t.Context(), SendOptions{Subscription: sub, Message: []byte("x"), Out: io.Discard}); err == nil {
		t.Fatal("self-signed server trusted without a CA file")
	}
	if status, _, err := Send(t.Context(), SendOptions{Subscription: sub, Message: []byte("x"), CAFile: ca, Out: io.Discard}); err != nil || status != 201 {
		t.Fatalf("with CA file: %d %v", status, err)
	}
	if status, _, err := Send(t.Context(), SendOptions{Subscription: sub, Message: []byte("x"), Insecure: true, Out: io.Discard}); err != nil || status != 201 {
		t.Fatalf("insecure: %d %v", status, err)
	}
	notPEM := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(notPEM, []byte("nothing"), 0o644)
	if _, _, err := Send(t.Context(), SendOptions{Subscription: sub, Message: []byte("x"), CAFile: notPEM, Out: io.Discard}); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Fatalf("bad CA file: %v", err)
	}
}

// Keys prints a usable pair and writes a key file that send reads with
// "@file"; PEM and bare key files work too.
func TestKeysAndKeyFiles(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "vapid.json")
	var out bytes.Buffer
	if err := Keys(KeysOptions{Out: &out, File: keyFile}); err != nil {
		t.Fatal(err)
	}
	var pub, priv string
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "VAPID public key:"); ok {
			pub = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VAPID private key:"); ok {
			priv = strings.TrimSpace(v)
		}
	}
	k, err := webpush.ParseVAPIDPrivateKey(priv)
	if err != nil || k.PublicKeyString() != pub || len(pub) != 87 || len(priv) != 43 {
		t.Fatalf("printed keys %q / %q: %v", pub, priv, err)
	}
	if !strings.Contains(out.String(), `applicationServerKey: "`+pub+`"`) {
		t.Fatalf("no applicationServerKey in %q", out.String())
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}

	sec1, _ := x509.MarshalECPrivateKey(k.ECDSA())
	pemFile := filepath.Join(dir, "vapid.pem")
	os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600)
	bareFile := filepath.Join(dir, "vapid.txt")
	os.WriteFile(bareFile, []byte(priv+"\n"), 0o600)

	srv, got := pushServer(t, http.StatusCreated, "", false)
	_, sub := subscriptionFor(t, srv.URL+"/wpush/v2/token")
	subFile := filepath.Join(dir, "sub.json")
	os.WriteFile(subFile, []byte(sub), 0o644)
	for _, spec := range []string{"@" + keyFile, "@" + pemFile, "@" + bareFile, priv} {
		var sendOut bytes.Buffer
		if _, _, err := Send(t.Context(), SendOptions{Subscription: "@" + subFile, Message: []byte("x"), VAPIDPrivateKey: spec, Out: &sendOut}); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if c := <-got; c.key != pub {
			t.Fatalf("%s: signed with %s, want %s", spec, c.key, pub)
		}
		if strings.Contains(sendOut.String(), "generated") {
			t.Fatalf("%s: generated a key: %q", spec, sendOut.String())
		}
	}
}

func TestSendRejects(t *testing.T) {
	dir := t.TempDir()
	_, sub := subscriptionFor(t, "http://127.0.0.1:1/wpush/v1/x")
	mismatched := filepath.Join(dir, "mismatch.json")
	a, _ := webpush.GenerateVAPIDKey()
	b, _ := webpush.GenerateVAPIDKey()
	os.WriteFile(mismatched, []byte(`{"publicKey":"`+a.PublicKeyString()+`","privateKey":"`+b.PrivateKeyString()+`"}`), 0o600)
	noPriv := filepath.Join(dir, "nopriv.json")
	os.WriteFile(noPriv, []byte(`{"publicKey":"x"}`), 0o600)
	tests := []struct {
		name string
		opts SendOptions
		want string
	}{
		{"no subscription", SendOptions{}, "subscription is required"},
		{"missing file", SendOptions{Subscription: "@" + filepath.Join(dir, "none.json")}, "no such file"},
		{"not json", SendOptions{Subscription: "{"}, "subscription json"},
		{"no keys", SendOptions{Subscription: `{"endpoint":"https://x/y"}`}, "p256dh"},
		{"bad encoding", SendOptions{Subscription: sub, Encoding: "aesgcm128"}, "encoding"},
		{"bad key", SendOptions{Subscription: sub, VAPIDPrivateKey: "AAAA"}, "vapid private key"},
		{"mismatched key file", SendOptions{Subscription: sub, VAPIDPrivateKey: "@" + mismatched}, "does not belong"},
		{"key file without private key", SendOptions{Subscription: sub, VAPIDPrivateKey: "@" + noPriv}, "no privateKey"},
		{"too long", SendOptions{Subscription: sub, Message: make([]byte, 5000)}, "does not fit"},
		{"unreachable", SendOptions{Subscription: sub, Message: []byte("x")}, "push to"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Out = io.Discard
			_, _, err := Send(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
