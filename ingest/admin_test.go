package ingest

import (
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/broadcasts"
)

const testAdminToken = "admin-token-0123456789abcdef"

// TestAdminBroadcasts: the admin API's authentication, bounds and writes.
func TestAdminBroadcasts(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) {
		c.Admin = AdminConfig{Token: testAdminToken, MaxBody: 2048}
		c.Metrics = reg
	})
	names := schema.DefaultNames()
	if err := schema.EnsureTopics(t.Context(), kadm.NewClient(e.client), []schema.TopicSpec{{Name: names.Broadcasts, Compact: true}}, testPartitions, 1); err != nil {
		t.Fatal(err)
	}
	bearer := map[string]string{"Authorization": "Bearer " + testAdminToken}
	many := map[string]string{}
	for i := range schema.MaxBroadcasts + 1 {
		many[fmt.Sprint("i", i)] = "1"
	}
	tooMany := `{"broadcasts":{`
	i := 0
	for id := range many {
		if i > 0 {
			tooMany += ","
		}
		tooMany += fmt.Sprintf("%q:\"1\"", id)
		i++
	}
	tooMany += "}}"
	tests := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		body   string
		status int
	}{
		{"no token", http.MethodPut, "/v1/broadcasts/a/b", nil, "v1", http.StatusUnauthorized},
		{"wrong token", http.MethodPut, "/v1/broadcasts/a/b", map[string]string{"Authorization": "Bearer nope"}, "v1", http.StatusUnauthorized},
		{"token as a prefix", http.MethodPut, "/v1/broadcasts/a/b", map[string]string{"Authorization": "Bearer " + testAdminToken + "x"}, "v1", http.StatusUnauthorized},
		{"basic scheme", http.MethodPut, "/v1/broadcasts/a/b", map[string]string{"Authorization": "Basic " + testAdminToken}, "v1", http.StatusUnauthorized},
		{"put (megaphone's shape)", http.MethodPut, "/v1/broadcasts/remote-settings/monitor_changes", bearer, "\"42\"\n", http.StatusOK},
		{"put a single-segment id", http.MethodPut, "/v1/broadcasts/b1", bearer, "v1", http.StatusOK},
		{"put a reserved id", http.MethodPut, "/v1/broadcasts/errors", bearer, "v1", http.StatusBadRequest},
		{"put an id with an empty segment", http.MethodPut, "/v1/broadcasts/a//b", bearer, "v1", http.StatusBadRequest},
		{"put a version with a space", http.MethodPut, "/v1/broadcasts/b2", bearer, "v 1", http.StatusBadRequest},
		{"put an empty version", http.MethodPut, "/v1/broadcasts/b2", bearer, "", http.StatusBadRequest},
		{"put a long version", http.MethodPut, "/v1/broadcasts/b2", bearer, strings.Repeat("v", schema.MaxBroadcastField+1), http.StatusBadRequest},
		{"put a long id", http.MethodPut, "/v1/broadcasts/" + strings.Repeat("i", schema.MaxBroadcastField+1), bearer, "v", http.StatusBadRequest},
		{"post", http.MethodPost, "/v1/broadcasts", bearer, `{"broadcasts":{"b1":"v2","c":"1"}}`, http.StatusOK},
		{"post one bad entry: none written", http.MethodPost, "/v1/broadcasts", bearer, `{"broadcasts":{"d":"1","bad id":"1"}}`, http.StatusBadRequest},
		{"post not JSON", http.MethodPost, "/v1/broadcasts", bearer, `b1=v3`, http.StatusBadRequest},
		{"post nothing", http.MethodPost, "/v1/broadcasts", bearer, `{"broadcasts":{}}`, http.StatusBadRequest},
		{"post a number", http.MethodPost, "/v1/broadcasts", bearer, `{"broadcasts":{"d":1}}`, http.StatusBadRequest},
		{"post too large", http.MethodPost, "/v1/broadcasts", bearer, `{"broadcasts":{"d":"` + strings.Repeat("x", 3000) + `"}}`, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rr := e.do(tc.method, tc.path, tc.hdr, []byte(tc.body))
			if rr.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rr.Code, tc.status, rr.Body)
			}
			if rr.Code == http.StatusUnauthorized && rr.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Fatalf("no WWW-Authenticate: %v", rr.Header())
			}
			if rr.Code != http.StatusOK {
				errBody(t, rr)
			}
		})
	}
	// too many ids, past a larger body bound
	e2 := newEnv(t, func(c *Config) { c.Admin = AdminConfig{Token: testAdminToken, MaxBody: 1 << 20} })
	if rr := e2.do(http.MethodPost, "/v1/broadcasts", bearer, []byte(tooMany)); rr.Code != http.StatusBadRequest {
		t.Fatalf("too many ids: %d %s", rr.Code, rr.Body)
	}

	ctx := t.Context()
	got, err := broadcasts.Load(ctx, []kgo.Opt{kgo.SeedBrokers(e.cluster.ListenAddrs()...)}, names)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"remote-settings/monitor_changes": `"42"`, "b1": "v2", "c": "1"}
	if !maps.Equal(got, want) {
		t.Fatalf("topic %v, want %v", got, want)
	}
	for result, n := range map[string]float64{"ok": 3, "unauthorized": 4, "invalid": 10, "too_large": 1} {
		if got := adminCount(t, reg, result); got != n {
			t.Errorf("admin requests %s = %v, want %v", result, got, n)
		}
	}
}

func adminCount(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pushlog_ingest_admin_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no admin counter %s", result)
	return 0
}

// TestAdminOff: without a configured token every admin request is 403 and
// nothing is written.
func TestAdminOff(t *testing.T) {
	e := newEnv(t)
	for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}} {
		rr := e.do(http.MethodPut, "/v1/broadcasts/a", hdr, []byte("v1"))
		if rr.Code != http.StatusForbidden {
			t.Fatalf("status %d: %s", rr.Code, rr.Body)
		}
		errBody(t, rr)
	}
}

// FuzzAdminBroadcasts: no admin body crashes ingest; what is accepted is
// in the format and within the bound of ids.
func FuzzAdminBroadcasts(f *testing.F) {
	f.Add([]byte(`{"broadcasts":{"a/b":"1"}}`))
	f.Add([]byte(`{"broadcasts":{"errors":"1"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := parseAdminBroadcasts(body)
		if err != nil {
			return
		}
		if len(m) == 0 || len(m) > schema.MaxBroadcasts {
			t.Fatalf("%d ids accepted", len(m))
		}
		for id, v := range m {
			if schema.ValidBroadcastID(id) != nil || schema.ValidBroadcastVersion(v) != nil {
				t.Fatalf("accepted %q=%q", id, v)
			}
		}
	})
}
