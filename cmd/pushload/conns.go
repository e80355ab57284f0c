package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

type connsCmd struct {
	URL         string        `default:"ws://127.0.0.1:8080/" help:"Connection node URL."`
	N           int           `default:"1000" help:"Connections to open."`
	Hold        time.Duration `default:"60s" help:"How long to hold the idle connections once all are up."`
	Concurrency int           `default:"20" help:"Connections being set up at a time."`
	Register    bool          `default:"true" negatable:"" help:"Register one channel per connection."`
	Timeout     time.Duration `default:"10s" help:"Bound on one connection's setup."`
}

// client is one held connection.
type client struct {
	ws   *websocket.Conn
	uaid string
}

type result struct {
	c       *client
	err     error
	elapsed time.Duration
}

func (cmd *connsCmd) Run(ctx context.Context) error {
	if cmd.N <= 0 || cmd.Concurrency <= 0 {
		return errors.New("--n and --concurrency must be positive")
	}
	dialer := &websocket.Dialer{
		Subprotocols:     []string{"push-notification"},
		HandshakeTimeout: cmd.Timeout,
		ReadBufferSize:   256,
		WriteBufferSize:  256,
	}
	start := time.Now()
	results := cmd.openAll(ctx, dialer)
	var (
		clients   []*client
		latencies []time.Duration
		failures  = map[string]int{}
	)
	for _, r := range results {
		if r.err != nil {
			failures[r.err.Error()]++
			continue
		}
		clients = append(clients, r.c)
		latencies = append(latencies, r.elapsed)
	}
	fmt.Printf("READY ok=%d failed=%d elapsed=%s setup_p50=%s setup_p99=%s pid=%d\n",
		len(clients), cmd.N-len(clients), time.Since(start).Round(time.Millisecond),
		percentile(latencies, 0.50), percentile(latencies, 0.99), os.Getpid())
	for msg, n := range failures {
		fmt.Printf("  failure x%d: %s\n", n, msg)
	}
	if len(clients) == 0 {
		return errors.New("no connection could be set up")
	}

	var dropped atomic.Int64
	var readers sync.WaitGroup
	released := make(chan struct{}) // closed when the hold is over
	for _, c := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.readLoop(released, &dropped)
		}()
	}
	select {
	case <-ctx.Done():
	case <-time.After(cmd.Hold):
	}
	close(released)
	for _, c := range clients {
		goodbye(c.ws)
	}
	waitTimeout(&readers, 5*time.Second)
	for _, c := range clients {
		_ = c.ws.Close()
	}
	fmt.Printf("SUMMARY opened=%d failed=%d dropped_during_hold=%d held=%s\n",
		len(clients), cmd.N-len(clients), dropped.Load(), cmd.Hold)
	if d := dropped.Load(); d > 0 {
		return fmt.Errorf("%d connections dropped while held", d)
	}
	return nil
}

// openAll sets up N connections, Concurrency at a time.
func (cmd *connsCmd) openAll(ctx context.Context, dialer *websocket.Dialer) []result {
	results := make([]result, cmd.N)
	sem := make(chan struct{}, cmd.Concurrency)
	var wg sync.WaitGroup
	var done atomic.Int64
	stopProgress := progress(&done, cmd.N)
	defer stopProgress()
	for i := range cmd.N {
		if ctx.Err() != nil {
			results[i].err = ctx.Err()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done(); done.Add(1) }()
			t0 := time.Now()
			c, err := cmd.open(ctx, dialer)
			results[i] = result{c: c, err: err, elapsed: time.Since(t0)}
		}()
	}
	wg.Wait()
	return results
}

// open dials, says hello and registers one channel.
func (cmd *connsCmd) open(ctx context.Context, dialer *websocket.Dialer) (*client, error) {
	c, _, err := dialHello(ctx, dialer, cmd.URL, cmd.Timeout, cmd.Register)
	return c, err
}

// dialHello dials url, says hello and, with register, registers one new
// channel, all within timeout. It returns the connection with its UAID and
// the registration's push endpoint ("" without one).
func dialHello(ctx context.Context, dialer *websocket.Dialer, url string, timeout time.Duration, register bool) (*client, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ws, resp, err := dialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, "", fmt.Errorf("dial: %w", err)
	}
	resp.Body.Close()
	deadline, _ := ctx.Deadline()
	_ = ws.SetReadDeadline(deadline)
	_ = ws.SetWriteDeadline(deadline)
	c := &client{ws: ws}
	endpoint, err := c.hello(register)
	if err != nil {
		ws.Close()
		return nil, "", err
	}
	_ = ws.SetReadDeadline(time.Time{})
	_ = ws.SetWriteDeadline(time.Time{})
	return c, endpoint, nil
}

// hello says hello and, with register, registers one new channel and
// returns its push endpoint.
func (c *client) hello(register bool) (string, error) {
	reply, err := c.request(map[string]any{"messageType": "hello", "use_webpush": true, "broadcasts": map[string]string{}})
	if err != nil || reply["status"] != 200.0 {
		return "", fmt.Errorf("hello: %v %v", reply, err)
	}
	c.uaid, _ = reply["uaid"].(string)
	if !register {
		return "", nil
	}
	// The status only: the reply names the channel, and conns counts
	// failures by their message.
	reply, err = c.request(map[string]any{"messageType": "register", "channelID": newChannelID()})
	if err != nil || reply["status"] != 200.0 {
		return "", fmt.Errorf("register: %v %v", reply["status"], err)
	}
	endpoint, _ := reply["pushEndpoint"].(string)
	if endpoint == "" {
		return "", fmt.Errorf("register: no pushEndpoint in %v", reply)
	}
	return endpoint, nil
}

// goodbye starts a clean close (the caller then closes ws).
func goodbye(ws *websocket.Conn) {
	_ = ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
}

func (c *client) request(msg map[string]any) (map[string]any, error) {
	if err := c.ws.WriteJSON(msg); err != nil {
		return nil, err
	}
	for {
		var reply map[string]any
		if err := c.ws.ReadJSON(&reply); err != nil {
			return nil, err
		}
		if reply["messageType"] == msg["messageType"] {
			return reply, nil
		}
	}
}

// readLoop answers the server (Ping frames are answered by gorilla while
// reading; notifications are acked) and counts a connection lost while
// held.
func (c *client) readLoop(released <-chan struct{}, dropped *atomic.Int64) {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			select {
			case <-released: // we are closing it
			default:
				fmt.Fprintf(os.Stderr, "connection %s lost while held: %v\n", c.uaid, err)
				dropped.Add(1)
			}
			return
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil || m["messageType"] != "notification" {
			continue
		}
		_ = c.ws.WriteJSON(map[string]any{"messageType": "ack", "updates": []map[string]any{
			{"channelID": m["channelID"], "version": m["version"], "code": 100}}})
	}
}

func newChannelID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))].Round(time.Microsecond)
}

// progress prints how many connections are set up, every second, on stderr.
func progress(done *atomic.Int64, total int) (stop func()) {
	quit := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "set up %d/%d\n", done.Load(), total)
			}
		}
	}()
	return func() { close(quit) }
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
