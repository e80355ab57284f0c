package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestClickHouseDownAtStart: analytics is optional. With CLICKHOUSE_ADDR
// pointing at a closed port, serve starts, pushes get 201 and are
// delivered, and ingest's heartbeat is 200 (it reports Kafka only, and the
// analytics projector under "roles"). When ClickHouse then comes up (here:
// a forwarder to the test command's ClickHouse opens on that port), the
// analytics projector connects and catches up with what was pushed.
func TestClickHouseDownAtStart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	chAddr := freePort(t) // closed: connections are refused
	s := startServer(t, serverOpts{Env: []string{
		"CLICKHOUSE_ADDR=" + chAddr,
		"PUSHLOG_CLICKHOUSE_DB=it_chdown_" + analyticsRandom(4),
	}})
	vapid := snNewVAPID(t)
	ua := uaDial(ctx, t, s.WSURL, "")
	sub := ua.subscribe(ctx, "")
	const n = 20
	for i := range n {
		want := fmt.Sprintf("analytics is down %d", i)
		snMustCreate(ctx, t, sub, []byte(want), snPush{TTL: 600, VAPID: vapid})
		ua.ack(snExpect(ctx, t, ua, sub, want))
	}
	hb := chdownHeartbeat(t, s)
	if hb.Status != "OK" || hb.Checks["kafka"] != "OK" {
		t.Fatalf("heartbeat with ClickHouse down: %+v", hb)
	}
	if _, ok := hb.Checks["clickhouse"]; ok {
		t.Errorf("ingest's heartbeat checks ClickHouse, which ingest does not need: %+v", hb)
	}
	if _, ok := hb.Roles["analytics-projector"]; !ok {
		t.Errorf("heartbeat roles do not show the analytics projector: %+v", hb.Roles)
	}
	t.Logf("ClickHouse down: %d pushes delivered, heartbeat status %s, analytics-projector %s", n, hb.Status, hb.Roles["analytics-projector"])

	real := os.Getenv("CLICKHOUSE_ADDR")
	if real == "" {
		t.Log("CLICKHOUSE_ADDR not set: the catch-up half needs the test command's ClickHouse")
		return
	}
	chdownForward(t, chAddr, real)
	began := time.Now()
	chdownWaitCaughtUp(t, s)
	t.Logf("ClickHouse up: analytics caught up %s later", time.Since(began).Round(100*time.Millisecond))
	select {
	case <-s.done:
		t.Fatalf("pushlog exited:\n%s", s.logs.String())
	default:
	}
}

type chdownBeat struct {
	Status string                     `json:"status"`
	Checks map[string]string          `json:"checks"`
	Roles  map[string]json.RawMessage `json:"roles"`
}

func chdownHeartbeat(t *testing.T, s *server) chdownBeat {
	t.Helper()
	resp, err := http.Get(s.HTTPURL + "/__heartbeat__")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("heartbeat %d: %s", resp.StatusCode, body)
	}
	var hb chdownBeat
	if err := json.Unmarshal(body, &hb); err != nil {
		t.Fatalf("heartbeat %s: %v", body, err)
	}
	return hb
}

// chdownForward opens addr and forwards every connection to target.
func chdownForward(t *testing.T, addr, target string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the former ClickHouse address: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	keep := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	// pushlog (stopped later by its own cleanup) holds its connections
	// open: close them here, or waiting for the copies never ends.
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			keep(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				keep(up)
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
}

// chdownWaitCaughtUp waits until the analytics group has committed the end
// of the messages topic: every push above is projected.
func chdownWaitCaughtUp(t *testing.T, s *server) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafkaBrokers(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := testContext(t, 90*time.Second)
	topic, group := s.opts.Namespace+".messages", s.opts.Namespace+"-analytics"
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for {
		committed, err := adm.FetchOffsets(ctx, group)
		behind := 0
		if err == nil {
			ends.Each(func(o kadm.ListedOffset) {
				if c, ok := committed.Lookup(topic, o.Partition); o.Offset > 0 && (!ok || c.At < o.Offset) {
					behind++
				}
			})
		}
		if err == nil && behind == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("analytics did not catch up after ClickHouse came up (%d partitions behind, %v):\n%s", behind, err, s.logs.String())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
