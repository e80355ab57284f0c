package connector

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const testTimeout = 5 * time.Second

// fakeLink is an in-memory owner.
type fakeLink struct {
	mu        sync.Mutex
	known     map[string]bool
	chans     map[string][][16]byte // a known UAID's registered channels
	partial   bool                  // CheckUAID answers a partial list
	checkErr  error
	attachErr error
	checks    []string
	sessions  map[string]link.Session
	attaches  int
	detached  []link.Session
	acked     []*pb.MessageRef
	onAttach  func(uaid string, s link.Session) // delivers "stored" messages
}

func newFakeLink() *fakeLink {
	return &fakeLink{known: map[string]bool{}, sessions: map[string]link.Session{}}
}

func (f *fakeLink) CheckUAID(_ context.Context, u schema.UAID) (link.UAIDInfo, error) {
	uaid := u.String()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks = append(f.checks, uaid)
	if f.checkErr != nil {
		return link.UAIDInfo{}, f.checkErr
	}
	if !f.known[uaid] {
		return link.UAIDInfo{}, nil
	}
	return link.UAIDInfo{Valid: true, Channels: f.chans[uaid], Partial: f.partial}, nil
}

// addUAID makes uaid known with the given registered channels.
func (f *fakeLink) addUAID(uaid string, chids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.known[uaid] = true
	if f.chans == nil {
		f.chans = map[string][][16]byte{}
	}
	for _, ch := range chids {
		id, err := schema.ParseChannelID(ch)
		if err != nil {
			panic(err)
		}
		f.chans[uaid] = append(f.chans[uaid], id)
	}
}

func (f *fakeLink) Attach(_ context.Context, u schema.UAID, s link.Session) error {
	uaid := u.String()
	f.mu.Lock()
	if f.attachErr != nil {
		f.mu.Unlock()
		return f.attachErr
	}
	f.sessions[uaid] = s
	f.attaches++
	hook := f.onAttach
	f.mu.Unlock()
	if hook != nil {
		hook(uaid, s)
	}
	return nil
}

func (f *fakeLink) Detach(u schema.UAID, s link.Session) {
	uaid := u.String()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = append(f.detached, s)
	if f.sessions[uaid] == s {
		delete(f.sessions, uaid)
	}
}

func (f *fakeLink) Acked(_ schema.UAID, ref *pb.MessageRef) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acked = append(f.acked, ref)
}

func (f *fakeLink) session(t *testing.T, uaid string) link.Session {
	t.Helper()
	var s link.Session
	waitFor(t, "attach of "+uaid, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		s = f.sessions[uaid]
		return s != nil
	})
	return s
}

func (f *fakeLink) ackedRefs() []*pb.MessageRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.MessageRef(nil), f.acked...)
}

func (f *fakeLink) detachCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.detached)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type harness struct {
	t        *testing.T
	srv      *Server
	link     *fakeLink
	sealer   *schema.Sealer
	cluster  *kfake.Cluster
	consumer *kgo.Client
	http     *httptest.Server
	url      string
	seen     []*pb.Event
}

var allTopics = []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations, schema.TopicChannels, schema.TopicPresence}

func newHarness(t *testing.T, mod func(*Config), producerOpts ...kgo.Opt) *harness {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, allTopics...))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(cluster.Close)
	producer, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks())}, producerOpts...)...)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Cleanup(producer.Close)
	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.ConsumeTopics(schema.TopicAcks, schema.TopicRegistrations, schema.TopicPresence),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	t.Cleanup(consumer.Close)
	key := make([]byte, schema.KeySize)
	_, _ = rand.Read(key)
	sealer, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatalf("sealer: %v", err)
	}
	fl := newFakeLink()
	cfg := Config{
		NodeID:    "node-1",
		LinkAddr:  "127.0.0.1:7000",
		PublicURL: "https://push.example.test/",
		Sealer:    sealer,
		Producer:  producer,
		Link:      fl,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
	})
	return &harness{t: t, srv: srv, link: fl, sealer: sealer, cluster: cluster, consumer: consumer, http: hs,
		url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/"}
}

// dial opens a client socket asking for the push subprotocol.
func (h *harness) dial() *websocket.Conn {
	h.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}, HandshakeTimeout: testTimeout}
	c, resp, err := d.Dial(h.url, nil)
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	h.t.Cleanup(func() { c.Close() })
	return c
}

// hello dials and says hello with uaid ("" for none); returns the socket
// and the reply.
func (h *harness) hello(uaid string) (*websocket.Conn, map[string]any) {
	h.t.Helper()
	c := h.dial()
	msg := map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]string{}}
	if uaid != "" {
		msg["uaid"] = uaid
	}
	send(h.t, c, msg)
	reply := recv(h.t, c)
	if reply["messageType"] != "hello" || reply["status"] != 200.0 {
		h.t.Fatalf("hello reply: %v", reply)
	}
	return c, reply
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func recvRaw(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("got message type %d", typ)
	}
	return b
}

func recv(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	b := recvRaw(t, c)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return m
}

// expectClose reads until the server closes and checks the close code.
func expectClose(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		_, b, err := c.ReadMessage()
		if err == nil {
			t.Logf("message before close: %s", b)
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// poll reads every event written so far into h.seen.
func (h *harness) poll(wait time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	fs := h.consumer.PollFetches(ctx)
	n := 0
	fs.EachRecord(func(r *kgo.Record) {
		ev, err := schema.Decode(r)
		if err != nil {
			h.t.Errorf("decode %s record: %v", r.Topic, err)
			return
		}
		h.seen = append(h.seen, ev)
		n++
	})
	return n
}

// event waits for an event matching pred.
func (h *harness) event(what string, pred func(*pb.Event) bool) *pb.Event {
	h.t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		for _, ev := range h.seen {
			if pred(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no %s event among %d", what, len(h.seen))
		}
		h.poll(100 * time.Millisecond)
	}
}

// settle reads events until none arrive for a while, then returns those
// matching pred.
func (h *harness) settle(pred func(*pb.Event) bool) []*pb.Event {
	h.t.Helper()
	for h.poll(300*time.Millisecond) > 0 {
	}
	var out []*pb.Event
	for _, ev := range h.seen {
		if pred(ev) {
			out = append(out, ev)
		}
	}
	return out
}

func newChannelID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return schema.FormatChannelID(b)
}

// sealedVersion returns a message id for uaid/channel at offset.
func (h *harness) sealedVersion(uaid, chid string, offset int64) string {
	h.t.Helper()
	v, err := h.sealer.SealMessageID(schema.MessageID{UAID: uaid, ChannelID: chid, Partition: 0, Offset: offset})
	if err != nil {
		h.t.Fatalf("seal message id: %v", err)
	}
	return v
}

func newLocalListener() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
