package integration

// The cluster test: three connector processes (each its own WebSocket and
// node-link listener) and a separate ingest process on real Kafka, clients
// spread across the connectors at random, a steady stream of pushes; one
// connector is killed with SIGKILL mid-stream and its clients reconnect to
// the others. Then a fourth connector joins and one leaves with SIGTERM.
// Every accepted message is accounted for at the end of each phase.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/owner"
	"github.com/pushlog/pushlog/schema"
)

const (
	clPartitions   = 12
	clClients      = 36
	clLateClients  = 8                     // join during the graceful phase
	clPushInterval = 25 * time.Millisecond // 40 pushes a second
	clTTL0Every    = 10                    // every 10th push has TTL 0
	clLongTTL      = "600"
	clAckDelay     = 100 * time.Millisecond // longest a client waits to ack
)

// TestClusterFailover is the proof of the cluster issue (see the file
// comment). It prints the accounting of each phase.
func TestClusterFailover(t *testing.T) {
	c := newClCluster(t)
	ctx := testContext(t, 4*time.Minute)
	for i := range 3 {
		c.addConnector(fmt.Sprintf("cl-node-%d", i+1))
	}
	for _, n := range c.connectors() {
		n.waitReady(60 * time.Second)
	}
	c.startClients(ctx, clClients)

	// Phase 1: a connector crashes mid-stream.
	before := c.owners(ctx)
	pusher := c.startPushing(ctx, 1)
	clSleep(ctx, 5*time.Second)
	if after := c.owners(ctx); maps.Equal(before, after) {
		// Push-to-socket latency while ownership was stable, by whether
		// the owner of the message's partition was the client's node.
		t.Logf("push-to-socket latency before the crash: %s", c.ledger.latency(1, before, c.connectors(), time.Now()))
	}
	victim := c.connectors()[0]
	t.Logf("kill -9 %s", victim.name)
	victim.kill9()
	clSleep(ctx, 15*time.Second) // its partitions move after the 6 s session timeout
	pusher.stop()
	c.waitSettled(ctx, 1, 90*time.Second)
	r1 := c.ledger.report(1, c.acks.snapshot(), victim.name)
	t.Logf("phase 1 (kill -9 %s): %s", victim.name, r1)
	r1.check(t, "kill -9", false)
	c.checkOwners(ctx, []*clNode{victim}, nil)

	// Phase 2: scale up (a fourth connector joins), then scale down (one
	// connector stops with SIGTERM), with zero duplicates.
	pusher = c.startPushing(ctx, 2)
	clSleep(ctx, 2*time.Second)
	joined := c.addConnector("cl-node-4")
	joined.waitReady(60 * time.Second)
	t.Logf("%s joined", joined.name)
	c.startClients(ctx, clLateClients)
	clSleep(ctx, 8*time.Second)
	leaving := c.connectors()[1]
	t.Logf("SIGTERM %s", leaving.name)
	leaving.terminate()
	clSleep(ctx, 8*time.Second)
	pusher.stop()
	c.waitSettled(ctx, 2, 90*time.Second)
	r2 := c.ledger.report(2, c.acks.snapshot(), "")
	t.Logf("phase 2 (scale up, then SIGTERM %s): %s", leaving.name, r2)
	r2.check(t, "graceful", true)
	c.checkOwners(ctx, []*clNode{victim, leaving}, joined)

	if n := c.resets.Load(); n != 0 {
		t.Errorf("%d reconnecting clients lost their UAID (reset at hello)", n)
	}
}

func clSleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// --- processes ---------------------------------------------------------------

// clNode is one pushlog process of the cluster.
type clNode struct {
	t        testing.TB
	name     string
	cmd      *exec.Cmd
	logs     *lockedBuffer
	done     chan struct{}
	wsURL    string // connectors
	linkAddr string // connectors
	httpURL  string // ingest
	down     atomic.Bool
}

func clStartNode(t testing.TB, name string, env []string) *clNode {
	t.Helper()
	n := &clNode{t: t, name: name, logs: &lockedBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(pushlogBin, "serve")
	n.cmd.Env = env
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.terminate()
		if t.Failed() {
			t.Logf("%s output:\n%s", n.name, n.logs.String())
		}
		if dir := os.Getenv("PUSHLOG_CLUSTER_LOGS"); dir != "" {
			// Keep every node's log for a look after a passing run too.
			_ = os.WriteFile(filepath.Join(dir, n.name+".log"), []byte(n.logs.String()), 0o644)
		}
	})
	return n
}

// waitReady waits until the node's listener answers.
func (n *clNode) waitReady(timeout time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			n.t.Fatalf("%s exited during start-up:\n%s", n.name, n.logs.String())
		default:
		}
		if n.ready() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	n.t.Fatalf("%s not ready after %s:\n%s", n.name, timeout, n.logs.String())
}

func (n *clNode) ready() bool {
	if n.httpURL != "" {
		resp, err := http.Get(n.httpURL + "/__lbheartbeat__")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	c, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(n.wsURL, "ws://"), "/"))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (n *clNode) kill9() {
	n.down.Store(true)
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

func (n *clNode) terminate() {
	n.down.Store(true)
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.t.Errorf("%s did not stop within 30s of SIGTERM:\n%s", n.name, n.logs.String())
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// --- the cluster ---------------------------------------------------------------

type clCluster struct {
	t      *testing.T
	names  schema.Names
	sealer *schema.Sealer
	common []string
	ingest *clNode
	adm    *kadm.Client
	ledger *clLedger
	acks   *clSettlements
	resets atomic.Int32
	conns  atomic.Int64

	mu    sync.Mutex
	nodes []*clNode
	cls   []*clClient
}

func newClCluster(t *testing.T) *clCluster {
	t.Helper()
	brokers := kafkaBrokers(t)
	ns := freshNamespace()
	names, err := schema.NamesFor(ns)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, schema.KeySize)
	secret := make([]byte, 24)
	_, _ = rand.Read(key)
	_, _ = rand.Read(secret)
	sealer, err := schema.NewSealer([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	c := &clCluster{t: t, names: names, sealer: sealer, ledger: newClLedger()}
	c.common = append(os.Environ(),
		"KAFKA_BROKERS="+brokers,
		"PUSHLOG_NAMESPACE="+ns,
		fmt.Sprintf("PUSHLOG_PARTITIONS=%d", clPartitions),
		"PUSHLOG_CRYPTO_KEYS="+base64.RawURLEncoding.EncodeToString(key),
		"PUSHLOG_LINK_SECRET="+hex.EncodeToString(secret),
		"PUSHLOG_GROUP_SESSION_TIMEOUT=6s",
		"PUSHLOG_GROUP_HEARTBEAT=500ms",
		"PUSHLOG_LOG_LEVEL=debug",
	)
	httpAddr := freePort(t)
	c.ingest = clStartNode(t, "cl-ingest", append(c.common,
		"PUSHLOG_NODE_ID=cl-ingest",
		"PUSHLOG_ROLES=ingest,projector",
		"PUSHLOG_DATA_DIR="+t.TempDir(),
		"PUSHLOG_HTTP_ADDR="+httpAddr,
		"PUSHLOG_WS_ADDR="+freePort(t),
	))
	c.ingest.httpURL = "http://" + httpAddr
	c.ingest.waitReady(60 * time.Second)
	c.acks = startClSettlements(t, brokers, names.Acks)
	adm, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close)
	c.adm = kadm.NewClient(adm)
	return c
}

// checkOwners checks that the gone nodes own no partition any more and
// that joined (if any) owns some.
func (c *clCluster) checkOwners(ctx context.Context, gone []*clNode, joined *clNode) {
	c.t.Helper()
	count := map[string]int{}
	for _, a := range c.owners(ctx) {
		count[a]++
	}
	for _, n := range gone {
		if count[n.linkAddr] > 0 {
			c.t.Errorf("%s is gone but owns %d partitions", n.name, count[n.linkAddr])
		}
	}
	if joined != nil && count[joined.linkAddr] == 0 {
		c.t.Errorf("%s joined but owns no partition", joined.name)
	}
	c.t.Logf("partitions per node: %v", count)
}

// owners returns the partition -> link address assignment of the
// connectors' group once it is stable.
func (c *clCluster) owners(ctx context.Context) map[int32]string {
	for ctx.Err() == nil {
		o, err := owner.GroupOwners(ctx, c.adm, c.names.Group("connectors"), c.names.Messages)
		if err == nil && len(o) == clPartitions {
			return o
		}
		clSleep(ctx, 100*time.Millisecond)
	}
	return nil
}

// addConnector starts a connector node (not waiting for it).
func (c *clCluster) addConnector(name string) *clNode {
	wsAddr, linkAddr := freePort(c.t), freePort(c.t)
	n := clStartNode(c.t, name, append(c.common,
		"PUSHLOG_NODE_ID="+name,
		"PUSHLOG_ROLES=connector",
		"PUSHLOG_DATA_DIR="+c.t.TempDir(),
		"PUSHLOG_WS_ADDR="+wsAddr,
		"PUSHLOG_HTTP_ADDR="+freePort(c.t), // unused by a connector
		"PUSHLOG_PUBLIC_URL="+c.ingest.httpURL,
		"PUSHLOG_LINK_ADDR="+linkAddr,
	))
	n.wsURL, n.linkAddr = "ws://"+wsAddr+"/", linkAddr
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

func (c *clCluster) connectors() []*clNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*clNode(nil), c.nodes...)
}

// randomNode picks a running connector.
func (c *clCluster) randomNode() *clNode {
	var up []*clNode
	for _, n := range c.connectors() {
		if !n.down.Load() {
			up = append(up, n)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[mrand.IntN(len(up))]
}

// startClients connects n clients to random nodes and waits until each
// has registered a channel.
func (c *clCluster) startClients(ctx context.Context, n int) {
	c.t.Helper()
	var fresh []*clClient
	for range n {
		cl := &clClient{c: c, chid: clChannelID(), ready: make(chan struct{})}
		fresh = append(fresh, cl)
		go cl.run(ctx)
	}
	for _, cl := range fresh {
		select {
		case <-cl.ready:
		case <-ctx.Done():
			c.t.Fatal("clients did not register in time")
		}
	}
	c.mu.Lock()
	c.cls = append(c.cls, fresh...)
	c.mu.Unlock()
}

func (c *clCluster) clients() []*clClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*clClient(nil), c.cls...)
}

func clChannelID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return schema.FormatChannelID(b)
}

// --- clients -------------------------------------------------------------------

// clClient behaves like Firefox: one UAID and channel for life, acks every
// notification at once, reconnects (to any running node) when its socket
// closes.
type clClient struct {
	c        *clCluster
	chid     string
	uaid     string
	endpoint string
	ready    chan struct{}
}

type clServerMsg struct {
	MessageType  string `json:"messageType"`
	UAID         string `json:"uaid"`
	Status       int    `json:"status"`
	ChannelID    string `json:"channelID"`
	PushEndpoint string `json:"pushEndpoint"`
	Version      string `json:"version"`
	Data         string `json:"data"`
}

func (cl *clClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		if n := cl.c.randomNode(); n != nil {
			err := cl.session(ctx, n)
			if err != nil && ctx.Err() == nil {
				cl.c.t.Logf("client %s on %s: %v (reconnecting)", cl.uaid, n.name, err)
			}
		}
		clSleep(ctx, time.Duration(50+mrand.IntN(200))*time.Millisecond)
	}
}

// session runs one connection until it closes.
func (cl *clClient) session(ctx context.Context, n *clNode) error {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{uaSubprotocol}}
	ws, _, err := d.DialContext(ctx, n.wsURL, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	hello := map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]any{}}
	if cl.uaid != "" {
		hello["uaid"] = cl.uaid
	}
	if err := ws.WriteJSON(hello); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	var reply clServerMsg
	if err := ws.ReadJSON(&reply); err != nil {
		return fmt.Errorf("hello reply: %w", err)
	}
	if reply.MessageType != "hello" || reply.Status != 200 {
		return fmt.Errorf("hello reply %+v", reply)
	}
	if cl.uaid != "" && reply.UAID != cl.uaid {
		cl.c.resets.Add(1)
		return fmt.Errorf("uaid %s was reset to %s", cl.uaid, reply.UAID)
	}
	if cl.uaid == "" {
		if err := cl.register(ws, reply.UAID); err != nil {
			return err
		}
	}
	conn := cl.c.conns.Add(1)
	var wmu sync.Mutex // acks are written from timers
	for {
		var m clServerMsg
		if err := ws.ReadJSON(&m); err != nil {
			return err
		}
		if m.MessageType != "notification" {
			continue
		}
		body, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(m.Data, "="))
		if err != nil {
			return fmt.Errorf("notification data: %w", err)
		}
		cl.c.ledger.receive(string(body), n.name, conn)
		// The ack follows after a moment (up to clAckDelay), as a busy
		// browser's would: a crash then leaves some deliveries unacked.
		ack := map[string]any{"messageType": "ack", "updates": []map[string]any{{"channelID": m.ChannelID, "version": m.Version, "code": 100}}}
		time.AfterFunc(time.Duration(mrand.Int64N(int64(clAckDelay))), func() {
			wmu.Lock()
			defer wmu.Unlock()
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if ws.WriteJSON(ack) == nil {
				cl.c.ledger.ack(string(body), n.name)
			}
		})
	}
}

func (cl *clClient) register(ws *websocket.Conn, uaid string) error {
	if err := ws.WriteJSON(map[string]any{"messageType": "register", "channelID": cl.chid}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	for {
		var m clServerMsg
		if err := ws.ReadJSON(&m); err != nil {
			return fmt.Errorf("register reply: %w", err)
		}
		if m.MessageType != "register" {
			continue
		}
		if m.Status != 200 || m.PushEndpoint == "" {
			return fmt.Errorf("register reply %+v", m)
		}
		cl.uaid, cl.endpoint = uaid, m.PushEndpoint
		close(cl.ready)
		return nil
	}
}

// --- pushes --------------------------------------------------------------------

type clPusher struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startPushing sends a push every clPushInterval to a random client until
// stop; every clTTL0Every-th has TTL 0.
func (c *clCluster) startPushing(ctx context.Context, phase int) *clPusher {
	pctx, cancel := context.WithCancel(ctx)
	p := &clPusher{cancel: cancel}
	sem := make(chan struct{}, 16)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(clPushInterval)
		defer t.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			cls := c.clients()
			cl := cls[mrand.IntN(len(cls))]
			ttl0 := seq%clTTL0Every == clTTL0Every-1
			sem <- struct{}{}
			p.wg.Add(1)
			go func() {
				defer func() { <-sem; p.wg.Done() }()
				c.push(ctx, cl, fmt.Sprintf("cl-%d-%06d", phase, seq), phase, ttl0)
			}()
		}
	}()
	return p
}

func (p *clPusher) stop() {
	p.cancel()
	p.wg.Wait()
}

func (c *clCluster) push(ctx context.Context, cl *clClient, body string, phase int, ttl0 bool) {
	ttl := clLongTTL
	if ttl0 {
		ttl = "0"
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	at := time.Now()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, cl.endpoint, strings.NewReader(body))
	if err != nil {
		c.t.Errorf("push request: %v", err)
		return
	}
	req.Header.Set("TTL", ttl)
	req.Header.Set("Content-Encoding", "aes128gcm")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.ledger.reject(phase, err.Error())
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		c.ledger.reject(phase, resp.Status)
		return
	}
	loc := resp.Header.Get("Location")
	id, err := c.sealer.OpenMessageID(loc[strings.LastIndex(loc, "/")+1:])
	if err != nil {
		c.t.Errorf("Location %q: %v", loc, err)
		return
	}
	c.ledger.accept(body, &clSent{phase: phase, ttl0: ttl0, key: clKey{id.Partition, id.Offset}, at: at})
}

// --- accounting ----------------------------------------------------------------

type clKey struct {
	p   int32
	off int64
}

type clSent struct {
	phase int
	ttl0  bool
	key   clKey
	at    time.Time // just before the POST
}

type clReceipt struct {
	node string
	conn int64
	seq  int64 // ledger order
	at   time.Time
}

type clAck struct {
	node string
	seq  int64
}

// clLedger is what the clients saw, keyed by push body (unique per push).
type clLedger struct {
	mu       sync.Mutex
	seq      int64
	sent     map[string]*clSent
	receipts map[string][]clReceipt
	acked    map[string]clAck       // the first ack
	rejected map[int]map[string]int // phase -> why -> count
}

func newClLedger() *clLedger {
	return &clLedger{sent: map[string]*clSent{}, receipts: map[string][]clReceipt{}, acked: map[string]clAck{}, rejected: map[int]map[string]int{}}
}

func (l *clLedger) accept(body string, s *clSent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[body] = s
}

func (l *clLedger) reject(phase int, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rejected[phase] == nil {
		l.rejected[phase] = map[string]int{}
	}
	l.rejected[phase][why]++
}

func (l *clLedger) receive(body, node string, conn int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	l.receipts[body] = append(l.receipts[body], clReceipt{node: node, conn: conn, seq: l.seq, at: time.Now()})
}

func (l *clLedger) ack(body, node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	if _, ok := l.acked[body]; !ok {
		l.acked[body] = clAck{node: node, seq: l.seq}
	}
}

// settled reports whether every message of phase is acked by its client or
// settled by the owner (Expired/Dropped in pushlog.acks), and lists some
// that are not.
func (l *clLedger) settled(phase int, kafka map[clKey]string) (bool, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var open []string
	for body, s := range l.sent {
		if s.phase != phase {
			continue
		}
		if _, ok := l.acked[body]; ok {
			continue
		}
		if _, ok := kafka[s.key]; ok {
			continue
		}
		open = append(open, fmt.Sprintf("%s@%d/%d", body, s.key.p, s.key.off))
	}
	return len(open) == 0, open[:min(len(open), 10)]
}

type clReport struct {
	accepted, acked, expired, dropped, lost int
	ttl0                                    int
	rejected                                int
	receipts, duplicates                    int
	receiptsOnKilled                        int
	ackedThenRedelivered                    int // after an ack on a node that did not crash
	ackLostAtCrash                          int // after an ack on the crashed node
	dropReasons                             map[string]int
	rejectedWhy                             []string // not accepted: not part of the accounting
}

func (r clReport) String() string {
	return fmt.Sprintf("accepted=%d = delivered-and-acked=%d + expired=%d + dropped-by-rule=%d %v; lost=%d; "+
		"TTL0 pushes=%d; rejected=%d %v; receipts=%d, duplicates=%d (receipts on connections to a killed node: %d); "+
		"acked-then-redelivered=%d (redelivered after an ack made on a killed node: %d)",
		r.accepted, r.acked, r.expired, r.dropped, r.dropReasons, r.lost, r.ttl0, r.rejected, r.rejectedWhy,
		r.receipts, r.duplicates, r.receiptsOnKilled, r.ackedThenRedelivered, r.ackLostAtCrash)
}

// report accounts for every message of phase. killed names the node that
// crashed ("" for none).
func (l *clLedger) report(phase int, kafka map[clKey]string, killed string) clReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := clReport{dropReasons: map[string]int{}}
	for why, n := range l.rejected[phase] {
		r.rejected += n
		r.rejectedWhy = append(r.rejectedWhy, fmt.Sprintf("%d× %s", n, why))
	}
	for body, s := range l.sent {
		if s.phase != phase {
			continue
		}
		r.accepted++
		if s.ttl0 {
			r.ttl0++
		}
		ack, acked := l.acked[body]
		kind, settled := kafka[s.key]
		switch {
		case acked:
			r.acked++
		case settled && kind == "expired":
			r.expired++
		case settled:
			r.dropped++
			r.dropReasons[kind]++
		default:
			r.lost++
		}
		recs := l.receipts[body]
		r.receipts += len(recs)
		r.duplicates += max(0, len(recs)-1)
		for _, rc := range recs {
			if killed != "" && rc.node == killed {
				r.receiptsOnKilled++
			}
			if acked && rc.seq > ack.seq {
				if killed != "" && ack.node == killed {
					r.ackLostAtCrash++
				} else {
					r.ackedThenRedelivered++
				}
			}
		}
	}
	return r
}

// check applies the rules of the issue.
func (r clReport) check(t *testing.T, what string, graceful bool) {
	t.Helper()
	if r.accepted == 0 {
		t.Errorf("%s: no push was accepted", what)
	}
	if r.lost != 0 || r.accepted != r.acked+r.expired+r.dropped {
		t.Errorf("%s: %d accepted messages lost", what, r.lost)
	}
	if r.ackedThenRedelivered != 0 {
		t.Errorf("%s: %d messages redelivered after a durable ack", what, r.ackedThenRedelivered)
	}
	if graceful && r.duplicates != 0 {
		t.Errorf("%s: %d duplicate deliveries in a graceful change", what, r.duplicates)
	}
	// A duplicate is a message the crashed node delivered whose ack did
	// not survive: at most one per receipt on its connections.
	if !graceful && r.duplicates > r.receiptsOnKilled {
		t.Errorf("%s: %d duplicates, more than the %d receipts on the crashed node's connections", what, r.duplicates, r.receiptsOnKilled)
	}
}

// latency summarizes push-to-socket times (POST sent to notification read)
// of first receipts before until, split by whether the owner of the
// message's partition (owners) was the node the client was connected to.
func (l *clLedger) latency(phase int, owners map[int32]string, nodes []*clNode, until time.Time) string {
	link := map[string]string{}
	for _, n := range nodes {
		link[n.name] = n.linkAddr
	}
	l.mu.Lock()
	var local, forwarded []time.Duration
	for body, s := range l.sent {
		recs := l.receipts[body]
		if s.phase != phase || len(recs) == 0 || recs[0].at.After(until) {
			continue
		}
		d := recs[0].at.Sub(s.at)
		if owners[s.key.p] == link[recs[0].node] {
			local = append(local, d)
		} else {
			forwarded = append(forwarded, d)
		}
	}
	l.mu.Unlock()
	return fmt.Sprintf("owner on the client's node: %s; owner on another node (forwarded): %s", clQuantiles(local), clQuantiles(forwarded))
}

func clQuantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no samples"
	}
	slices.Sort(d)
	q := func(f float64) time.Duration {
		return d[min(len(d)-1, int(f*float64(len(d))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", len(d), q(0.5), q(0.9), q(0.99), d[len(d)-1].Round(10*time.Microsecond))
}

// waitSettled waits until every message of phase is settled.
func (c *clCluster) waitSettled(ctx context.Context, phase int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, open := c.ledger.settled(phase, c.acks.snapshot())
		if ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.t.Errorf("phase %d: messages still unsettled after %s, e.g. %v", phase, timeout, open)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clSettlements tails pushlog.acks for the owners' Expired and Dropped
// events.
type clSettlements struct {
	mu   sync.Mutex
	seen map[clKey]string
}

func startClSettlements(t *testing.T, brokers, topic string) *clSettlements {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s := &clSettlements{seen: map[clKey]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(rec *kgo.Record) { s.fold(rec) })
		}
	}()
	return s
}

func (s *clSettlements) fold(rec *kgo.Record) {
	ev, err := schema.Decode(rec)
	if err != nil {
		return
	}
	var kind string
	ref := ev.GetExpired().GetMsg()
	if ref != nil {
		kind = "expired"
	} else if d := ev.GetDropped(); d != nil {
		ref, kind = d.GetMsg(), d.GetReason().String()
	}
	if ref == nil {
		return
	}
	s.mu.Lock()
	s.seen[clKey{ref.GetPartition(), ref.GetOffset()}] = kind
	s.mu.Unlock()
}

func (s *clSettlements) snapshot() map[clKey]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[clKey]string, len(s.seen))
	for k, v := range s.seen {
		out[k] = v
	}
	return out
}
