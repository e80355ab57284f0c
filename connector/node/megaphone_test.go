package node

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFetchMegaphone: what a Megaphone-compatible API answers, hostile
// answers included, and the result label each failure is counted under.
func TestFetchMegaphone(t *testing.T) {
	many := map[string]string{}
	for i := range 1001 {
		many[fmt.Sprint("id", i)] = "v"
	}
	var manyJSON strings.Builder
	manyJSON.WriteString(`{"broadcasts":{`)
	i := 0
	for id, v := range many {
		if i > 0 {
			manyJSON.WriteString(",")
		}
		fmt.Fprintf(&manyJSON, "%q:%q", id, v)
		i++
	}
	manyJSON.WriteString("}}")
	tests := []struct {
		name   string
		status int
		body   string
		delay  time.Duration
		want   map[string]string
		result string // "" = ok
	}{
		{"megaphone's answer", 200, `{"code":200,"broadcasts":{"remote-settings/monitor_changes":"\"42\"","b":"1"}}`, 0,
			map[string]string{"remote-settings/monitor_changes": `"42"`, "b": "1"}, ""},
		{"empty table", 200, `{"broadcasts":{}}`, 0, map[string]string{}, ""},
		{"no broadcasts object", 200, `{"code":200}`, 0, nil, "invalid"},
		{"not JSON", 200, `<html>`, 0, nil, "invalid"},
		{"a version that is not a string", 200, `{"broadcasts":{"a":1}}`, 0, nil, "invalid"},
		{"too many ids", 200, manyJSON.String(), 0, nil, "invalid"},
		{"too large", 200, `{"broadcasts":{"a":"` + strings.Repeat("x", 2000) + `"}}`, 0, nil, "too_large"},
		{"unauthorized", 401, `{"code":401}`, 0, nil, "status"},
		{"too slow", 200, `{"broadcasts":{}}`, 2 * time.Second, nil, "fetch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok" {
					http.Error(w, "no token", http.StatusUnauthorized)
					return
				}
				select {
				case <-time.After(tc.delay):
				case <-r.Context().Done():
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			maxBody := int64(1024)
			if tc.name == "too many ids" {
				maxBody = 1 << 20 // the bound of ids, not of bytes
			}
			cfg := MegaphoneConfig{URL: srv.URL, Token: "tok", Timeout: 300 * time.Millisecond, MaxBody: maxBody, HTTPClient: srv.Client()}
			got, err := fetchMegaphone(t.Context(), cfg)
			if tc.result == "" {
				if err != nil || !maps.Equal(got, tc.want) {
					t.Fatalf("got %v %v, want %v", got, err, tc.want)
				}
				return
			}
			var ep *errPoll
			if !errors.As(err, &ep) || ep.result != tc.result {
				t.Fatalf("got %v (%v), want result %s", got, err, tc.result)
			}
		})
	}
}

// FuzzParseMegaphone: no answer crashes the poller, and what parses is
// within the bound of ids.
func FuzzParseMegaphone(f *testing.F) {
	f.Add([]byte(`{"broadcasts":{"a/b":"1"}}`))
	f.Add([]byte(`{"broadcasts":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := parseMegaphone(body)
		if err == nil && (m == nil || len(m) > 1000) {
			t.Fatalf("parsed %d ids", len(m))
		}
	})
}

func TestMegaphoneChanges(t *testing.T) {
	tests := []struct {
		name                 string
		seen, table, fetched map[string]string
		want                 map[string]string
	}{
		{"first poll writes what differs", nil, map[string]string{"a": "1", "b": "1"}, map[string]string{"a": "1", "b": "2", "c": "1"}, map[string]string{"b": "2", "c": "1"}},
		{"a Megaphone change", map[string]string{"a": "1"}, map[string]string{"a": "1"}, map[string]string{"a": "2"}, map[string]string{"a": "2"}},
		{"already written by another node", map[string]string{"a": "1"}, map[string]string{"a": "2"}, map[string]string{"a": "2"}, map[string]string{}},
		// This poller's answer is older than another node's write: it
		// must not write the older version back.
		{"a stale answer writes nothing", map[string]string{"a": "1"}, map[string]string{"a": "2"}, map[string]string{"a": "1"}, map[string]string{}},
		{"a CLI change stands until Megaphone changes", map[string]string{"a": "1"}, map[string]string{"a": "cli"}, map[string]string{"a": "1"}, map[string]string{}},
		{"a new id", map[string]string{"a": "1"}, map[string]string{"a": "1"}, map[string]string{"a": "1", "n": "1"}, map[string]string{"n": "1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := megaphoneChanges(tc.seen, tc.table, tc.fetched); !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
