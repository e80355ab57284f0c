package fcmtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// assertion signs a JWT bearer assertion as a service account would.
func assertion(t *testing.T, s *Server, mut func(jwt.MapClaims, *jwt.Token)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"iss": s.email, "aud": s.TokenURL(), "scope": scope, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = s.keyID
	if mut != nil {
		mut(c, tok)
	}
	str, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

func tokenRequest(t *testing.T, s *Server, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := s.Client().PostForm(s.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestTokenEndpoint(t *testing.T) {
	s := New("p")
	defer s.Close()
	tests := []struct {
		name string
		mut  func(jwt.MapClaims, *jwt.Token)
		form url.Values
		want int
	}{
		{name: "valid", want: 200},
		{name: "wrong audience", mut: func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = "https://oauth2.googleapis.com/token" }, want: 400},
		{name: "wrong issuer", mut: func(c jwt.MapClaims, _ *jwt.Token) { c["iss"] = "x@y" }, want: 400},
		{name: "no scope", mut: func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "https://www.googleapis.com/auth/cloud-platform" }, want: 400},
		{name: "exp over an hour", mut: func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = time.Now().Add(2 * time.Hour).Unix() }, want: 400},
		{name: "expired", mut: func(c jwt.MapClaims, _ *jwt.Token) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}, want: 400},
		{name: "no exp", mut: func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "exp") }, want: 400},
		{name: "wrong kid", mut: func(_ jwt.MapClaims, tok *jwt.Token) { tok.Header["kid"] = "other" }, want: 400},
		{name: "wrong grant", form: url.Values{"grant_type": {"client_credentials"}}, want: 400},
	}
	for _, tt := range tests {
		form := tt.form
		if form == nil {
			form = url.Values{"grant_type": {grantType}, "assertion": {assertion(t, s, tt.mut)}}
		}
		st, out := tokenRequest(t, s, form)
		if st != tt.want {
			t.Errorf("%s: %d %v, want %d", tt.name, st, out, tt.want)
		}
		if st == 200 && (out["token_type"] != "Bearer" || out["expires_in"] != float64(3600) || out["access_token"] == "") {
			t.Errorf("%s: answer %v", tt.name, out)
		}
	}
	// An assertion signed with another key.
	other := New("p")
	defer other.Close()
	forged := assertion(t, other, func(c jwt.MapClaims, tok *jwt.Token) {
		c["iss"], c["aud"], tok.Header["kid"] = s.email, s.TokenURL(), s.keyID
	})
	if st, _ := tokenRequest(t, s, url.Values{"grant_type": {grantType}, "assertion": {forged}}); st != 400 {
		t.Errorf("forged assertion: %d", st)
	}
}

func TestSendStrict(t *testing.T) {
	s := New("p")
	defer s.Close()
	s.Register("dev")
	_, out := tokenRequest(t, s, url.Values{"grant_type": {grantType}, "assertion": {assertion(t, s, nil)}})
	bearer := out["access_token"].(string)
	tests := []struct {
		name, body, auth, path string
		want                   int
		code                   string
	}{
		{name: "valid", body: `{"message":{"token":"dev","android":{"ttl":"60s","priority":"HIGH","data":{"chid":"x"}}}}`, want: 200},
		{name: "fractional ttl", body: `{"message":{"token":"dev","android":{"ttl":"3.5s","data":{}}}}`, want: 200},
		{name: "unknown field", body: `{"message":{"token":"dev","android":{"ttl":"60s","prio":"HIGH"}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "unknown top field", body: `{"msg":{}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "number data value", body: `{"message":{"token":"dev","android":{"data":{"n":1}}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "ttl without s", body: `{"message":{"token":"dev","android":{"ttl":"60"}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "ttl as number", body: `{"message":{"token":"dev","android":{"ttl":60}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "ttl over 4 weeks", body: `{"message":{"token":"dev","android":{"ttl":"2419201s"}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "priority lower case", body: `{"message":{"token":"dev","android":{"priority":"high"}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "reserved key", body: `{"message":{"token":"dev","android":{"data":{"google.x":"1"}}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "too big", body: `{"message":{"token":"dev","android":{"data":{"body":"` + strings.Repeat("a", 4100) + `"}}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "trailing data", body: `{"message":{"token":"dev","android":{}}} {}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "unknown token", body: `{"message":{"token":"other","android":{}}}`, want: 404, code: "UNREGISTERED"},
		{name: "malformed token", body: `{"message":{"token":"a b","android":{}}}`, want: 400, code: "INVALID_ARGUMENT"},
		{name: "no bearer", auth: "-", body: `{"message":{"token":"dev","android":{}}}`, want: 401},
		{name: "foreign bearer", auth: "ya29.forged", body: `{"message":{"token":"dev","android":{}}}`, want: 401},
		{name: "other project", path: "/v1/projects/q/messages:send", body: `{"message":{"token":"dev","android":{}}}`, want: 403, code: "SENDER_ID_MISMATCH"},
	}
	for _, tt := range tests {
		path := tt.path
		if path == "" {
			path = "/v1/projects/p/messages:send"
		}
		req, _ := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(tt.body))
		req.Header.Set("Content-Type", "application/json")
		switch tt.auth {
		case "":
			req.Header.Set("Authorization", "Bearer "+bearer)
		case "-":
		default:
			req.Header.Set("Authorization", "Bearer "+tt.auth)
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want || (tt.code != "" && !strings.Contains(string(body), `"errorCode":"`+tt.code+`"`)) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, resp.StatusCode, body, tt.want, tt.code)
		}
	}
	if n := len(s.Received()); n != 2 {
		t.Errorf("received %d, want the 2 valid", n)
	}
}

func TestPlainHTTPRefused(t *testing.T) {
	s := New("p")
	defer s.Close()
	resp, err := http.Post(strings.Replace(s.URL, "https://", "http://", 1)+"/token", "application/x-www-form-urlencoded", nil)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP answered %d", resp.StatusCode)
		}
	}
}
