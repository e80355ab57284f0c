package attack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/ingest/webpush"
)

func TestCheckTarget(t *testing.T) {
	for _, tc := range []struct {
		name        string
		push, ws    string
		allowRemote bool
		wantErr     string
	}{
		{"ipv4 loopback", "http://127.0.0.1:8082", "ws://127.0.0.1:8080/", false, ""},
		{"localhost", "https://localhost:8443", "wss://LOCALHOST/", false, ""},
		{"ipv6 loopback", "http://[::1]:8082", "ws://[::1]:8080/", false, ""},
		{"other loopback", "http://127.1.2.3:8082", "ws://127.0.0.1:8080/", false, ""},
		{"remote push refused", "https://push.example.com", "ws://127.0.0.1:8080/", false, "--allow-remote"},
		{"remote ws refused", "http://127.0.0.1:8082", "wss://push.example.com/", false, "--allow-remote"},
		{"lan address refused", "http://192.168.1.10:8082", "ws://127.0.0.1:8080/", false, "--allow-remote"},
		{"remote allowed", "https://push.example.com", "wss://push.example.com/", true, ""},
		{"wrong scheme", "ws://127.0.0.1:8082", "ws://127.0.0.1:8080/", false, "want an absolute http/https URL"},
		{"relative", "/wpush", "ws://127.0.0.1:8080/", false, "want an absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{PushURL: tc.push, WSURL: tc.ws, AllowRemote: tc.allowRemote})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestTargetStaysOnPushURL(t *testing.T) {
	r, err := New(Options{PushURL: "http://127.0.0.1:8082", WSURL: "ws://127.0.0.1:8080/"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.target("https://push.example.com/wpush/v1/abc")
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://127.0.0.1:8082/wpush/v1/abc"; got != want {
		t.Fatalf("target %q, want %q", got, want)
	}
}

func TestUnknownAttack(t *testing.T) {
	r, err := New(Options{PushURL: "http://127.0.0.1:1", WSURL: "ws://127.0.0.1:1/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), []string{"channel-flood", "nope"}); err == nil || !strings.Contains(err.Error(), `unknown attack "nope"`) {
		t.Fatalf("err %v", err)
	}
}

// verifyJWT checks an ES256 token against the key and returns its claims.
func verifyJWT(t *testing.T, token string, pub *ecdsa.PublicKey) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature: %v (%d bytes)", err, len(sig))
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("signature does not verify")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignedClaims(t *testing.T) {
	key, err := webpush.GenerateVAPIDKey()
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{endpoint: "http://127.0.0.1:8082/wpush/v1/x", vapid: key}
	for _, p := range probes {
		req, err := p.mk(a)
		if err != nil {
			t.Fatal(err)
		}
		var auth, ttl string
		for _, h := range req.Headers {
			switch h[0] {
			case "Authorization":
				auth = h[1]
			case "TTL":
				ttl = h[1]
			}
		}
		tok := strings.TrimSuffix(strings.TrimPrefix(auth, "vapid t="), ", k="+key.PublicKeyString())
		c := verifyJWT(t, tok, &key.ECDSA().PublicKey)
		switch p.name {
		case "aud-trailing-slash":
			if c["aud"] != "http://127.0.0.1:8082/" {
				t.Errorf("%s: aud %v", p.name, c["aud"])
			}
		case "exp-string":
			if _, ok := c["exp"].(string); !ok {
				t.Errorf("%s: exp %T, want a string", p.name, c["exp"])
			}
		case "ttl-plus":
			if ttl != "+5" {
				t.Errorf("%s: TTL %q", p.name, ttl)
			}
		case "ttl-spaces":
			if ttl != ` " 5 "` {
				t.Errorf("%s: TTL %q", p.name, ttl)
			}
		}
		if p.name != "aud-trailing-slash" && c["aud"] != "http://127.0.0.1:8082" {
			t.Errorf("%s: aud %v", p.name, c["aud"])
		}
	}
}

func TestTokenSize(t *testing.T) {
	key, _ := webpush.GenerateVAPIDKey()
	for _, size := range []int{1000, 4000, 37000} {
		exp := time.Now()
		base := claims("http://127.0.0.1:8082", exp, "mailto:a@example.com", nil)
		c := claims("http://127.0.0.1:8082", exp, "mailto:a@example.com", map[string]any{"jti": randomHex(jtiBytes(size, len(base)))})
		tok, err := signJWT(key.ECDSA(), c)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) > size || len(tok) < size*97/100 {
			t.Errorf("token for size %d is %d bytes", size, len(tok))
		}
	}
}

func TestPadded(t *testing.T) {
	for _, size := range []int{100, 1025, 60005} {
		v := padded("salt=abc", "keyid", size)
		if len(v) != size || !strings.HasPrefix(v, "salt=abc;keyid=") {
			t.Errorf("padded to %d: %d bytes, %q…", size, len(v), v[:20])
		}
	}
}

// The raw request carries header bytes net/http would trim.
func TestRawRequestKeepsHeaderBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		var b bytes.Buffer
		for {
			line, err := br.ReadString('\n')
			b.WriteString(line)
			if err != nil || line == "\r\n" {
				break
			}
		}
		got <- b.String()
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	}()
	r, _ := New(Options{PushURL: "http://" + ln.Addr().String(), WSURL: "ws://127.0.0.1:1/"})
	st, err := r.doRaw(context.Background(), pushReq{URL: "http://" + ln.Addr().String() + "/wpush/v1/x", Headers: [][2]string{{"TTL", ` " 5 "`}}})
	if err != nil {
		t.Fatal(err)
	}
	if st != 400 {
		t.Fatalf("status %d", st)
	}
	if req := <-got; !strings.Contains(req, "\r\nTTL: \" 5 \"\r\n") || !strings.HasPrefix(req, "POST /wpush/v1/x HTTP/1.1\r\n") {
		t.Fatalf("request:\n%s", req)
	}
}

// fakeServer answers hello and register like pushlog with a channel
// limit, closing a socket that exceeds closeAfter registers.
type fakeServer struct {
	limit, closeAfter int
	registers         atomic.Int64
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{subprotocol}}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	perSocket := 0
	for {
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			return
		}
		switch m["messageType"] {
		case "hello":
			uaid, _ := m["uaid"].(string)
			if uaid == "" {
				uaid = randomHex(16)
			}
			_ = ws.WriteJSON(map[string]any{"messageType": "hello", "uaid": uaid, "status": 200, "use_webpush": true})
		case "register":
			perSocket++
			if f.closeAfter > 0 && perSocket > f.closeAfter {
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4774, "slow down"), time.Now().Add(time.Second))
				return
			}
			status := 200
			if f.registers.Add(1) > int64(f.limit) {
				status = 413
			}
			_ = ws.WriteJSON(map[string]any{"messageType": "register", "channelID": m["channelID"], "status": status, "pushEndpoint": "http://x/wpush/v1/t"})
		}
	}
}

func TestFloodCountsAnswersAndReconnects(t *testing.T) {
	for _, tc := range []struct {
		name       string
		closeAfter int
		want       map[string]int
	}{
		{"limit", 0, map[string]int{"register 200": 50, "register 413": 70}},
		// The register that made the server close is unanswered; the
		// flood comes back and goes on.
		{"closed and back", 40, map[string]int{"register 200": 50, "register 413": 68, "closed 4774": 2, "no reply": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeServer{limit: 50, closeAfter: tc.closeAfter}
			hs := httptest.NewServer(fs)
			defer hs.Close()
			r, err := New(Options{PushURL: hs.URL, WSURL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/", Count: 120, Window: 1})
			if err != nil {
				t.Fatal(err)
			}
			res := Result{Answers: map[string]int{}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := channelFlood(ctx, r, &res); err != nil {
				t.Fatal(err)
			}
			if res.Sent != 120 {
				t.Errorf("sent %d, want 120", res.Sent)
			}
			for k, v := range tc.want {
				if res.Answers[k] != v {
					t.Errorf("answers %v, want %s=%d", res.Answers, k, v)
				}
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	d := int64(3 << 20)
	results := []Result{
		{Attack: "channel-flood", Sent: 100, Answers: map[string]int{"register 200": 50, "register 413": 50}, ServerUp: true, OthersOK: true, HeapDelta: &d, Elapsed: time.Second},
		{Attack: "lenient", Sent: 4, Answers: map[string]int{"ttl-plus 201": 1}, ServerUp: true, Note: "other user: push answered 503"},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, results); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"ATTACK", "channel-flood", "register 200=50 register 413=50", "+3.0 MB", "lenient", "NO", "push answered 503"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if Healthy(results) {
		t.Error("Healthy with an attack whose other user was not served")
	}
	b.Reset()
	if err := WriteJSON(&b, results); err != nil {
		t.Fatal(err)
	}
	var back []Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != 2 || back[0].Answers["register 413"] != 50 {
		t.Fatalf("json round trip: %v %+v", err, back)
	}
}
