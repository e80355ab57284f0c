package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// rpEnv lets a test sync more than once per connection and keeps crashed
// connector members short-lived.
var rpEnv = []string{"PUSHLOG_MIN_CLIENT_PING=0", "PUSHLOG_GROUP_SESSION_TIMEOUT=6s", "PUSHLOG_GROUP_HEARTBEAT=1s"}

// rpRun runs a pushlog operator command against the server's Kafka and
// namespace; it returns the combined output and the exit error.
func rpRun(ctx context.Context, s *server, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, pushlogBin, args...)
	cmd.Env = append(append(os.Environ(),
		"KAFKA_BROKERS="+strings.Join(snBrokers(s), ","),
		"PUSHLOG_NAMESPACE="+s.opts.Namespace), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// rpWaitEvents waits until topic holds n events of uaid matching match.
func rpWaitEvents(ctx context.Context, t *testing.T, s *server, topic, uaid string, n int, match func(*pb.Event) bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(snBrokers(s)...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	got := 0
	for got < n {
		fs := cl.PollFetches(wctx)
		if wctx.Err() != nil {
			t.Fatalf("%d of %d events in %s: %v", got, n, topic, wctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) != uaid {
				return
			}
			if ev, err := schema.Decode(r); err == nil && match(ev) {
				got++
			}
		})
	}
}

// TestOpsReplaySince (b): acked, expired and unacked messages; with the
// server running the replay is refused; stopped, a dry run shows the
// rewind; after the replay and a restart exactly the unacked, unexpired
// messages arrive, nothing else.
func TestOpsReplaySince(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	s := startServer(t, serverOpts{Env: append(rpEnv, "CLICKHOUSE_ADDR=")})
	names, _ := schema.NamesFor(s.opts.Namespace)
	vapid := snNewVAPID(t)
	began := time.Now().Add(-time.Second)
	uaid, sub := snOffline(ctx, t, s, "")

	// Acked: delivered and acked, durably.
	acked := map[string]bool{"rp-acked-0": true, "rp-acked-1": true, "rp-acked-2": true}
	for text := range acked {
		snMustCreate(ctx, t, sub, []byte(text), snPush{TTL: snLongTTL, VAPID: vapid})
	}
	ua := uaRedial(ctx, t, s.WSURL, uaid)
	for _, n := range snReceiveAll(ctx, t, ua, sub, acked) {
		ua.ack(n)
	}
	ua.sync(ctx)
	snWaitAcked(ctx, t, s, uaid, sub.ChannelID, len(acked))
	ua.close()

	// Expired: a 1 s TTL while offline; wait for the owner's Expired events.
	for i := range 2 {
		snMustCreate(ctx, t, sub, []byte(fmt.Sprintf("rp-expired-%d", i)), snPush{TTL: 1, VAPID: vapid})
	}
	rpWaitEvents(ctx, t, s, names.Acks, uaid, 2, func(ev *pb.Event) bool { return ev.GetExpired() != nil })

	// Unacked: delivered once, never acked.
	unacked := map[string]bool{"rp-unacked-0": true, "rp-unacked-1": true, "rp-unacked-2": true}
	for text := range unacked {
		snMustCreate(ctx, t, sub, []byte(text), snPush{TTL: snLongTTL, VAPID: vapid})
	}
	ua = uaRedial(ctx, t, s.WSURL, uaid)
	first := snReceiveAll(ctx, t, ua, sub, unacked)
	ua.close()

	since := began.UTC().Format(time.RFC3339Nano)
	out, err := rpRun(ctx, s, nil, "replay", "--since", since, "--force")
	if err == nil || !strings.Contains(out, "live members") {
		t.Fatalf("replay under a live group: err %v, output:\n%s", err, out)
	}
	out, err = rpRun(ctx, s, nil, "replay", "--since", since, "--dry-run")
	if err != nil || !strings.Contains(out, "would be refused") {
		t.Fatalf("dry run under a live group: err %v, output:\n%s", err, out)
	}

	s.terminate() // a graceful stop leaves the group: it is Empty now
	out, err = rpRun(ctx, s, nil, "replay", "--since", since, "--dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	t.Logf("dry run:\n%s", out)
	p := schema.PartitionOf(uaid, 4)
	line := regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+(\d+) → (\d+)\s+(\S+) → (\S+)\s+(\d+)\s+(\d+)$`, p)).FindStringSubmatch(out)
	if line == nil {
		t.Fatalf("no plan line for partition %d in:\n%s", p, out)
	}
	committed, _ := strconv.Atoi(line[1])
	newOff, _ := strconv.Atoi(line[2])
	if newOff != 0 || committed <= newOff {
		// The whole test's messages are at or after `since`: the rewind
		// goes to the partition's first message, below the commit (the
		// oldest unsettled, an unacked one).
		t.Fatalf("partition %d: committed %d → %d, want a rewind to 0", p, committed, newOff)
	}
	out, err = rpRun(ctx, s, nil, "replay", "--since", since)
	if err == nil || !strings.Contains(out, "not confirmed") {
		t.Fatalf("replay without --force and no terminal: err %v\n%s", err, out)
	}
	out, err = rpRun(ctx, s, nil, "replay", "--since", since, "--force")
	if err != nil || !strings.Contains(out, "committed;") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	again, _ := rpRun(ctx, s, nil, "replay", "--since", since, "--dry-run")
	if !strings.Contains(again, fmt.Sprintf("%d → %d", newOff, newOff)) {
		t.Fatalf("after the replay the committed offset is not the new one:\n%s", again)
	}

	s.restart()
	ua = uaRedial(ctx, t, s.WSURL, uaid)
	second := snReceiveAll(ctx, t, ua, sub, unacked) // fails on acked or expired ones
	for text, n := range second {
		if n.Version != first[text].Version {
			t.Fatalf("%q replayed as version %q, first %q", text, n.Version, first[text].Version)
		}
		ua.ack(n)
	}
	ua.ack(snMarker(ctx, t, ua, sub, vapid)) // nothing else was pending
	ua.sync(ctx)
	ua.close()
}

// TestOpsReplayOffsetsValidation: bad --offsets are refused before any
// Kafka access changes anything.
func TestOpsReplayOffsetsValidation(t *testing.T) {
	ctx := testContext(t, time.Minute)
	s := &server{opts: serverOpts{Namespace: freshNamespace()}, env: []string{"KAFKA_BROKERS=" + kafkaBrokers(t)}}
	for _, bad := range []string{"x", "0:-1", "0:1,0:2", "a:1"} {
		out, err := rpRun(ctx, s, nil, "replay", "--offsets", bad, "--dry-run")
		if err == nil || !strings.Contains(out, "--offsets") {
			t.Errorf("--offsets %q: err %v, output %s", bad, err, out)
		}
	}
	out, err := rpRun(ctx, s, nil, "replay", "--since", "1h", "--dry-run")
	if err == nil || !strings.Contains(out, "does not exist") {
		t.Errorf("unknown namespace: err %v, output %s", err, out)
	}
}

// TestOpsConnectorOutage (a): the connector role stops while ingest keeps
// accepting pushes; after its restart every accepted message arrives.
func TestOpsConnectorOutage(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	ns := freshNamespace()
	ingest := startServer(t, serverOpts{Namespace: ns, Roles: "ingest,projector", Env: append(rpEnv, "CLICKHOUSE_ADDR=")})
	conn := rpStartConnector(t, ingest)
	rpWaitStable(ctx, t, ingest, ns+"-connectors")
	uaid, sub := snOffline(ctx, t, &server{WSURL: conn.WSURL}, "")
	vapid := snNewVAPID(t)
	before := map[string]bool{}
	for i := range 5 {
		text := fmt.Sprintf("rp-before-%d", i)
		before[text] = true
		snMustCreate(ctx, t, sub, []byte(text), snPush{TTL: snLongTTL, VAPID: vapid})
	}
	conn.terminate()
	during := map[string]bool{}
	for i := range 20 {
		text := fmt.Sprintf("rp-during-%d", i)
		during[text] = true
		snMustCreate(ctx, t, sub, []byte(text), snPush{TTL: snLongTTL, VAPID: vapid})
	}
	conn.restart()
	all := map[string]bool{}
	for k := range before {
		all[k] = true
	}
	for k := range during {
		all[k] = true
	}
	ua := uaRedial(ctx, t, conn.WSURL, uaid)
	for _, n := range snReceiveAll(ctx, t, ua, sub, all) {
		ua.ack(n)
	}
	ua.ack(snMarker(ctx, t, ua, sub, vapid))
	ua.sync(ctx)
	ua.close()
}

// rpWaitStable waits until a consumer group has finished its first
// rebalance (new groups wait group.initial.rebalance.delay.ms first).
func rpWaitStable(ctx context.Context, t *testing.T, s *server, group string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(snBrokers(s)...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		gs, err := adm.DescribeGroups(ctx, group)
		if err == nil && gs[group].State == "Stable" {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("group %s not stable: %v", group, ctx.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rpStartConnector runs a connector-only process in the namespace of s
// (which runs ingest and projector).
func rpStartConnector(t *testing.T, s *server) *server {
	t.Helper()
	c := &server{t: t, opts: s.opts, HTTPURL: s.HTTPURL}
	ws := freePort(t)
	c.WSURL = "ws://" + ws + "/"
	c.env = append(append([]string(nil), s.env...), "PUSHLOG_WS_ADDR="+ws, "PUSHLOG_HTTP_ADDR="+freePort(t), "PUSHLOG_ROLES=connector", "PUSHLOG_PUBLIC_URL="+s.HTTPURL)
	c.opts.Args = nil
	c.opts.Roles = "connector"
	c.start() // waits for HTTPURL (the ingest process) and the WebSocket port
	t.Cleanup(c.stop)
	return c
}

// TestOpsAnalyticsRebuild (c): a day of ClickHouse data wiped by hand and
// rebuilt from Kafka has the same counts; a projector started afterwards
// does not count anything twice.
func TestOpsAnalyticsRebuild(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	chAddr := analyticsClickHouseAddr(t)
	db := "rp_" + analyticsRandom(6)
	s := startServer(t, serverOpts{Env: append([]string{"CLICKHOUSE_ADDR=" + chAddr, "PUSHLOG_CLICKHOUSE_DB=" + db}, rpEnv...)})
	conn, err := analytics.Open(ctx, chAddr, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = conn.Close()
	})
	count := func(table string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT toUInt64(count()) FROM %s.%s", db, table)).Scan(&n); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		return n
	}
	sum := func(col string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT toUInt64(sum(%s)) FROM %s.sender_minute", col, db)).Scan(&n); err != nil {
			t.Fatalf("sum %s: %v", col, err)
		}
		return n
	}
	day := time.Now().UTC().Format(time.DateOnly)
	vapid := snNewVAPID(t)
	uaid, sub := snOffline(ctx, t, s, "")
	const n = 12
	want := map[string]bool{}
	for i := range n {
		text := fmt.Sprintf("rp-analytics-%d", i)
		want[text] = true
		snMustCreate(ctx, t, sub, []byte(text), snPush{TTL: snLongTTL, VAPID: vapid})
	}
	ua := uaRedial(ctx, t, s.WSURL, uaid)
	for _, m := range snReceiveAll(ctx, t, ua, sub, want) {
		ua.ack(m)
	}
	ua.sync(ctx)
	ua.close()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("projection", func() bool { return count("accepted") == n && count("acked") == n && count("delivered") >= n })
	s.terminate() // the projector group is empty now

	tables := []string{"accepted", "delivered", "acked", "registrations"}
	before := map[string]uint64{}
	for _, tb := range tables {
		before[tb] = count(tb)
	}
	beforeAccepted, beforeAcked := sum("accepted"), sum("acked")
	for _, tb := range append(tables, "sender_minute") {
		if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION '%s'", db, tb, day)); err != nil {
			t.Fatal(err)
		}
	}
	if count("accepted") != 0 {
		t.Fatal("the wipe left rows")
	}
	out, err := rpRun(ctx, s, []string{"CLICKHOUSE_ADDR=" + chAddr, "PUSHLOG_CLICKHOUSE_DB=" + db}, "analytics", "rebuild", "--since", day)
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	t.Logf("rebuild:\n%s", out)
	for _, tb := range tables {
		if got := count(tb); got != before[tb] {
			t.Errorf("%s: %d rows after the rebuild, %d before the wipe", tb, got, before[tb])
		}
	}
	if a, k := sum("accepted"), sum("acked"); a != beforeAccepted || k != beforeAcked {
		t.Errorf("sender_minute: accepted %d acked %d after, %d %d before", a, k, beforeAccepted, beforeAcked)
	}

	// The projector resumes after its progress: one more message is
	// counted once, the rebuilt ones not again.
	s.restart()
	snMustCreate(ctx, t, sub, []byte("rp-analytics-last"), snPush{TTL: snLongTTL, VAPID: vapid})
	waitFor("the new message", func() bool { return count("accepted") == n+1 })
	time.Sleep(2 * time.Second) // a double count would show up within a batch interval
	if got := count("accepted"); got != n+1 {
		t.Fatalf("accepted: %d rows, want %d", got, n+1)
	}
	if got := count("acked"); got != before["acked"] {
		t.Fatalf("acked: %d rows, want %d", got, before["acked"])
	}

	// A live projector group refuses the rebuild.
	out, err = rpRun(ctx, s, []string{"CLICKHOUSE_ADDR=" + chAddr, "PUSHLOG_CLICKHOUSE_DB=" + db}, "analytics", "rebuild", "--since", day)
	if err == nil || !strings.Contains(out, "refused") {
		t.Fatalf("rebuild under a live projector: err %v\n%s", err, out)
	}
}
