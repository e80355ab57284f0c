package ingest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushlog/pushlog/schema"
)

func TestDedupIndex(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	d := newDedupIndex(3, func() time.Time { return now })
	k := func(i byte) dedupKey { return dedupKeyOf(testUAID, testChannel, []byte{i}) }

	e, done, owner := d.claim(k(1), 3600)
	if !owner || done == nil {
		t.Fatal("first claim is not the owner")
	}
	if e2, done2, owner2 := d.claim(k(1), 3600); owner2 || e2 != e || done2 == nil {
		t.Fatal("second claim of a pending key is not a waiter on it")
	}
	d.settle(k(1), e, 2, 42, nil)
	select {
	case <-done:
	default:
		t.Fatal("settle did not release waiters")
	}
	if ok, p, o, ttl := d.result(e); !ok || p != 2 || o != 42 || ttl != 3600 {
		t.Fatalf("result %v %d %d %d", ok, p, o, ttl)
	}
	if _, done3, owner3 := d.claim(k(1), 3600); owner3 || done3 != nil {
		t.Fatal("a settled key is not answered from the index")
	}

	// A failed append is forgotten: the next claim owns it again.
	e, _, _ = d.claim(k(2), 60)
	d.settle(k(2), e, -1, -1, errors.New("not written"))
	if _, _, owner := d.claim(k(2), 60); !owner {
		t.Fatal("a failed append was remembered")
	}

	// Expiry: max(TTL, dedupMinWindow) after settling.
	e, _, _ = d.claim(k(3), 0)
	d.settle(k(3), e, 0, 1, nil)
	now = now.Add(dedupMinWindow - time.Second)
	if _, _, owner := d.claim(k(3), 0); owner {
		t.Fatal("TTL 0 push forgotten within the minimum window")
	}
	now = now.Add(2 * time.Second)
	if _, _, owner := d.claim(k(3), 0); !owner {
		t.Fatal("expired push still answered")
	}

	// Bounded: never more than max entries, oldest evicted first.
	for i := byte(10); i < 50; i++ {
		d.claim(k(i), 3600)
		if n := d.len(); n > 3 {
			t.Fatalf("%d entries, bound 3", n)
		}
	}
	if d.evictions.Load() == 0 {
		t.Fatal("no evictions counted")
	}
	if _, _, owner := d.claim(k(49), 3600); owner {
		t.Fatal("the newest entry was evicted")
	}
}

// TestRetryNotDuplicated (issue 11 finding 6): a push whose append outlives
// ProduceTimeout gets 503 but is written later; the sender's retries get
// 503 while it is in flight, then 201 with the original's Location, and
// exactly one message is in the log.
func TestRetryNotDuplicated(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ProduceTimeout = 300 * time.Millisecond })
	path := e.endpoint(testUAID, testChannel, nil)
	hdr := map[string]string{"TTL": "600", "Content-Encoding": "aes128gcm"}
	if rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
		t.Fatalf("warm-up: %d %s", rr.Code, rr.Body)
	}
	release := make(chan struct{})
	var slept atomic.Bool
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slept.CompareAndSwap(false, true) {
			e.cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false // then the cluster writes it as usual
	})
	body := randomBody(t, 200)
	rr := e.do(http.MethodPost, path, hdr, body)
	if rr.Code != http.StatusServiceUnavailable || !strings.Contains(errBody(t, rr).Message, "may have been written") {
		t.Fatalf("slow append: %d %s", rr.Code, rr.Body)
	}
	calls := e.srv.produceCalls.Load()
	rr = e.do(http.MethodPost, path, hdr, body)
	if rr.Code != http.StatusServiceUnavailable || rr.Header().Get("Retry-After") != "1" {
		t.Fatalf("retry while the first is in flight: %d %s", rr.Code, rr.Body)
	}
	if e.srv.produceCalls.Load() != calls {
		t.Fatal("a retry of an in-flight push was appended again")
	}
	close(release)
	var loc string
	deadline := time.Now().Add(10 * time.Second)
	for loc == "" {
		rr = e.do(http.MethodPost, path, hdr, body)
		switch {
		case rr.Code == http.StatusCreated:
			loc = rr.Header().Get("Location")
		case rr.Code != http.StatusServiceUnavailable || time.Now().After(deadline):
			t.Fatalf("retry after the append landed: %d %s", rr.Code, rr.Body)
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	if rr.Header().Get("TTL") != "600" {
		t.Errorf("TTL %q", rr.Header().Get("TTL"))
	}
	if again := e.do(http.MethodPost, path, hdr, body); again.Code != http.StatusCreated || again.Header().Get("Location") != loc {
		t.Fatalf("second retry: %d Location %q, want %q", again.Code, again.Header().Get("Location"), loc)
	}
	if e.srv.produceCalls.Load() != calls {
		t.Fatal("a retry was appended")
	}
	if e.srv.dedup.hits.Load() < 2 {
		t.Errorf("hits %d", e.srv.dedup.hits.Load())
	}
	m := e.openLocation(loc)
	if n := e.countPayload(m.Partition, body); n != 1 {
		t.Fatalf("%d copies of the message in the log, want 1", n)
	}
	_, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset)
	if !bytes.Equal(ev.GetMessageAccepted().GetPayload(), body) {
		t.Fatal("Location does not point at the message")
	}
}

// TestRetryWaitsForInFlight: a retry that arrives while the original is
// still being appended (within ProduceTimeout) gets the same 201.
func TestRetryWaitsForInFlight(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ProduceTimeout = 5 * time.Second })
	path := e.endpoint(testUAID, testChannel, nil)
	hdr := map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"}
	if rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
		t.Fatalf("warm-up: %d", rr.Code)
	}
	release := make(chan struct{})
	var slept atomic.Bool
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slept.CompareAndSwap(false, true) {
			e.cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	body := randomBody(t, 100)
	var wg sync.WaitGroup
	locs := make([]string, 2)
	first := func(i int) {
		defer wg.Done()
		rr := e.do(http.MethodPost, path, hdr, body)
		if rr.Code != http.StatusCreated {
			t.Errorf("push %d: %d %s", i, rr.Code, rr.Body)
		}
		locs[i] = rr.Header().Get("Location")
	}
	wg.Add(1)
	go first(0)
	for e.srv.dedup.len() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	wg.Add(1)
	go first(1)
	for e.srv.dedup.waits.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	if locs[0] == "" || locs[0] != locs[1] {
		t.Fatalf("Locations %q and %q", locs[0], locs[1])
	}
	if got := e.srv.produceCalls.Load(); got != 2 { // warm-up and one append
		t.Fatalf("%d produces, want 2", got)
	}
}

// TestDedupScope: only a byte-identical body on the same subscription is a
// retry; bodiless pushes are never deduplicated.
func TestDedupScope(t *testing.T) {
	e := newEnv(t)
	const other = "11111111-1111-4111-8111-111111111111"
	enc := map[string]string{"TTL": "60", "Content-Encoding": "aes128gcm"}
	body := randomBody(t, 64)
	push := func(channel string, hdr map[string]string, b []byte) string {
		t.Helper()
		rr := e.do(http.MethodPost, e.endpoint(testUAID, channel, nil), hdr, b)
		if rr.Code != http.StatusCreated {
			t.Fatalf("push: %d %s", rr.Code, rr.Body)
		}
		return rr.Header().Get("Location")
	}
	a := push(testChannel, enc, body)
	if b := push(testChannel, enc, body); b != a {
		t.Error("identical push not recognised")
	}
	if b := push(other, enc, body); b == a {
		t.Error("same body on another channel deduplicated")
	}
	changed := append([]byte(nil), body...)
	changed[0] ^= 1
	if b := push(testChannel, enc, changed); b == a {
		t.Error("another body deduplicated")
	}
	x := push(testChannel, map[string]string{"TTL": "60"}, nil)
	if y := push(testChannel, map[string]string{"TTL": "60"}, nil); x == y {
		t.Error("bodiless push deduplicated")
	}
}

// countPayload counts MessageAccepted events carrying body in a partition,
// up to a marker appended now.
func (e *env) countPayload(partition int32, body []byte) int {
	e.t.Helper()
	rr := e.do(http.MethodPost, e.endpoint(testUAID, testChannel, nil), map[string]string{"TTL": "60"}, nil)
	if rr.Code != http.StatusCreated {
		e.t.Fatalf("marker: %d", rr.Code)
	}
	end := e.openLocation(rr.Header().Get("Location")).Offset
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.cluster.ListenAddrs()...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		schema.TopicMessages: {partition: kgo.NewOffset().AtStart()},
	}))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			e.t.Fatalf("partition %d not read to %d: %v", partition, end, err)
		}
		for _, r := range fs.Records() {
			ev, err := schema.Decode(r)
			if err != nil {
				e.t.Fatal(err)
			}
			if bytes.Equal(ev.GetMessageAccepted().GetPayload(), body) {
				n++
			}
			if r.Offset >= end {
				return n
			}
		}
	}
}

// TestRetryAcrossOutage: pushes whose appends fail while Kafka refuses
// produces, retried by their senders until Kafka is back, are each in the
// log exactly once, whether kgo finally wrote the first attempt or not.
func TestRetryAcrossOutage(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.ProduceTimeout = 200 * time.Millisecond
		c.Breaker = BreakerConfig{FailureThreshold: 2, OpenTimeout: 100 * time.Millisecond}
	})
	path := e.endpoint(testUAID, testChannel, nil)
	hdr := map[string]string{"TTL": "600", "Content-Encoding": "aes128gcm"}
	if rr := e.do(http.MethodPost, path, map[string]string{"TTL": "60"}, nil); rr.Code != http.StatusCreated {
		t.Fatalf("warm-up: %d", rr.Code)
	}
	var failing atomic.Bool
	failing.Store(true)
	e.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.cluster.KeepControl()
		if failing.Load() {
			return nil, errors.New("injected produce failure"), true
		}
		return nil, nil, false
	})
	bodies := [][]byte{randomBody(t, 50), randomBody(t, 60), randomBody(t, 70)}
	for _, b := range bodies {
		if rr := e.do(http.MethodPost, path, hdr, b); rr.Code != http.StatusServiceUnavailable {
			t.Fatalf("push while Kafka fails: %d %s", rr.Code, rr.Body)
		}
	}
	failing.Store(false)
	locs := make([]string, len(bodies))
	deadline := time.Now().Add(20 * time.Second)
	for i, b := range bodies {
		for locs[i] == "" {
			rr := e.do(http.MethodPost, path, hdr, b)
			switch {
			case rr.Code == http.StatusCreated:
				locs[i] = rr.Header().Get("Location")
			case rr.Code != http.StatusServiceUnavailable || time.Now().After(deadline):
				t.Fatalf("retry %d: %d %s", i, rr.Code, rr.Body)
			default:
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	for i, b := range bodies {
		m := e.openLocation(locs[i])
		if n := e.countPayload(m.Partition, b); n != 1 {
			t.Errorf("push %d: %d copies in the log, want 1", i, n)
		}
	}
}

// TestDedupDeadSlotsDoNotEvictLive: entries forgotten after a failed (or
// refused) append leave slots in the queue; they must not evict live
// entries, and the queue stays bounded.
func TestDedupDeadSlotsDoNotEvictLive(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	const max = 1000
	d := newDedupIndex(max, func() time.Time { return now })
	k := func(i int) dedupKey { return dedupKeyOf(testUAID, testChannel, []byte(strconv.Itoa(i))) }
	e, _, _ := d.claim(k(-1), 3600)
	d.settle(k(-1), e, 0, 7, nil)
	for i := range 5 * max {
		f, _, owner := d.claim(k(i), 3600)
		if !owner {
			t.Fatalf("claim %d not owned", i)
		}
		d.settle(k(i), f, -1, -1, errNotProduced)
		if n := d.slots(); n > 2*max+1 {
			t.Fatalf("after %d refused claims the queue holds %d slots (bound %d)", i+1, n, 2*max+1)
		}
	}
	if !d.live(k(-1)) {
		t.Fatal("the written push was evicted by refused ones")
	}
	if n := d.evictions.Load(); n != 0 {
		t.Fatalf("%d evictions with one live entry", n)
	}
	// Live entries are still bounded and evicted oldest first.
	for i := range max {
		f, _, _ := d.claim(k(10*max+i), 3600)
		d.settle(k(10*max+i), f, 0, int64(i), nil)
	}
	if d.len() != max || d.live(k(-1)) || !d.live(k(10*max)) {
		t.Fatalf("len %d, oldest live %v, next live %v", d.len(), d.live(k(-1)), d.live(k(10*max)))
	}
}

// TestRefusedPushesKeepRetryIndex is the reviewer's reproduction: with an
// index of 1000, one written push and then 1000 pushes refused (breaker
// open, or too many appends waiting) must not cost the written push's
// retry its entry: the retry is answered with the original's Location.
func TestRefusedPushesKeepRetryIndex(t *testing.T) {
	tests := []struct {
		name   string
		refuse func(s *Server)
		allow  func(s *Server)
	}{
		{"breaker open", func(s *Server) {
			s.breaker.mu.Lock()
			s.breaker.open, s.breaker.lastProbe = true, s.now()
			s.breaker.mu.Unlock()
		}, func(s *Server) {
			s.breaker.mu.Lock()
			s.breaker.open = false
			s.breaker.mu.Unlock()
		}},
		{"overloaded", func(s *Server) { s.inFlight.Store(int64(s.cfg.MaxInFlight)) }, func(s *Server) { s.inFlight.Store(0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) {
				c.DedupEntries = 1000
				c.Breaker = BreakerConfig{OpenTimeout: time.Hour}
				c.Quota.SubscriptionRate, c.Quota.AddressRate = -1, -1 // not about quotas: 1000 pushes to one endpoint from one address
			})
			path := e.endpoint(testUAID, testChannel, nil)
			hdr := map[string]string{"TTL": "600", "Content-Encoding": "aes128gcm"}
			body := randomBody(t, 100)
			rr := e.do(http.MethodPost, path, hdr, body)
			if rr.Code != http.StatusCreated {
				t.Fatalf("push: %d %s", rr.Code, rr.Body)
			}
			loc := rr.Header().Get("Location")
			tc.refuse(e.srv)
			for i := range 1000 {
				if rr := e.do(http.MethodPost, path, hdr, randomBody(t, 100)); rr.Code != http.StatusServiceUnavailable {
					t.Fatalf("refused push %d: %d %s", i, rr.Code, rr.Body)
				}
			}
			// A retry of the written push is answered even while refusing.
			if rr := e.do(http.MethodPost, path, hdr, body); rr.Code != http.StatusCreated || rr.Header().Get("Location") != loc {
				t.Fatalf("retry while refusing: %d Location %q, want %q", rr.Code, rr.Header().Get("Location"), loc)
			}
			tc.allow(e.srv)
			calls := e.srv.produceCalls.Load()
			if rr := e.do(http.MethodPost, path, hdr, body); rr.Code != http.StatusCreated || rr.Header().Get("Location") != loc {
				t.Fatalf("retry: %d Location %q, want %q", rr.Code, rr.Header().Get("Location"), loc)
			}
			if e.srv.produceCalls.Load() != calls {
				t.Fatal("the retry was appended a second time")
			}
			if n := e.srv.dedup.slots(); n > 2 {
				t.Errorf("refused pushes left %d slots in the retry index", n)
			}
		})
	}
}
