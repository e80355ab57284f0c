package integration

// Issue 16 points 2, 3 and 7 on the built binary: operator commands with no
// flags against a running embedded serve, the Dockerflow endpoints on every
// role's listener and `pushlog health`, a DELETE counted once under its
// sender in ClickHouse, a node id that survives a restart, and the one-line
// hint to migrate.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/analytics"
)

// noOpsEnv is the test process's environment without anything that
// points a pushlog command somewhere (KAFKA_BROKERS, CLICKHOUSE_ADDR,
// PUSHLOG_*): what a newcomer's shell has.
func noOpsEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "KAFKA_BROKERS" || name == "CLICKHOUSE_ADDR" || strings.HasPrefix(name, "PUSHLOG_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// nfRun runs the binary in dir and returns stdout, stderr and the exit code.
func nfRun(ctx context.Context, t testing.TB, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pushlogBin, args...)
	cmd.Dir, cmd.Env = dir, env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("pushlog %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// nfOneLine fails unless stderr is exactly one line containing want.
func nfOneLine(t testing.TB, what, stderr, want string) {
	t.Helper()
	s := strings.TrimRight(stderr, "\n")
	if strings.Contains(s, "\n") || !strings.Contains(s, want) {
		t.Errorf("%s: stderr %q, want one line with %q", what, stderr, want)
	}
}

// nfStatusNodes returns the node ids `pushlog status --json` lists.
func nfStatusNodes(ctx context.Context, t testing.TB, dir string, env []string) (string, []string) {
	t.Helper()
	out, errOut, code := nfRun(ctx, t, dir, env, "status", "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, errOut)
	}
	var st struct {
		Namespace string `json:"namespace"`
		Nodes     []struct {
			NodeID string `json:"node_id"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, out)
	}
	var ids []string
	for _, n := range st.Nodes {
		ids = append(ids, n.NodeID)
	}
	return st.Namespace, ids
}

// nfWaitFile waits until path exists.
func nfWaitFile(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s", path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNewcomerOpsNoFlags: with serve running on the embedded default, in
// the directory it was started from, status, topics and replay work with
// no flag and no variable; a parse error is one line; after a clean stop
// they say no serve runs; a restart keeps the node id.
func TestNewcomerOpsNoFlags(t *testing.T) {
	wd := t.TempDir()
	dataDir := filepath.Join(wd, "pushlog-data") // serve's default, relative to wd
	// No ClickHouse: analytics off, as on a newcomer's machine.
	s := startServer(t, serverOpts{Embedded: true, DataDir: dataDir, Env: []string{"CLICKHOUSE_ADDR="}})
	ctx := testContext(t, 3*time.Minute)
	nfWaitFile(t, filepath.Join(dataDir, "serve.json"), 30*time.Second)
	env := noOpsEnv()

	for _, want := range []string{"data directory  " + dataDir, "roles           ingest, connector, projector",
		"analytics       off: start ClickHouse and pass --clickhouse-addr", "serve.json"} {
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("start-up banner lacks %q:\n%s", want, s.logs.String())
		}
	}
	idFile, err := os.ReadFile(filepath.Join(dataDir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := strings.TrimSpace(string(idFile))

	// The connector joins its group just after start-up: wait for it.
	var ns string
	var nodes []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		ns, nodes = nfStatusNodes(ctx, t, wd, env)
		if len(nodes) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ns != s.opts.Namespace || len(nodes) != 1 || nodes[0] != nodeID {
		t.Fatalf("status with no flags: namespace %q nodes %v, want %q [%s]", ns, nodes, s.opts.Namespace, nodeID)
	}
	out, errOut, code := nfRun(ctx, t, wd, env, "status")
	if code != 0 || !strings.Contains(out, "namespace "+s.opts.Namespace) || !strings.Contains(out, nodeID) {
		t.Errorf("status: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := nfRun(ctx, t, wd, env, "topics"); code != 0 || !strings.Contains(out, s.opts.Namespace+".messages") {
		t.Errorf("topics: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := nfRun(ctx, t, wd, env, "replay", "--since", "1h", "--dry-run"); code != 0 || !strings.Contains(out, "live members") {
		t.Errorf("replay --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	// --data-dir from elsewhere finds it too.
	if out, errOut, code := nfRun(ctx, t, t.TempDir(), env, "status", "--data-dir", dataDir); code != 0 || !strings.Contains(out, nodeID) {
		t.Errorf("status --data-dir: exit %d\n%s%s", code, out, errOut)
	}
	// Explicit flags still win: a wrong broker is not replaced by the file.
	if _, errOut, code := nfRun(ctx, t, wd, noOpsEnv("KAFKA_BROKERS=127.0.0.1:1"), "topics"); code == 0 {
		t.Errorf("topics with a dead --kafka-brokers succeeded: %s", errOut)
	}

	_, errOut, code = nfRun(ctx, t, wd, env, "status", "--bogus")
	if code != 80 {
		t.Errorf("parse error: exit %d, want 80", code)
	}
	nfOneLine(t, "status --bogus", errOut, "pushlog: unknown flag --bogus (see pushlog status --help)")
	_, errOut, code = nfRun(ctx, t, wd, env, "analytics", "report")
	if code != 1 {
		t.Errorf("analytics report without ClickHouse: exit %d", code)
	}
	nfOneLine(t, "analytics report", errOut, "has analytics off")

	wsAddr := strings.TrimSuffix(strings.TrimPrefix(s.WSURL, "ws://"), "/")
	for _, target := range []string{s.HTTPURL, wsAddr} {
		if out, errOut, code := nfRun(ctx, t, wd, env, "health", target); code != 0 || !strings.Contains(out, "200 OK") {
			t.Errorf("health %s: exit %d %s%s", target, code, out, errOut)
		}
	}

	s.terminate()
	if _, err := os.Stat(filepath.Join(dataDir, "serve.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve.json left after a clean stop: %v", err)
	}
	_, errOut, code = nfRun(ctx, t, wd, env, "status")
	if code != 1 {
		t.Errorf("status with serve stopped: exit %d", code)
	}
	nfOneLine(t, "status with serve stopped", errOut, "no running pushlog serve found")

	// A restart keeps the node id (the data directory holds it).
	s.restart()
	nfWaitFile(t, filepath.Join(dataDir, "serve.json"), 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, nodes = nfStatusNodes(ctx, t, wd, env)
		if len(nodes) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(nodes) != 1 || nodes[0] != nodeID {
		t.Errorf("after a restart the node is %v, want [%s]", nodes, nodeID)
	}
}

// nfProcess is a pushlog serve with given roles, started directly (the
// harness waits for an ingest listener these processes do not have).
type nfProcess struct {
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan struct{}
}

func nfStart(t *testing.T, env []string) *nfProcess {
	t.Helper()
	p := &nfProcess{logs: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(pushlogBin, "serve")
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("pushlog output:\n%s", p.logs.String())
		}
	})
	return p
}

// nfWaitHealthy runs `pushlog health addr` until it exits 0.
func nfWaitHealthy(ctx context.Context, t *testing.T, p *nfProcess, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("pushlog exited:\n%s", p.logs.String())
		default:
		}
		out, errOut, code := nfRun(ctx, t, "", noOpsEnv(), "health", "--timeout", "2s", addr)
		if code == 0 {
			if !strings.Contains(out, "200 OK OK") {
				t.Errorf("health %s: %q", addr, out)
			}
			return
		}
		if code != 1 {
			t.Fatalf("health %s: exit %d (want 0 or 1): %s", addr, code, errOut)
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %s never passed: %s\n%s", addr, errOut, p.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nfGetJSON GETs url and decodes its JSON answer.
func nfGetJSON(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// TestHealthOnEveryRole: a connector-only process answers the Dockerflow
// endpoints on its WebSocket listener, a projector-only one on its
// --metrics-addr listener; `pushlog health` passes on both and fails (exit
// 1, one line) where nothing listens. An unreachable ClickHouse shows as
// not ready without failing the projector's heartbeat.
func TestHealthOnEveryRole(t *testing.T) {
	brokers := kafkaBrokers(t)
	ctx := testContext(t, 3*time.Minute)
	common := noOpsEnv("KAFKA_BROKERS="+brokers, "PUSHLOG_NAMESPACE="+freshNamespace(), "PUSHLOG_PARTITIONS=4", "PUSHLOG_LOG_LEVEL=debug")

	wsAddr := freePort(t)
	conn := nfStart(t, append(common, "PUSHLOG_ROLES=connector", "PUSHLOG_WS_ADDR="+wsAddr,
		"PUSHLOG_HTTP_ADDR="+freePort(t), "PUSHLOG_DATA_DIR="+t.TempDir()))
	metricsAddr := freePort(t)
	proj := nfStart(t, append(common, "PUSHLOG_ROLES=projector", "PUSHLOG_METRICS_ADDR="+metricsAddr,
		"CLICKHOUSE_ADDR=127.0.0.1:1", "PUSHLOG_DATA_DIR="+t.TempDir()))
	nfWaitHealthy(ctx, t, conn, wsAddr)
	nfWaitHealthy(ctx, t, proj, metricsAddr)

	type heartbeat struct {
		Status    string            `json:"status"`
		Checks    map[string]string `json:"checks"`
		Readiness map[string]string `json:"readiness"`
		Roles     map[string]any    `json:"roles"`
	}
	for _, tc := range []struct {
		name, addr string
		roles      []string
		readiness  string
	}{
		{"connector", wsAddr, []string{"connector"}, ""},
		{"projector", metricsAddr, []string{"channel-projector", "analytics-projector"}, "clickhouse"},
	} {
		var hb heartbeat
		for deadline := time.Now().Add(30 * time.Second); ; {
			code := nfGetJSON(t, "http://"+tc.addr+"/__heartbeat__", &hb)
			if code != 200 || hb.Status != "OK" || hb.Checks["kafka"] != "OK" || hb.Checks["roles"] != "OK" {
				t.Errorf("%s heartbeat: %d %+v", tc.name, code, hb)
			}
			// The projector tries ClickHouse at start: wait for it to fail.
			if tc.readiness == "" || strings.HasPrefix(hb.Readiness[tc.readiness], "NOT READY") || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, r := range tc.roles {
			if _, ok := hb.Roles[r]; !ok {
				t.Errorf("%s heartbeat lacks role %s: %+v", tc.name, r, hb.Roles)
			}
		}
		if tc.readiness != "" && !strings.HasPrefix(hb.Readiness[tc.readiness], "NOT READY") {
			t.Errorf("%s heartbeat: readiness %v, want %s not ready (nothing listens there)", tc.name, hb.Readiness, tc.readiness)
		}
		var lb map[string]any
		if code := nfGetJSON(t, "http://"+tc.addr+"/__lbheartbeat__", &lb); code != 200 {
			t.Errorf("%s lbheartbeat: %d", tc.name, code)
		}
		var v struct{ Source, Version, Commit string }
		if code := nfGetJSON(t, "http://"+tc.addr+"/__version__", &v); code != 200 || v.Source != "https://github.com/pushlog/pushlog" || v.Version == "" {
			t.Errorf("%s version: %d %+v", tc.name, code, v)
		}
	}
	// /metrics still answers on both listeners.
	for _, addr := range []string{wsAddr, metricsAddr} {
		if code := nfGetJSON(t, "http://"+addr+"/metrics", nil); code != 200 {
			t.Errorf("%s/metrics: %d", addr, code)
		}
	}
	_, errOut, code := nfRun(ctx, t, "", noOpsEnv(), "health", freePort(t))
	if code != 1 {
		t.Errorf("health where nothing listens: exit %d", code)
	}
	nfOneLine(t, "health on a closed port", errOut, "connection refused")
}

// TestComposeHealthchecks: every pushlog service of docker-compose.yml has
// a healthcheck running `pushlog health` against a port it listens on, and
// the projector has a metrics address (its only HTTP listener).
func TestComposeHealthchecks(t *testing.T) {
	compose := readRepoFile(t, filepath.Join("..", "docker-compose.yml"))
	for _, svc := range []string{"ingest", "connector", "projector"} {
		block := regexp.MustCompile(`(?ms)^  ` + svc + `:\n(.*?)\n\n`).FindStringSubmatch(compose + "\n\n")
		if block == nil {
			t.Errorf("compose has no service %s", svc)
			continue
		}
		m := regexp.MustCompile(`test: \["CMD", "/usr/local/bin/pushlog", "health", "-q", "http://127\.0\.0\.1:(\d+)/__heartbeat__"\]`).FindStringSubmatch(block[1])
		if m == nil {
			t.Errorf("service %s has no `pushlog health` healthcheck:\n%s", svc, block[1])
			continue
		}
		if !strings.Contains(block[1], `":`+m[1]+`"`) {
			t.Errorf("service %s checks port %s, where it does not listen", svc, m[1])
		}
	}
	if !regexp.MustCompile(`(?ms)^  projector:\n.*?PUSHLOG_METRICS_ADDR: ":\d+"`).MatchString(compose) {
		t.Error("the projector has no PUSHLOG_METRICS_ADDR")
	}
}

// nfReport runs `pushlog analytics report --format json` and returns the
// named query's rows.
func nfReport(ctx context.Context, t *testing.T, chAddr, db, query string, extra ...string) []map[string]any {
	t.Helper()
	rows, err := nfTryReport(ctx, t, chAddr, db, query, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// nfTryReport is nfReport for polling: a server that has not migrated its
// database yet (the analytics projector does it as it starts) is an error
// to retry, not a failure.
func nfTryReport(ctx context.Context, t *testing.T, chAddr, db, query string, extra ...string) ([]map[string]any, error) {
	t.Helper()
	args := append([]string{"analytics", "report", "--format", "json", "--query", query, "--clickhouse-addr", chAddr, "--clickhouse-db", db}, extra...)
	out, errOut, code := nfRun(ctx, t, "", noOpsEnv(), args...)
	if code != 0 {
		return nil, fmt.Errorf("analytics report: exit %d: %s", code, errOut)
	}
	var doc struct {
		Reports []struct {
			Name  string
			Rows  []map[string]any
			Error string
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("report JSON: %w: %s", err, out)
	}
	if len(doc.Reports) != 1 || doc.Reports[0].Error != "" {
		return nil, fmt.Errorf("report: %s", out)
	}
	return doc.Reports[0].Rows, nil
}

// nfRow returns the row whose first column (by name) is key.
func nfRow(rows []map[string]any, col, key string) map[string]any {
	for _, r := range rows {
		if r[col] == key {
			return r
		}
	}
	return nil
}

// TestAnalyticsDeleteCountedOnce: a message its sender DELETEs twice is
// counted once, under its sender (dropped 1 of which deleted 1), not per
// request under "(none)"; the raw table still records both requests. After
// a restart on the same data directory, "connections by node" still has one
// node.
func TestAnalyticsDeleteCountedOnce(t *testing.T) {
	chAddr := analyticsClickHouseAddr(t)
	db := "it_delete_" + analyticsRandom(6)
	s := startServer(t, serverOpts{Env: []string{"CLICKHOUSE_ADDR=" + chAddr, "PUSHLOG_CLICKHOUSE_DB=" + db}})
	ctx := testContext(t, 4*time.Minute)
	sender := "mailto:integration@pushlog.example" // webpush-go's Subscriber in snTrySend

	ua := uaDial(ctx, t, s.WSURL, "")
	uaid := ua.UAID
	sub := ua.subscribe(ctx, "")
	ua.close() // offline: the message stays pending until the DELETE
	res := snMustCreate(ctx, t, sub, []byte("delete me"), snPush{TTL: 3600, VAPID: snNewVAPID(t)})
	loc := res.Header.Get("Location")
	for i := range 2 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, loc, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE %d: %d", i+1, resp.StatusCode)
		}
	}

	var row map[string]any
	for deadline := time.Now().Add(90 * time.Second); ; {
		rows, err := nfTryReport(ctx, t, chAddr, db, "delivery_rate")
		row = nfRow(rows, "sender", sender)
		if err == nil && row != nil && row["deleted"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s: sender row %v, last error %v", row, err)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second) // a second count would land by now
	rows := nfReport(ctx, t, chAddr, db, "delivery_rate")
	row = nfRow(rows, "sender", sender)
	if row == nil || row["accepted"] != float64(1) || row["dropped"] != float64(1) || row["deleted"] != float64(1) {
		t.Errorf("sender row %v, want accepted 1 dropped 1 deleted 1 (all rows %v)", row, rows)
	}
	if none := nfRow(rows, "sender", "(none)"); none != nil {
		t.Errorf("a (none) sender row: %v", none)
	}
	if all := nfRow(rows, "sender", "(all)"); all == nil || all["deleted"] != float64(1) {
		t.Errorf("(all) row %v, want deleted 1", all)
	}
	conn, err := analytics.Open(ctx, chAddr, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var requests, drops uint64
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT toUInt64(count()) FROM %s.deleted", db)).Scan(&requests); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT toUInt64(countIf(reason = 'deleted' AND vapid_sub = %s)) FROM %s.dropped", analytics.QuoteString(sender), db)).Scan(&drops); err != nil {
		t.Fatal(err)
	}
	if requests != 2 || drops != 1 {
		t.Errorf("raw tables: %d DELETE requests (want 2), %d deleted drops (want 1)", requests, drops)
	}
	// --until before the push: the window holds nothing of it.
	if rows := nfReport(ctx, t, chAddr, db, "delivery_rate", "--since", "2h", "--until", "1h"); nfRow(rows, "sender", sender) != nil {
		t.Errorf("--until 1h still shows the push: %v", rows)
	}

	// Node id: the same across a restart, so one node in the report.
	idFile, err := os.ReadFile(filepath.Join(s.opts.DataDir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := strings.TrimSpace(string(idFile))
	s.terminate()
	s.restart()
	ua2 := uaDial(ctx, t, s.WSURL, uaid)
	ua2.close()
	var nodes []string
	var conns float64
	for deadline := time.Now().Add(90 * time.Second); ; {
		nodes, conns = nodes[:0], 0
		for _, r := range nfReport(ctx, t, chAddr, db, "connections") {
			nodes = append(nodes, fmt.Sprint(r["node"]))
			if n, ok := r["connects"].(float64); ok {
				conns += n
			}
		}
		if conns >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(nodes) != 1 || nodes[0] != nodeID || conns < 2 {
		t.Errorf("connections by node after a restart: %v with %.0f connects, want [%s] with 2", nodes, conns, nodeID)
	}
}

// TestAnalyticsReportNeedsMigrate: against a server without the database,
// report says in one line to run `pushlog analytics migrate`; after it, the
// report runs (in every format).
func TestAnalyticsReportNeedsMigrate(t *testing.T) {
	chAddr := analyticsClickHouseAddr(t)
	db := "it_missing_" + analyticsRandom(6)
	ctx := testContext(t, 2*time.Minute)
	out, errOut, code := nfRun(ctx, t, "", noOpsEnv(), "analytics", "report", "--clickhouse-addr", chAddr, "--clickhouse-db", db)
	if code != 1 || out != "" {
		t.Errorf("report without the database: exit %d, stdout %q", code, out)
	}
	nfOneLine(t, "report without the database", errOut, "run `pushlog analytics migrate`")
	if out, errOut, code := nfRun(ctx, t, "", noOpsEnv("CLICKHOUSE_ADDR="+chAddr, "PUSHLOG_CLICKHOUSE_DB="+db), "analytics", "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d %s%s", code, out, errOut)
	}
	t.Cleanup(func() {
		if conn, err := analytics.Open(context.Background(), chAddr, db); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
			conn.Close()
		}
	})
	for _, format := range []string{"table", "json", "csv"} {
		out, errOut, code := nfRun(ctx, t, "", noOpsEnv(), "analytics", "report", "--addr", chAddr, "--database", db, "--format", format, "--since", "2026-01-01", "--until", "1m")
		if code != 0 {
			t.Errorf("report --format %s: exit %d %s", format, code, errOut)
			continue
		}
		want := map[string]string{"table": "== Delivery rate by sender", "json": `"name": "delivery_rate"`, "csv": "report,sender,accepted"}[format]
		if !strings.Contains(out, want) {
			t.Errorf("report --format %s lacks %q:\n%s", format, want, out)
		}
	}
}
