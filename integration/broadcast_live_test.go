package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Live broadcasts (issue 13, point 2): a version changed by any source —
// `pushlog broadcast set`, the admin API on the ingest listener, or a
// Megaphone-compatible API the connectors poll — reaches every connected
// client subscribed to the id, on any node, within a second of the change
// being written (Megaphone: of the poll that sees it); a client not
// subscribed gets nothing; a restart keeps the table.

const (
	bcAdminToken     = "admin-token-for-the-tests-0123"
	bcMegaphoneToken = "megaphone-token-0123456789"
	bcWithin         = time.Second             // the bound on a change reaching clients
	bcMegaphonePoll  = 300 * time.Millisecond  // --megaphone-interval in these tests
	bcQuiet          = 1500 * time.Millisecond // how long "gets nothing" is watched
)

func TestBroadcastLiveEmbedded(t *testing.T) { runBroadcastLive(t, true) }

func TestBroadcastLiveKafka(t *testing.T) { runBroadcastLive(t, false) }

// runBroadcastLive: one node, every source, subscribed and not, a restart.
func runBroadcastLive(t *testing.T, embedded bool) {
	ctx := testContext(t, 3*time.Minute)
	mega := newBCMegaphone(t)
	embAddr := freePort(t)
	opts := serverOpts{Embedded: embedded, Env: []string{
		"PUSHLOG_BROADCASTS=a=v1,remote-settings/monitor_changes=\"1\"",
		"PUSHLOG_ADMIN_TOKEN=" + bcAdminToken,
		"PUSHLOG_MEGAPHONE_URL=" + mega.URL(),
		"PUSHLOG_MEGAPHONE_TOKEN=" + bcMegaphoneToken,
		"PUSHLOG_MEGAPHONE_INTERVAL=" + bcMegaphonePoll.String(),
	}}
	if embedded {
		opts.Env = append(opts.Env, "PUSHLOG_EMBEDDED_KAFKA_ADDR="+embAddr)
	}
	s := startServer(t, opts)
	cli := bcCLIEnv(t, embedded, embAddr, s.opts.Namespace)

	// hello answers only the ids whose version differs; unknown ids
	// under "errors".
	subA := bcDial(ctx, t, s.WSURL, map[string]string{"a": "v1", "remote-settings/monitor_changes": "\"0\"", "zz": "1"})
	subA.wantHello(map[string]any{"remote-settings/monitor_changes": "\"1\"", "errors": map[string]any{"zz": "Broadcast not found"}})
	// B subscribes after hello (broadcast_subscribe), up to date: no reply.
	subB := bcDial(ctx, t, s.WSURL, nil)
	subB.wantHello(map[string]any{})
	subB.send(map[string]any{"messageType": "broadcast_subscribe", "broadcasts": map[string]string{"remote-settings/monitor_changes": "\"1\""}})
	none := bcDial(ctx, t, s.WSURL, nil) // subscribed to nothing
	none.wantHello(map[string]any{})
	subB.expectNothing(t, 300*time.Millisecond) // the up-to-date subscribe has no reply

	// CLI: a=v2 reaches A (subscribed to a), not B or the idle client.
	began := time.Now()
	bcRunCLI(t, cli, "broadcast", "set", "a=v2")
	subA.expect(t, "cli change of a", map[string]string{"a": "v2"}, began, bcWithin)
	subB.expectNothing(t, bcQuiet)
	none.expectNothing(t, 0)

	// Admin API: monitor_changes reaches A and B.
	began = time.Now()
	bcAdminPut(t, s.HTTPURL, "remote-settings/monitor_changes", "\"2\"", bcAdminToken, http.StatusOK)
	for _, c := range []*bcClient{subA, subB} {
		c.expect(t, "admin change", map[string]string{"remote-settings/monitor_changes": "\"2\""}, began, bcWithin)
	}
	bcAdminPut(t, s.HTTPURL, "a", "v9", "wrong-token-0123456789", http.StatusUnauthorized)
	none.expectNothing(t, bcQuiet)
	subA.expectNothing(t, 0) // the refused change was not written

	// Megaphone: the poller writes what differs.
	began = time.Now()
	mega.set(map[string]string{"a": "v3", "remote-settings/monitor_changes": "\"2\""})
	subA.expect(t, "megaphone change", map[string]string{"a": "v3"}, began, bcMegaphonePoll+bcWithin)
	subB.expectNothing(t, bcQuiet)
	none.expectNothing(t, 0)
	if n := mega.unauthorized.Load(); n != 0 {
		t.Errorf("the poller sent %d requests without the bearer token", n)
	}

	if out := bcRunCLI(t, cli, "broadcast", "list"); !strings.Contains(out, "a") || !strings.Contains(out, "v3") || !strings.Contains(out, "\"2\"") {
		t.Errorf("broadcast list:\n%s", out)
	}
	bcCheckMetrics(t, s.WSURL, []string{"cli", "admin", "megaphone", "seed"})

	// A restart keeps the table: the topic's versions, not the seed's,
	// even with Megaphone down.
	mega.fail()
	s.terminate()
	s.restart()
	again := bcDial(ctx, t, s.WSURL, map[string]string{"a": "v1", "remote-settings/monitor_changes": "\"2\""})
	again.wantHello(map[string]any{"a": "v3"})
	began = time.Now()
	bcRunCLI(t, cli, "broadcast", "set", "remote-settings/monitor_changes=\"3\"")
	again.expect(t, "change after restart", map[string]string{"remote-settings/monitor_changes": "\"3\""}, began, bcWithin)
}

// TestBroadcastLiveCluster: three connector nodes; each source's change
// reaches the subscribed clients on every node, and no one else.
func TestBroadcastLiveCluster(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	mega := newBCMegaphone(t)
	c := newClCluster(t)
	c.common = append(c.common,
		"PUSHLOG_MEGAPHONE_URL="+mega.URL(),
		"PUSHLOG_MEGAPHONE_TOKEN="+bcMegaphoneToken,
		"PUSHLOG_MEGAPHONE_INTERVAL="+bcMegaphonePoll.String(),
	)
	adminHTTP := freePort(t)
	admin := clStartNode(t, "bc-admin", append(c.common,
		"PUSHLOG_NODE_ID=bc-admin", "PUSHLOG_ROLES=ingest", "PUSHLOG_DATA_DIR="+t.TempDir(),
		"PUSHLOG_HTTP_ADDR="+adminHTTP, "PUSHLOG_WS_ADDR="+freePort(t), "PUSHLOG_ADMIN_TOKEN="+bcAdminToken))
	admin.httpURL = "http://" + adminHTTP
	admin.waitReady(60 * time.Second)
	cli := append(os.Environ(), "KAFKA_BROKERS="+kafkaBrokers(t), "PUSHLOG_NAMESPACE="+c.names.Namespace)
	bcRunCLI(t, cli, "broadcast", "set", "a=v1", "b=v1")

	var nodes []*clNode
	for i := range 3 {
		nodes = append(nodes, c.addConnector(fmt.Sprintf("bc-node%d", i+1)))
	}
	type trio struct{ a, b, none *bcClient }
	var clients []trio
	for _, n := range nodes {
		n.waitReady(60 * time.Second)
		tr := trio{
			a:    bcDial(ctx, t, n.wsURL, map[string]string{"a": "v1"}),
			b:    bcDial(ctx, t, n.wsURL, map[string]string{"b": "v0"}),
			none: bcDial(ctx, t, n.wsURL, nil),
		}
		tr.a.wantHello(map[string]any{})
		tr.b.wantHello(map[string]any{"b": "v1"})
		tr.none.wantHello(map[string]any{})
		clients = append(clients, tr)
	}
	check := func(what, id, version string, began time.Time, within time.Duration) {
		t.Helper()
		for i, tr := range clients {
			sub, other := tr.a, tr.b
			if id == "b" {
				sub, other = tr.b, tr.a
			}
			sub.expect(t, fmt.Sprintf("%s on node %d", what, i+1), map[string]string{id: version}, began, within)
			other.expectNothing(t, 0)
			tr.none.expectNothing(t, 0)
		}
		// Late frames to the others would show by now.
		time.Sleep(bcQuiet)
		for _, tr := range clients {
			for _, cl := range []*bcClient{tr.a, tr.b, tr.none} {
				cl.expectNothing(t, 0)
			}
		}
	}
	began := time.Now()
	bcRunCLI(t, cli, "broadcast", "set", "a=v2")
	check("cli", "a", "v2", began, bcWithin)
	began = time.Now()
	bcAdminPut(t, admin.httpURL, "b", "v2", bcAdminToken, http.StatusOK)
	check("admin", "b", "v2", began, bcWithin)
	began = time.Now()
	mega.set(map[string]string{"a": "v3", "b": "v2"})
	check("megaphone", "a", "v3", began, bcMegaphonePoll+bcWithin)
}

// --- a client ------------------------------------------------------------------

// bcClient is a WebSocket client that says hello with broadcasts and
// collects every frame after the hello reply.
type bcClient struct {
	t      testing.TB
	ws     *websocket.Conn
	hello  map[string]any
	frames chan map[string]any
}

// bcDial connects and says hello with broadcasts, retrying while the
// server asks to try again (a cluster assigning its partitions).
func bcDial(ctx context.Context, t *testing.T, wsURL string, broadcasts map[string]string) *bcClient {
	t.Helper()
	if broadcasts == nil {
		broadcasts = map[string]string{}
	}
	for {
		c, err := bcConnect(ctx, t, wsURL, broadcasts)
		if err == nil {
			t.Cleanup(func() { _ = c.ws.Close() })
			return c
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater || ctx.Err() != nil {
			t.Fatalf("connect to %s: %v", wsURL, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func bcConnect(ctx context.Context, t *testing.T, wsURL string, broadcasts map[string]string) (*bcClient, error) {
	d := websocket.Dialer{Subprotocols: []string{uaSubprotocol}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		return nil, err
	}
	c := &bcClient{t: t, ws: ws, frames: make(chan map[string]any, 64)}
	if err := ws.WriteJSON(map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": broadcasts}); err != nil {
		ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	var reply map[string]any
	if err := ws.ReadJSON(&reply); err != nil {
		ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Time{})
	if reply["messageType"] != "hello" || reply["status"] != float64(200) {
		ws.Close()
		return nil, fmt.Errorf("hello reply %v", reply)
	}
	c.hello = reply
	go func() {
		defer close(c.frames)
		for {
			var m map[string]any
			if err := ws.ReadJSON(&m); err != nil {
				return
			}
			c.frames <- m
		}
	}()
	return c, nil
}

func (c *bcClient) send(v any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

// wantHello checks the hello reply's broadcasts.
func (c *bcClient) wantHello(want map[string]any) {
	c.t.Helper()
	got, _ := c.hello["broadcasts"].(map[string]any)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		c.t.Fatalf("hello broadcasts %v, want %v", got, want)
	}
}

// expect waits up to within for a broadcast frame of exactly want; it
// logs the time since the write began (since).
func (c *bcClient) expect(t *testing.T, what string, want map[string]string, since time.Time, within time.Duration) {
	t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			t.Fatalf("%s: the socket closed", what)
		}
		got := map[string]string{}
		bc, _ := m["broadcasts"].(map[string]any)
		for k, v := range bc {
			got[k] = fmt.Sprint(v)
		}
		if m["messageType"] != "broadcast" || !maps.Equal(got, want) {
			t.Fatalf("%s: got %v, want broadcasts %v", what, m, want)
		}
		t.Logf("%s: received %s after the write began", what, time.Since(since).Round(time.Millisecond))
	case <-time.After(within):
		t.Fatalf("%s: no broadcast %v within %s", what, want, within)
	}
}

// expectNothing fails if a frame arrives within d (0: one already queued).
func (c *bcClient) expectNothing(t *testing.T, d time.Duration) {
	t.Helper()
	if d == 0 {
		select {
		case m, ok := <-c.frames:
			t.Fatalf("unexpected frame %v (open %v)", m, ok)
		default:
		}
		return
	}
	select {
	case m, ok := <-c.frames:
		t.Fatalf("unexpected frame %v (open %v)", m, ok)
	case <-time.After(d):
	}
}

// --- the sources -----------------------------------------------------------------

// bcCLIEnv is the environment of `pushlog broadcast` against the server.
func bcCLIEnv(t *testing.T, embedded bool, embAddr, namespace string) []string {
	brokers := embAddr
	if !embedded {
		brokers = kafkaBrokers(t)
	}
	return append(os.Environ(), "KAFKA_BROKERS="+brokers, "PUSHLOG_NAMESPACE="+namespace)
}

func bcRunCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(pushlogBin, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("pushlog %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func bcAdminPut(t *testing.T, httpURL, id, version, token string, status int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, httpURL+"/v1/broadcasts/"+id, strings.NewReader(version))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("PUT /v1/broadcasts/%s: %d %s, want %d", id, resp.StatusCode, body, status)
	}
}

// bcMegaphone is a small Megaphone-compatible API: GET answers
// {"code":200,"broadcasts":{...}} to the bearer token.
type bcMegaphone struct {
	srv          *httptest.Server
	mu           sync.Mutex
	table        map[string]string
	down         bool
	unauthorized atomic.Int64
}

func newBCMegaphone(t *testing.T) *bcMegaphone {
	m := &bcMegaphone{table: map[string]string{}}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/broadcasts" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+bcMegaphoneToken {
			m.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, `{"code":401}`, http.StatusUnauthorized)
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.down {
			http.Error(w, `{"code":503}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"code": 200, "broadcasts": m.table})
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *bcMegaphone) URL() string { return m.srv.URL + "/v1/broadcasts" }

func (m *bcMegaphone) set(table map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.table = maps.Clone(table)
}

func (m *bcMegaphone) fail() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = true
}

// bcCheckMetrics: the node counted changes of every source and frames sent.
func bcCheckMetrics(t *testing.T, wsURL string, sources []string) {
	t.Helper()
	resp, err := http.Get(strings.Replace(wsURL, "ws://", "http://", 1) + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, src := range sources {
		if bcMetric(string(body), `pushlog_broadcast_changes_total{source="`+src+`"}`) < 1 {
			t.Errorf("no change counted from source %s", src)
		}
	}
	if bcMetric(string(body), "pushlog_broadcast_frames_sent_total") < 4 {
		t.Errorf("broadcast frames sent: %v, want at least 4", bcMetric(string(body), "pushlog_broadcast_frames_sent_total"))
	}
	if bcMetric(string(body), "pushlog_broadcast_ids") != 2 {
		t.Errorf("broadcast ids: %v, want 2", bcMetric(string(body), "pushlog_broadcast_ids"))
	}
}

func bcMetric(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
