package ingest

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushlog/pushlog/schema"
)

var quotaEpoch = time.Unix(1_800_000_000, 0)

func key(b byte) quotaKey { return quotaKey{b, 1, 2, 3} }

// TestQuotaBucketMath: a bucket gives its burst at once, then one token per
// 1/rate; a refusal's delay is the time until the next token.
func TestQuotaBucketMath(t *testing.T) {
	tests := []struct {
		name      string
		rate      float64
		burst     int
		steps     []time.Duration // offsets from the epoch, one push each
		want      []bool
		wantDelay []time.Duration // of each refusal, in order
	}{
		{name: "burst then refuse", rate: 1, burst: 3,
			steps: []time.Duration{0, 0, 0, 0}, want: []bool{true, true, true, false}, wantDelay: []time.Duration{time.Second}},
		{name: "refill one token", rate: 2, burst: 1,
			steps: []time.Duration{0, 0, 250 * time.Millisecond, 500 * time.Millisecond},
			want:  []bool{true, false, false, true}, wantDelay: []time.Duration{500 * time.Millisecond, 250 * time.Millisecond}},
		{name: "slow rate", rate: 0.1, burst: 1,
			steps: []time.Duration{0, time.Second, 10 * time.Second}, want: []bool{true, false, true}, wantDelay: []time.Duration{9 * time.Second}},
		{name: "refusals cost nothing", rate: 1, burst: 1,
			steps:     []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, time.Second},
			want:      []bool{true, false, false, false, true},
			wantDelay: []time.Duration{900 * time.Millisecond, 800 * time.Millisecond, 700 * time.Millisecond}},
		{name: "never above burst", rate: 100, burst: 2,
			steps: []time.Duration{time.Hour, time.Hour, time.Hour}, want: []bool{true, true, false}, wantDelay: []time.Duration{10 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := newQuotaTable(quotaVAPID, tc.rate, tc.burst, 64)
			var delays []time.Duration
			for i, off := range tc.steps {
				r, d := tab.reserve(key(1), quotaEpoch.Add(off))
				if got := r != nil; got != tc.want[i] {
					t.Fatalf("push %d at +%s: allowed %v, want %v", i, off, got, tc.want[i])
				}
				if r == nil {
					delays = append(delays, d)
				}
			}
			if len(delays) != len(tc.wantDelay) {
				t.Fatalf("delays %v, want %v", delays, tc.wantDelay)
			}
			for i := range delays {
				if diff := delays[i] - tc.wantDelay[i]; diff < -time.Millisecond || diff > time.Millisecond {
					t.Errorf("refusal %d: delay %s, want %s", i, delays[i], tc.wantDelay[i])
				}
			}
		})
	}
}

func TestRetryAfterSecs(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{
		{0, 1}, {time.Nanosecond, 1}, {999 * time.Millisecond, 1}, {time.Second, 1},
		{time.Second + time.Nanosecond, 2}, {9500 * time.Millisecond, 10}, {time.Hour, 3600},
		{time.Duration(1<<63 - 1), 1<<31 - 1},
	}
	for _, tc := range tests {
		if got := retryAfterSecs(tc.d); got != tc.want {
			t.Errorf("retryAfterSecs(%s) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestQuotaTableBounds: a table never holds more than its entries; a full
// table replaces a refilled entry and meters keys it cannot admit in the
// shared overflow bucket (a flood of fresh keys is never unmetered).
func TestQuotaTableBounds(t *testing.T) {
	const entries = quotaShards * 4
	tests := []struct {
		name          string
		gap           time.Duration // between pushes of distinct keys
		keys          int
		wantEvictions bool
		wantOverflow  bool
		wantAllowed   int // -1: all
	}{
		// 1 token/s, burst 5: a key that spent one token is refilled
		// after 1s, so distinct keys 1s apart always find room.
		{name: "refilled entries are replaced", gap: time.Second, keys: 10 * entries, wantEvictions: true, wantAllowed: -1},
		// All at one instant: no entry has refilled; past the table the
		// keys share one bucket of burst 5.
		{name: "fresh keys at once share the overflow bucket", keys: 10 * entries, wantOverflow: true, wantAllowed: -2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := newQuotaTable(quotaSubscription, 1, 5, entries)
			allowed := 0
			now := quotaEpoch
			for i := range tc.keys {
				k := quotaKey{byte(i), byte(i >> 8), byte(i >> 16), 9}
				if r, _ := tab.reserve(k, now); r != nil {
					allowed++
				}
				if n := tab.entries.Load(); n > entries {
					t.Fatalf("table holds %d entries, bound %d", n, entries)
				}
				now = now.Add(tc.gap)
			}
			if got := tab.evictions.Load() > 0; got != tc.wantEvictions {
				t.Errorf("evictions %d", tab.evictions.Load())
			}
			if got := tab.overflowed.Load() > 0; got != tc.wantOverflow {
				t.Errorf("overflowed %d", tab.overflowed.Load())
			}
			switch tc.wantAllowed {
			case -1:
				if allowed != tc.keys {
					t.Errorf("%d of %d allowed, want all", allowed, tc.keys)
				}
			case -2:
				// Every key the table admitted, plus the overflow's burst.
				if want := entries + 5; allowed != want {
					t.Errorf("%d of %d allowed, want %d (the table's %d keys and the overflow burst 5)", allowed, tc.keys, want, entries)
				}
			}
		})
	}
}

// TestQuotaLiveEntryKept: a key over its quota is not evicted (and so not
// reset) by a flood of fresh keys.
func TestQuotaLiveEntryKept(t *testing.T) {
	tab := newQuotaTable(quotaVAPID, 1, 2, quotaShards)
	hot := quotaKey{0, 42}
	for range 2 {
		if r, _ := tab.reserve(hot, quotaEpoch); r == nil {
			t.Fatal("burst refused")
		}
	}
	for i := range 1000 {
		tab.reserve(quotaKey{byte(i * quotaShards), byte(i >> 8), 7}, quotaEpoch) // same shard as hot
	}
	if r, d := tab.reserve(hot, quotaEpoch); r != nil || d != time.Second {
		t.Fatalf("hot key after a flood of fresh keys: allowed %v delay %s; want refused for 1s", r != nil, d)
	}
}

// TestQuotaCheckRefunds: a push refused by one bucket takes no token from
// the others, and the refusal reported is the longest wait.
func TestQuotaCheckRefunds(t *testing.T) {
	q := newQuotas(QuotaConfig{VAPIDRate: 1, VAPIDBurst: 10, SubscriptionRate: 0.5, SubscriptionBurst: 1, AddressRate: 1, AddressBurst: 10, Entries: 1024})
	vk := key(5)
	p := pushQuota{vapid: &vk, sub: key(6)}
	if r := q.check(p, quotaEpoch); r != nil {
		t.Fatalf("first push refused: %+v", r)
	}
	for i := range 5 {
		r := q.check(p, quotaEpoch)
		if r == nil || r.kind != quotaSubscription || r.delay != 2*time.Second {
			t.Fatalf("push %d: %+v, want the subscription quota for 2s", i, r)
		}
	}
	// The VAPID bucket lost only the accepted push's token: 9 more pushes
	// to other endpoints pass, the 10th is refused.
	for i := range 10 {
		p2 := pushQuota{vapid: &vk, sub: key(byte(100 + i))}
		r := q.check(p2, quotaEpoch)
		if (r == nil) != (i < 9) {
			t.Fatalf("push %d to another endpoint: refusal %+v", i, r)
		}
	}
}

// TestQuotaOtherSenders: a sender over its quota blocks no other sender,
// concurrently.
func TestQuotaOtherSenders(t *testing.T) {
	q := newQuotas(QuotaConfig{VAPIDRate: 1, VAPIDBurst: 5, SubscriptionRate: 1000, SubscriptionBurst: 1000, AddressRate: 1, AddressBurst: 1, Entries: 1024})
	hot := key(1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 500 {
				q.check(pushQuota{vapid: &hot, sub: quotaKey{byte(i), 1}}, quotaEpoch)
			}
		})
	}
	wg.Wait()
	for i := range 100 {
		other := quotaKey{byte(i), 2, 2}
		for j := range 5 {
			if r := q.check(pushQuota{vapid: &other, sub: quotaKey{byte(i), byte(j), 3}}, quotaEpoch); r != nil {
				t.Fatalf("sender %d push %d refused while another is over its quota: %+v", i, j, r)
			}
		}
	}
}

func TestSourceAddr(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.7 ,fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string // "" : no address
	}{
		{"peer", "203.0.113.5:4000", nil, nil, "203.0.113.5"},
		{"peer v6", "[2001:db8::1]:4000", nil, nil, "2001:db8::1"},
		{"mapped v4", "[::ffff:203.0.113.5]:1", nil, nil, "203.0.113.5"},
		{"xff ignored without trusted proxies", "10.1.1.1:1", []string{"198.51.100.1"}, nil, "10.1.1.1"},
		{"xff ignored from an untrusted peer", "203.0.113.5:1", []string{"198.51.100.1"}, proxies, "203.0.113.5"},
		{"trusted proxy", "10.1.1.1:1", []string{"198.51.100.1"}, proxies, "198.51.100.1"},
		{"rightmost untrusted", "10.1.1.1:1", []string{"1.1.1.1, 198.51.100.1, 10.2.2.2", "192.0.2.7"}, proxies, "198.51.100.1"},
		{"spoofed left entries ignored", "10.1.1.1:1", []string{"6.6.6.6,198.51.100.9"}, proxies, "198.51.100.9"},
		{"garbage: the proxy", "10.1.1.1:1", []string{"not-an-ip"}, proxies, "10.1.1.1"},
		{"all trusted: the leftmost proxy", "10.1.1.1:1", []string{"10.3.3.3, 10.4.4.4"}, proxies, "10.3.3.3"},
		{"no xff from a proxy", "10.1.1.1:1", nil, proxies, "10.1.1.1"},
		{"bad peer", "pipe", nil, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, ok := sourceAddr(tc.remote, tc.xff, tc.trusted)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tc.want {
				t.Errorf("sourceAddr = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,nope"); err == nil {
		t.Error("ParseTrustedProxies accepted nope")
	}
}

func TestAddrKeyIPv6Prefix(t *testing.T) {
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	c := netip.MustParseAddr("2001:db8:1:3::1")
	if addrKey(a) != addrKey(b) {
		t.Error("two addresses of one /64 have distinct buckets")
	}
	if addrKey(a) == addrKey(c) {
		t.Error("two /64s share a bucket")
	}
	if addrKey(netip.MustParseAddr("192.0.2.1")) == addrKey(netip.MustParseAddr("192.0.2.2")) {
		t.Error("two IPv4 addresses share a bucket")
	}
}

// FuzzSourceAddr: no X-Forwarded-For crashes the parser, and the address
// is the peer's unless the peer is a trusted proxy.
func FuzzSourceAddr(f *testing.F) {
	for _, s := range []string{"198.51.100.1", "1.1.1.1, 10.0.0.1", "", ",,,", "[::1]:80", "fe80::1%eth0", "::ffff:1.2.3.4"} {
		f.Add("10.0.0.1:1", s)
		f.Add("203.0.113.1:1", s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		a, ok := sourceAddr(remote, []string{xff}, trusted)
		peer, pok := parseAddr(remote)
		if ok != pok {
			t.Fatalf("ok %v, peer ok %v", ok, pok)
		}
		if pok && !trusted[0].Contains(peer) && a != peer {
			t.Fatalf("untrusted peer %s gave source %s", peer, a)
		}
	})
}

// TestQuotaHTTP: over a quota the push API answers 429 errno 129 with
// Retry-After in autopush's JSON shape, writes nothing, counts the refusal,
// keeps serving other senders, and accepts the sender again after
// Retry-After.
func TestQuotaHTTP(t *testing.T) {
	tests := []struct {
		name    string
		quota   QuotaConfig
		vapid   bool
		kind    string
		retry   string
		allowed int
	}{
		{name: "vapid key", quota: QuotaConfig{VAPIDRate: 0.25, VAPIDBurst: 3}, vapid: true, kind: quotaVAPID, retry: "4", allowed: 3},
		{name: "subscription", quota: QuotaConfig{SubscriptionRate: 0.5, SubscriptionBurst: 2}, vapid: true, kind: quotaSubscription, retry: "2", allowed: 2},
		// httptest's peer is 192.0.2.1: public, so metered.
		{name: "address without vapid", quota: QuotaConfig{AddressRate: 1, AddressBurst: 4}, kind: quotaAddress, retry: "1", allowed: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			var mu sync.Mutex
			now := time.Now()
			e := newEnv(t, func(c *Config) {
				c.Quota = tc.quota
				c.Metrics = reg
				c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			})
			push := func(uaid string) *http.Response {
				hdr := map[string]string{"TTL": "60"}
				path := e.endpoint(uaid, testChannel, nil)
				if tc.vapid {
					hdr["Authorization"] = e.vapid.header(t, testPublicURL)
				}
				rr := e.do(http.MethodPost, path, hdr, nil)
				if rr.Code == http.StatusTooManyRequests {
					b := errBody(t, rr)
					if b.Errno != errnoTooManyRequests {
						t.Errorf("429 errno %d, want %d", b.Errno, errnoTooManyRequests)
					}
					if !strings.Contains(b.Message, "quota") {
						t.Errorf("429 message %q", b.Message)
					}
				}
				return rr.Result()
			}
			uaid := schema.NewUAID()
			for i := range tc.allowed {
				if r := push(uaid); r.StatusCode != http.StatusCreated {
					t.Fatalf("push %d: %d", i, r.StatusCode)
				}
			}
			r := push(uaid)
			if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != tc.retry {
				t.Fatalf("push past the quota: %d Retry-After %q, want 429 Retry-After %s", r.StatusCode, r.Header.Get("Retry-After"), tc.retry)
			}
			if tc.kind == quotaSubscription {
				// Another endpoint of the same sender is not blocked.
				if r := push(schema.NewUAID()); r.StatusCode != http.StatusCreated {
					t.Errorf("another endpoint: %d", r.StatusCode)
				}
			}
			calls := e.srv.produceCalls.Load()
			push(uaid)
			if e.srv.produceCalls.Load() != calls {
				t.Error("a refused push reached Kafka")
			}
			// Another sender (a new VAPID key, or a VAPID push from the
			// metered address) is served.
			other := newTestVAPID(t)
			rr := e.do(http.MethodPost, e.endpoint(schema.NewUAID(), testChannel, nil),
				map[string]string{"TTL": "60", "Authorization": other.header(t, testPublicURL)}, nil)
			if rr.Code != http.StatusCreated {
				t.Errorf("another sender: %d %s", rr.Code, rr.Body)
			}
			secs, _ := strconv.Atoi(tc.retry)
			mu.Lock()
			now = now.Add(time.Duration(secs) * time.Second)
			mu.Unlock()
			if r := push(uaid); r.StatusCode != http.StatusCreated {
				t.Errorf("after Retry-After: %d", r.StatusCode)
			}
			if got := testutil.ToFloat64(e.srv.quota.refusals.WithLabelValues(tc.kind)); got != 2 {
				t.Errorf("pushlog_ingest_quota_refusals_total{kind=%q} = %v, want 2", tc.kind, got)
			}
			if got := testutil.ToFloat64(e.srv.met.counter(http.StatusTooManyRequests, errnoTooManyRequests)); got != 2 {
				t.Errorf("requests{429,129} = %v, want 2", got)
			}
			n, err := testutil.GatherAndCount(reg, "pushlog_ingest_quota_sender_refusals_total", "pushlog_ingest_quota_entries")
			if err != nil || n < 2 {
				t.Errorf("quota series: %d, %v", n, err)
			}
		})
	}
}

// TestQuotaPrivateExempt: loopback and private peers are not metered by
// address unless LimitPrivateAddresses.
func TestQuotaPrivateExempt(t *testing.T) {
	for _, limit := range []bool{false, true} {
		e := newEnv(t, func(c *Config) {
			c.Quota = QuotaConfig{AddressRate: 0.001, AddressBurst: 1, LimitPrivateAddresses: limit}
			c.Now = func() time.Time { return quotaEpoch }
		})
		refused := 0
		for range 3 {
			req := map[string]string{"TTL": "60"}
			rr := e.doFrom("127.0.0.1:5000", e.endpoint(schema.NewUAID(), testChannel, nil), req)
			if rr.Code == http.StatusTooManyRequests {
				refused++
			}
		}
		if want := map[bool]int{false: 0, true: 2}[limit]; refused != want {
			t.Errorf("LimitPrivateAddresses %v: %d of 3 loopback pushes refused, want %d", limit, refused, want)
		}
	}
}

func TestQuotaConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  QuotaConfig
		ok   bool
	}{
		{"defaults", QuotaConfig{}, true},
		{"off", QuotaConfig{VAPIDRate: -1, SubscriptionRate: -1, AddressRate: -1}, true},
		{"negative burst", QuotaConfig{VAPIDBurst: -1}, false},
		{"tiny table", QuotaConfig{Entries: 3}, false},
	}
	for _, tc := range tests {
		c := tc.cfg
		err := c.validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.name == "defaults" && (c.VAPIDRate != DefaultQuotaVAPIDRate || c.SubscriptionBurst != DefaultQuotaSubscriptionBurst || c.Entries != DefaultQuotaEntries) {
			t.Errorf("defaults not filled: %+v", c)
		}
	}
}

// doFrom sends a bodiless push from the peer address remote.
func (e *env) doFrom(remote, path string, hdr map[string]string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, nil)
	req.RemoteAddr = remote
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rr := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rr, req)
	return rr
}

// BenchmarkQuotaCheck is the quotas' cost per push (three buckets).
//
//	go test ./ingest -run x -bench QuotaCheck
func BenchmarkQuotaCheck(b *testing.B) {
	q := newQuotas(QuotaConfig{VAPIDRate: 1e9, VAPIDBurst: 1e9, SubscriptionRate: 1e9, SubscriptionBurst: 1e9, Entries: DefaultQuotaEntries})
	vk := key(1)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			q.check(pushQuota{vapid: &vk, sub: quotaKey{byte(i), byte(i >> 8), 3}}, quotaEpoch)
		}
	})
}
