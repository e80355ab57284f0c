package ingest

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// withReceipts turns receipts on, following a statusFeed of the cluster at
// addrs that runs until the test ends.
func withReceipts(t *testing.T, addrs []string) func(*Config) {
	feed := &statusFeed{msgs: map[schema.MessageKey]schema.MessageStatus{}}
	go feed.run(t.Context(), addrs)
	return func(c *Config) {
		c.Receipts = ReceiptsConfig{Feed: feed, Idle: 2 * time.Second, SubsPerSender: 3}
	}
}

// statusFeed is the test's StatusFeed: the messages and acks topics folded
// with schema.MessageStatus, what projector.StatusTable does in a process
// (ingest's tests may not import another role).
type statusFeed struct {
	mu        sync.Mutex
	msgs      map[schema.MessageKey]schema.MessageStatus
	followers []func(schema.StatusChange)
}

func (f *statusFeed) Follow(fn func(schema.StatusChange)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.followers = append(f.followers, fn)
}

func (f *statusFeed) apply(r *kgo.Record) {
	ev, err := schema.Decode(r)
	if err != nil {
		return
	}
	key, ok := schema.MessageKeyOf(r.Partition, r.Offset, ev)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	before := f.msgs[key]
	after := before
	after.Apply(ev)
	f.msgs[key] = after
	c := schema.StatusChange{Key: key, Before: before, After: after}
	if a, ok := schema.AcceptedOf(ev); ok {
		c.Accepted = &a
	}
	for _, fn := range f.followers {
		fn(c)
	}
}

func (f *statusFeed) run(ctx context.Context, addrs []string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(schema.TopicMessages, schema.TopicAcks),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(f.apply)
	}
}

// newReceiptEnv is an env whose receipts are on (the fold is not running).
func newReceiptEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, cluster: newCluster(t, kfake.SeedTopics(testPartitions, schema.TopicAcks)), sealer: newSealer(t), vapid: newTestVAPID(t)}
	e.client = newProducer(t, e.cluster.ListenAddrs())
	cfg := Config{PublicURL: testPublicURL, Sealer: e.sealer, Producer: e.client, Partitions: testPartitions, Logger: quietLogger()}
	withReceipts(t, e.cluster.ListenAddrs())(&cfg)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	return e
}

func receiptLink(t *testing.T, h http.Header) string {
	t.Helper()
	l := h.Get("Link")
	if !strings.HasSuffix(l, `>; rel="urn:ietf:params:push:receipt"`) || !strings.HasPrefix(l, "<"+testPublicURL+"/r/") {
		t.Fatalf("Link %q is not a receipt subscription link", l)
	}
	return strings.TrimSuffix(strings.TrimPrefix(l, "<"), `>; rel="urn:ietf:params:push:receipt"`)
}

func TestReceiptRequests(t *testing.T) {
	e := newReceiptEnv(t)
	other := newTestVAPID(t)
	v1 := e.endpoint(testUAID, testChannel, nil)
	v2 := e.endpoint(testUAID, testChannel, e.vapid.keyHash())

	rr := e.do(http.MethodPost, "/receipts", nil, nil)
	if rr.Code != http.StatusCreated || rr.Header().Get("Location") != receiptLink(t, rr.Header()) {
		t.Fatalf("POST /receipts = %d %v", rr.Code, rr.Header())
	}
	open := rr.Header().Get("Location")
	rr = e.do(http.MethodPost, "/receipts", map[string]string{"Authorization": e.vapid.header(t, testPublicURL)}, nil)
	if rr.Code != http.StatusCreated {
		t.Fatalf("POST /receipts with VAPID = %d %s", rr.Code, rr.Body)
	}
	bound := rr.Header().Get("Location")
	forged := testPublicURL + "/r/" + strings.Repeat("A", 60)

	for _, tc := range []struct {
		name      string
		path      string
		hdr       map[string]string
		status    int
		errno     int
		link      string // expected Link target; "new" for a fresh one
		wantEvent bool
	}{
		{"no receipt asked", v1, map[string]string{"TTL": "60"}, 201, 0, "", false},
		{"respond-async makes one", v1, map[string]string{"TTL": "60", "Prefer": "wait=5, respond-async"}, 202, 0, "new", true},
		{"respond-async with VAPID: the key's own", v2, map[string]string{"TTL": "60", "Prefer": "respond-async", "Authorization": e.vapid.header(t, testPublicURL)}, 202, 0, "key", true},
		{"push-receipt reused", v1, map[string]string{"TTL": "60", "Push-Receipt": open}, 202, 0, open, true},
		{"relative push-receipt", v1, map[string]string{"TTL": "60", "Push-Receipt": strings.TrimPrefix(open, testPublicURL)}, 202, 0, open, true},
		{"key bound, same key", v2, map[string]string{"TTL": "60", "Push-Receipt": bound, "Authorization": e.vapid.header(t, testPublicURL)}, 202, 0, bound, true},
		{"key bound, no VAPID", v1, map[string]string{"TTL": "60", "Push-Receipt": bound}, 403, 131, "", false},
		{"key bound, other key", v1, map[string]string{"TTL": "60", "Push-Receipt": bound, "Authorization": other.header(t, testPublicURL)}, 403, 131, "", false},
		{"forged", v1, map[string]string{"TTL": "60", "Push-Receipt": forged}, 400, 131, "", false},
		{"foreign origin", v1, map[string]string{"TTL": "60", "Push-Receipt": "https://evil.example/r/" + strings.TrimPrefix(open, testPublicURL+"/r/")}, 400, 131, "", false},
		{"endpoint token is no receipt", v1, map[string]string{"TTL": "60", "Push-Receipt": testPublicURL + "/r/" + strings.TrimPrefix(v1, "/wpush/v1/")}, 400, 131, "", false},
		{"too long", v1, map[string]string{"TTL": "60", "Push-Receipt": testPublicURL + "/r/" + strings.Repeat("A", 600)}, 400, 131, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := e.do(http.MethodPost, tc.path, tc.hdr, nil)
			if rr.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rr.Code, tc.status, rr.Body)
			}
			if tc.errno != 0 {
				if b := errBody(t, rr); b.Errno != tc.errno {
					t.Fatalf("errno %d, want %d", b.Errno, tc.errno)
				}
				return
			}
			if tc.link == "" {
				if rr.Header().Get("Link") != "" {
					t.Fatalf("unexpected Link %q", rr.Header().Get("Link"))
				}
				return
			}
			got := receiptLink(t, rr.Header())
			if pa := rr.Header().Get("Preference-Applied"); (pa == "respond-async") != (tc.hdr["Prefer"] != "") {
				t.Fatalf("Preference-Applied %q with Prefer %q", pa, tc.hdr["Prefer"])
			}
			if tc.link == "key" {
				// Deterministic per key, bound to it: the same URI again.
				again := e.do(http.MethodPost, tc.path, tc.hdr, nil)
				if l := receiptLink(t, again.Header()); l != got {
					t.Fatalf("second respond-async push: Link %q, want %q", l, got)
				}
				sub, err := e.sealer.OpenReceiptSub(strings.TrimPrefix(got, testPublicURL+"/r/"))
				if err != nil || string(sub.KeyHash) != string(e.vapid.keyHash()) {
					t.Fatalf("key's subscription %+v (%v) not bound to the key", sub, err)
				}
			} else if tc.link != "new" && got != tc.link {
				t.Fatalf("Link %q, want %q", got, tc.link)
			}
			m := e.openLocation(rr.Header().Get("Location"))
			_, ev := readBack(t, e.cluster.ListenAddrs(), m.Partition, m.Offset)
			sub, err := e.sealer.OpenReceiptSub(strings.TrimPrefix(got, testPublicURL+"/r/"))
			if err != nil || string(ev.GetMessageAccepted().GetReceiptSub()) != string(sub.ID[:]) {
				t.Fatalf("event receipt_sub %x, want %x (%v)", ev.GetMessageAccepted().GetReceiptSub(), sub.ID, err)
			}
		})
	}
	t.Run("per-sender bound", func(t *testing.T) {
		// SubsPerSender is 3 and respond-async above made one from this
		// address, POST two: the next is 429.
		for i := range 3 {
			rr := e.do(http.MethodPost, "/receipts", nil, nil)
			if i < 1 && rr.Code != 201 || i == 2 && rr.Code != http.StatusTooManyRequests {
				t.Fatalf("POST %d = %d %s", i, rr.Code, rr.Body)
			}
		}
	})
	t.Run("GET forged", func(t *testing.T) {
		rr := e.do(http.MethodGet, "/r/"+strings.Repeat("B", 60), nil, nil)
		if rr.Code != 404 || errBody(t, rr).Errno != 131 {
			t.Fatalf("GET forged = %d %s", rr.Code, rr.Body)
		}
		rr = e.do(http.MethodGet, strings.TrimPrefix(bound, testPublicURL), nil, nil)
		if rr.Code != 401 {
			t.Fatalf("GET key-bound without VAPID = %d %s", rr.Code, rr.Body)
		}
	})
}

func TestReceiptsDisabled(t *testing.T) {
	e := newEnv(t)
	for _, rr := range []*httptest.ResponseRecorder{
		e.do(http.MethodPost, "/receipts", nil, nil),
		e.do(http.MethodPost, e.endpoint(testUAID, testChannel, nil), map[string]string{"TTL": "1", "Prefer": "respond-async"}, nil),
		e.do(http.MethodGet, "/r/x", nil, nil),
	} {
		if rr.Code != http.StatusNotImplemented || errBody(t, rr).Errno != 131 {
			t.Fatalf("disabled receipts: %d %s", rr.Code, rr.Body)
		}
	}
}

func TestReceiptFold(t *testing.T) {
	sub := [16]byte{1}
	accepted := func(p int32, o int64, withSub bool) (*kgo.Record, *pb.Event) {
		ev := schema.NewEvent(testUAID, time.Now())
		m := &pb.MessageAccepted{ChannelId: testChannel, TtlS: 60}
		if withSub {
			m.ReceiptSub = sub[:]
		}
		ev.Body = &pb.Event_MessageAccepted{MessageAccepted: m}
		return &kgo.Record{Topic: "m", Partition: p, Offset: o}, ev
	}
	ref := func(p int32, o int64) *pb.MessageRef { return &pb.MessageRef{Partition: p, Offset: o} }
	type step struct {
		accept  *[2]int64 // partition, offset
		noSub   bool
		outcome *pb.Event
	}
	ack := func(p int32, o int64) *pb.Event {
		return &pb.Event{TimeMs: 5, Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: ref(p, o), Code: 100}}}
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  []string
		// pending: messages awaiting their receipt. An outcome that
		// overtook its message is held by the status it folds into (the
		// table GET /m/{id} answers from), never by the receipts.
		pending int
	}{
		{"ack after accept", []step{{accept: &[2]int64{0, 1}}, {outcome: ack(0, 1)}}, []string{"acked"}, 0},
		{"ack before accept", []step{{outcome: ack(0, 1)}, {accept: &[2]int64{0, 1}}}, []string{"acked"}, 0},
		{"no receipt asked", []step{{accept: &[2]int64{0, 1}, noSub: true}, {outcome: ack(0, 1)}}, nil, 0},
		// Acks of read messages that asked for nothing cost no memory:
		// only outcomes that overtook their message are held.
		{"no receipt asked, ack first", []step{{outcome: ack(0, 1)}, {accept: &[2]int64{0, 1}, noSub: true}}, nil, 0},
		{"ack of an older message", []step{{accept: &[2]int64{0, 5}, noSub: true}, {outcome: ack(0, 3)}}, nil, 0},
		{"unacked gives none", []step{{accept: &[2]int64{0, 1}}, {outcome: ack(0, 2)}}, nil, 1},
		{"expired", []step{{accept: &[2]int64{1, 1}}, {outcome: &pb.Event{Body: &pb.Event_Expired{Expired: &pb.Expired{Msg: ref(1, 1)}}}}}, []string{"expired"}, 0},
		{"dropped", []step{{accept: &[2]int64{1, 1}}, {outcome: &pb.Event{Body: &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref(1, 1), Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED}}}}}, []string{"dropped:topic_replaced"}, 0},
		{"first outcome counts", []step{{accept: &[2]int64{0, 1}}, {outcome: ack(0, 1)}, {outcome: ack(0, 1)}}, []string{"acked"}, 0},
		// The status table refolds from its start if its reader
		// restarts: events it holds already send nothing again.
		{"refold", []step{{accept: &[2]int64{0, 1}}, {outcome: ack(0, 1)}, {accept: &[2]int64{0, 1}}, {outcome: ack(0, 1)}}, []string{"acked"}, 0},
		{"refold, ack first", []step{{outcome: ack(0, 1)}, {accept: &[2]int64{0, 1}}, {outcome: ack(0, 1)}, {accept: &[2]int64{0, 1}}}, []string{"acked"}, 0},
		{"refold of a pending message", []step{{accept: &[2]int64{0, 1}}, {accept: &[2]int64{0, 1}}, {outcome: ack(0, 1)}}, []string{"acked"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			met, _ := newReceiptMetrics(nil, func() float64 { return 0 })
			cfg := ReceiptsConfig{}
			cfg.withDefaults()
			f := newReceiptFold(cfg, time.Now)
			f.met = met
			feed := &statusFeed{msgs: map[schema.MessageKey]schema.MessageStatus{}}
			feed.Follow(f.follow)
			for _, s := range tc.steps {
				ev := s.outcome
				var p int32
				var o int64
				if s.accept != nil {
					_, ev = accepted(int32(s.accept[0]), s.accept[1], !s.noSub)
					p, o = int32(s.accept[0]), s.accept[1]
				}
				ev.Uaid = testUAID
				rec, err := schema.Record(ev)
				if err != nil {
					t.Fatal(err)
				}
				rec.Partition, rec.Offset = p, o
				feed.apply(rec)
			}
			got, _ := f.since(sub, 0, 0)
			var outs []string
			for _, r := range got {
				o := r.Outcome
				if r.Reason != "" {
					o += ":" + r.Reason
				}
				outs = append(outs, o)
			}
			if strings.Join(outs, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("receipts %v, want %v", outs, tc.want)
			}
			if f.pendingLen() != tc.pending {
				t.Fatalf("%d messages awaiting their receipt, want %d", f.pendingLen(), tc.pending)
			}
		})
	}
	t.Run("buffer bound", func(t *testing.T) {
		met, _ := newReceiptMetrics(nil, func() float64 { return 0 })
		cfg := ReceiptsConfig{Buffer: 2}
		cfg.withDefaults()
		f := newReceiptFold(cfg, time.Now)
		f.met = met
		for o := range int64(5) {
			rec, ev := accepted(0, o, true)
			k := schema.MessageKey{Partition: rec.Partition, Offset: rec.Offset}
			var st schema.MessageStatus
			st.Apply(ev)
			a, _ := schema.AcceptedOf(ev)
			f.follow(schema.StatusChange{Key: k, Accepted: &a, After: st})
			done := st
			done.Apply(&pb.Event{TimeMs: o, Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: ref(0, o)}}})
			f.follow(schema.StatusChange{Key: k, Before: st, After: done})
		}
		got, _ := f.since(sub, 0, 0)
		if len(got) != 2 || got[0].TimeMs != 3 || got[1].TimeMs != 4 {
			t.Fatalf("kept %+v, want the newest 2", got)
		}
		if got, _ := f.since(sub, 0, 4); len(got) != 1 {
			t.Fatalf("since time 4: %d receipts, want 1", len(got))
		}
	})
}

func TestNegotiateReceipts(t *testing.T) {
	for _, tc := range []struct {
		accept string
		h2     bool
		want   receiptMode
	}{
		{"", true, modePush},
		{"", false, modeSSE},
		{"*/*", true, modePush},
		{"text/event-stream", true, modeSSE},
		{"application/x-ndjson", false, modeNDJSON},
		{"text/html, application/x-ndjson;q=0.9", true, modeNDJSON},
		{";;;", false, modeSSE},
	} {
		if got := negotiateReceipts(tc.accept, tc.h2); got != tc.want {
			t.Errorf("negotiate(%q, h2=%v) = %v, want %v", tc.accept, tc.h2, got, tc.want)
		}
	}
	for v, want := range map[string]bool{"respond-async": true, "wait=10, Respond-Async": true, "return=minimal": false,
		"respond-async; foo=bar": true, "": false, "respond-asyncx": false} {
		if got := preferRespondAsync([]string{v}); got != want {
			t.Errorf("preferRespondAsync(%q) = %v", v, got)
		}
	}
}

// TestReceiptStream: a push with a receipt, its Acked event in the acks
// topic, and the receipt arrives as NDJSON on a GET served by Run (HTTP/1.1,
// as curl asks), then again after a reconnect.
func TestReceiptStream(t *testing.T) {
	e := newReceiptEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx, ln, nil) }()
	defer func() { cancel(); <-done }()

	rr := e.do(http.MethodPost, e.endpoint(testUAID, testChannel, nil), map[string]string{"TTL": "60", "Prefer": "respond-async"}, []byte{})
	if rr.Code != http.StatusAccepted {
		t.Fatalf("push = %d %s", rr.Code, rr.Body)
	}
	link := receiptLink(t, rr.Header())
	loc := rr.Header().Get("Location")
	m := e.openLocation(loc)
	ack := schema.NewEvent(testUAID, time.Now())
	ack.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{Partition: m.Partition, Offset: m.Offset, ChannelId: testChannel}, Code: 100}}
	rec, err := schema.DefaultNames().Record(ack)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// One stream at a time on this node (MaxStreams 1): a second GET while
	// one is open is 503 errno 201.
	e.srv.receipts.cfg.MaxStreams = 1
	held, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/r/"+strings.TrimPrefix(link, testPublicURL+"/r/"), nil)
	held.Header.Set("Accept", "text/event-stream")
	hresp, err := http.DefaultClient.Do(held)
	if err != nil || hresp.StatusCode != 200 {
		t.Fatalf("held GET: %v %v", hresp, err)
	}
	second, err := http.Get("http://" + ln.Addr().String() + strings.TrimPrefix(link, testPublicURL))
	if err != nil || second.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second GET past MaxStreams = %v, %v; want 503", second, err)
	}
	second.Body.Close()
	hresp.Body.Close()
	for e.srv.receipts.streamsOpen() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	e.srv.receipts.cfg.MaxStreams = DefaultReceiptStreams

	for range 2 { // the second GET is a reconnect: the receipt is kept
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+strings.TrimPrefix(link, testPublicURL), nil)
		req.Header.Set("Accept", "application/x-ndjson")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("GET = %d %v", resp.StatusCode, resp.Header)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		resp.Body.Close()
		if err != nil {
			t.Fatalf("no receipt line: %v", err)
		}
		var r Receipt
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Outcome != "acked" || r.Message != loc || r.Code != 100 {
			t.Fatalf("receipt %q (%v), want acked for %s", line, err, loc)
		}
	}
}

// FuzzReceiptHeaders: Prefer, Accept, Push-Receipt and the resume cursor
// never panic, and only a URI this service sealed opens.
func FuzzReceiptHeaders(f *testing.F) {
	for _, s := range []string{"respond-async", "wait=1,respond-async;x", "text/event-stream", testPublicURL + "/r/abc", "/r/", "12345", "-1"} {
		f.Add(s)
	}
	sealer := newSealer(f)
	srv := &Server{base: testPublicURL, cfg: Config{Sealer: sealer}}
	met, _ := newReceiptMetrics(nil, func() float64 { return 0 })
	srv.receipts = &receipts{met: met}
	f.Fuzz(func(t *testing.T, v string) {
		preferRespondAsync([]string{v})
		negotiateReceipts(v, true)
		if _, aerr := srv.openReceiptURI(v); aerr == nil {
			t.Fatalf("%q opened as a receipt subscription", v)
		}
		req, _ := http.NewRequest(http.MethodGet, "/r/x", nil)
		req.Header.Set("Last-Event-ID", v)
		receiptCursor(req)
	})
}

// TestReceiptMetrics: the receipt series register and gather on a pedantic
// registry beside the push API's.
func TestReceiptMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e := newEnv(t, func(c *Config) { c.Metrics = reg; withReceipts(t, []string{"127.0.0.1:1"})(c) })
	e.do(http.MethodPost, "/receipts", nil, nil)
	e.do(http.MethodGet, "/r/forged", nil, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, name := range []string{"pushlog_ingest_receipt_subscriptions_created_total", "pushlog_ingest_receipt_refused_total",
		"pushlog_ingest_receipt_streams", "pushlog_ingest_receipt_pending"} {
		if !seen[name] {
			t.Errorf("%s not gathered", name)
		}
	}
}

// TestReceiptSenderWindowsFull: a flood of fresh senders filling the
// window table must not lock out the next sender (it is admitted
// uncounted); a known sender still meets its own bound.
func TestReceiptSenderWindowsFull(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r, err := newReceipts(ReceiptsConfig{SubsPerSender: 2}, prometheus.NewRegistry(), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true, false} {
		if got := r.allowCreate("k:known", now); got != want {
			t.Fatalf("a sender's own bound (2): creation %d admitted %v, want %v", i, got, want)
		}
	}
	for i := len(r.senders); i < receiptSenderWindowEntries; i++ {
		r.senders["a:"+time.Duration(i).String()] = &senderWindow{start: now}
	}
	if len(r.senders) < receiptSenderWindowEntries {
		t.Fatalf("table not full: %d", len(r.senders))
	}
	if !r.allowCreate("k:newcomer", now.Add(time.Minute)) {
		t.Fatal("a new sender refused because others filled the table")
	}
	if r.allowCreate("k:known", now.Add(time.Minute)) {
		t.Fatal("a known sender past its bound admitted")
	}
}

// TestReceiptStreamsPerSubscription: one subscription holds at most
// receiptStreamsPerSub streams, so its holder cannot take every slot of
// the node; other subscriptions still get theirs; released slots return.
func TestReceiptStreamsPerSubscription(t *testing.T) {
	r, err := newReceipts(ReceiptsConfig{MaxStreams: receiptStreamsPerSub + 1}, prometheus.NewRegistry(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	hog, other := [16]byte{1}, [16]byte{2}
	for i := range receiptStreamsPerSub {
		if ok, _ := r.acquireStream(hog); !ok {
			t.Fatalf("stream %d of one subscription refused", i)
		}
	}
	if ok, perSub := r.acquireStream(hog); ok || !perSub {
		t.Fatalf("past the per-subscription bound: ok %v perSub %v, want refused by it", ok, perSub)
	}
	if ok, _ := r.acquireStream(other); !ok {
		t.Fatal("another subscription refused")
	}
	if ok, perSub := r.acquireStream([16]byte{3}); ok || perSub {
		t.Fatalf("past MaxStreams: ok %v perSub %v, want refused by the node bound", ok, perSub)
	}
	r.releaseStream(hog)
	if ok, _ := r.acquireStream(hog); !ok {
		t.Fatal("a released slot was not returned")
	}
	for range receiptStreamsPerSub {
		r.releaseStream(hog)
	}
	r.releaseStream(other)
	if r.streamsOpen() != 0 || len(r.subStreams) != 0 {
		t.Fatalf("after release: %d streams, %d subscriptions tracked", r.streamsOpen(), len(r.subStreams))
	}
}

func TestReceiptSender(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, remote, xff string
		trusted           []netip.Prefix
		want              string
	}{
		{"peer", "203.0.113.7:4711", "", nil, "a:203.0.113.7"},
		{"untrusted proxy header ignored", "203.0.113.7:4711", "198.51.100.1", nil, "a:203.0.113.7"},
		{"behind a trusted proxy", "10.1.2.3:4711", "198.51.100.1", proxies, "a:198.51.100.1"},
		{"IPv6 by its /64", "[2001:db8:1:2:3:4:5:6]:4711", "", nil, "a:2001:db8:1:2::"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/receipts", nil)
			req.RemoteAddr = tc.remote
			if tc.xff != "" {
				req.Header.Set("X-Forwarded-For", tc.xff)
			}
			if got := receiptSender(authResult{}, req, tc.trusted); got != tc.want {
				t.Fatalf("receiptSender = %q, want %q", got, tc.want)
			}
		})
	}
}
