package integration

// The web console in a real browser: Debian's chromium, headless, driven
// over the DevTools protocol (chromedp), opens every console page of a
// running pushlog (real Kafka and ClickHouse) that received known
// traffic, and checks that the figures on the page are that traffic's.
// Screenshots go to integration/output/ (git-ignored); deploy/console.png
// in the README is one of them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// cnChromium is Debian's chromium (PUSHLOG_CHROMIUM overrides): missing,
// the test fails in CI and skips elsewhere.
func cnChromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PUSHLOG_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed: apt-get install chromium (deploy/test.sh installs it)"
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// cnBrowser starts one headless chromium for the test.
func cnBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(cnChromium(t)),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// cnOutput is integration/output/, where screenshots go.
func cnOutput(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(senderRepoRoot(t), "integration", "output")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cnPage opens url, waits until the page has rendered at least `polls`
// answers of its API and until every want (element id → text) shows, and
// saves a screenshot. It returns the texts of the ids it was asked for.
func cnPage(t *testing.T, bctx context.Context, pageURL, shot string, want map[string]func(string) bool) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("open %s: %v", pageURL, err)
	}
	var got map[string]string
	deadline := time.Now().Add(75 * time.Second)
	for {
		ids, _ := json.Marshal(keys(want))
		// One evaluation: the texts and whether a poll has filled them.
		js := fmt.Sprintf(`(() => { const o = {"__loaded": document.body.dataset.loaded || "0"}; for (const id of %s) { const e = document.getElementById(id); o[id] = e ? e.textContent.trim() : "<missing>"; } return o; })()`, ids)
		texts, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](js))
		loaded := texts["__loaded"]
		delete(texts, "__loaded")
		if err != nil {
			t.Fatalf("%s: read page: %v", pageURL, err)
		}
		got = texts
		ok := loaded != "0"
		for id, check := range want {
			if !check(texts[id]) {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			errText, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("error") ? document.getElementById("error").textContent : ""`))
			t.Fatalf("%s: after 75s the page shows %v (loaded %s, error %q)", pageURL, texts, loaded, errText)
		}
		time.Sleep(500 * time.Millisecond)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("%s: screenshot: %v", pageURL, err)
	}
	path := filepath.Join(cnOutput(t), shot)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v (screenshot %s)", pageURL, got, path)
	return got
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func is(want string) func(string) bool { return func(s string) bool { return s == want } }

func isNumber(s string) bool {
	var f float64
	_, err := fmt.Sscan(s, &f)
	return err == nil
}

// cnEval evaluates js on the current page.
func cnEval[T any](t *testing.T, bctx context.Context, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// cnTableRow is the text of the row of table id whose first cell is key.
const cnTableRow = `((id, key) => { const t = document.getElementById(id); if (!t) return []; for (const r of t.tBodies[0].rows) { if (r.cells[0].textContent === key) return [...r.cells].map(c => c.textContent); } return []; })`

// cnAPI reads a console API answer (to wait for analytics to catch up
// without a browser poll per try).
func cnAPI(t *testing.T, base, path string, v any) int {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	return resp.StatusCode
}

func TestConsole(t *testing.T) {
	chAddr := analyticsClickHouseAddr(t)
	bctx := cnBrowser(t, context.Background())
	consoleAddr := freePort(t)
	db := "it_console_" + analyticsRandom(4)
	s := startServer(t, serverOpts{Env: []string{
		"CLICKHOUSE_ADDR=" + chAddr,
		"PUSHLOG_CLICKHOUSE_DB=" + db,
		"PUSHLOG_CONSOLE_ADDR=" + consoleAddr,
		"PUSHLOG_LAG_INTERVAL=1s",
	}})
	base := "http://" + consoleAddr
	ctx := testContext(t, 4*time.Minute)
	vapid := snNewVAPID(t)

	// Known traffic: 5 messages delivered and acked on one connected user
	// agent; 2 with the same Topic for an offline one, the newer replacing
	// (dropping) the older; 1 push to an endpoint that does not exist.
	const acked, pending, dropped = 5, 1, 1
	ua := uaDial(ctx, t, s.WSURL, "")
	sub := ua.subscribe(ctx, "")
	for i := range acked {
		msg := fmt.Sprintf("console %d", i)
		snMustCreate(ctx, t, sub, []byte(msg), snPush{TTL: snLongTTL, VAPID: vapid})
		n := snExpect(ctx, t, ua, sub, msg)
		ua.ack(n)
	}
	ua.sync(ctx)
	_, offline := snOffline(ctx, t, s, "")
	snMustCreate(ctx, t, offline, []byte("dropped"), snPush{TTL: snLongTTL, VAPID: vapid, Topic: "console"})
	snMustCreate(ctx, t, offline, []byte("pending"), snPush{TTL: snLongTTL, VAPID: vapid, Topic: "console"})
	bad, err := http.Post(s.HTTPURL+"/wpush/v1/not-an-endpoint", "application/octet-stream", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	var badBody struct {
		Errno int `json:"errno"`
	}
	_ = json.NewDecoder(bad.Body).Decode(&badBody)
	bad.Body.Close()
	badKey := fmt.Sprintf("%d/%d", bad.StatusCode, badBody.Errno)
	if bad.StatusCode < 400 {
		t.Fatalf("push to a made-up endpoint answered %d", bad.StatusCode)
	}

	// Analytics catches up (projector batches, ClickHouse merges).
	const accepted = acked + pending + dropped
	var sender string
	deadline := time.Now().Add(90 * time.Second)
	for {
		var an struct {
			Summary struct{ Accepted, Acked, Dropped float64 }
			Tables  []struct {
				Name string
				Rows [][]string
			}
		}
		if code := cnAPI(t, base, "/api/analytics?range=1h", &an); code == http.StatusOK && an.Summary.Accepted == accepted && an.Summary.Acked == acked && an.Summary.Dropped == dropped {
			for _, tb := range an.Tables {
				if tb.Name == "01_delivery_rate" {
					for _, r := range tb.Rows {
						if r[0] != "(all)" {
							sender = r[0]
						}
					}
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("analytics did not show %d accepted, %d acked, %d dropped within 90s: %+v\n%s", accepted, acked, dropped, an.Summary, s.logs.String())
		}
		time.Sleep(2 * time.Second)
	}
	if !strings.Contains(sender, "integration@pushlog.example") {
		t.Fatalf("sender row %q, want webpush-go's subscriber", sender)
	}

	t.Run("Overview", func(t *testing.T) {
		cnPage(t, bctx, base+"/", "console-overview.png", map[string]func(string) bool{
			"kafka-health":      is("ok"),
			"clickhouse-health": is("ok"),
			"node-count":        is("1"),
			"owned-partitions":  is("4"), // PUSHLOG_PARTITIONS=4, one node
			"connections":       is("1"),
			"pending":           is(fmt.Sprint(pending)),
			// The pending message is some seconds old; analytics is caught up.
			"oldest-pending":  func(s string) bool { return isNumber(s) && s != "0" },
			"analytics-delay": isNumber,
		})
		row := cnEval[[]string](t, bctx, cnTableRow+`("breakers", "ingest/kafka")`)
		if len(row) != 2 || row[1] != "closed" {
			t.Fatalf("breaker ingest/kafka row %q", row)
		}
		groups := cnEval[int](t, bctx, `document.getElementById("groups").tBodies[0].rows.length`)
		if groups < 3 { // connectors, channels, analytics
			t.Fatalf("%d consumer groups shown, want connectors, channels and analytics", groups)
		}
	})

	t.Run("Live", func(t *testing.T) {
		cnPage(t, bctx, base+"/live", "console-live.png", map[string]func(string) bool{
			"total-deliveries":  is(fmt.Sprint(acked)),
			"total-acks":        is(fmt.Sprint(acked)),
			"total-nacks":       is("0"),
			"gauge-connections": is("1"),
			"gauge-pending":     is(fmt.Sprint(pending)),
		})
		if row := cnEval[[]string](t, bctx, cnTableRow+`("push-totals", "201/0")`); len(row) != 2 || row[1] != fmt.Sprint(accepted) {
			t.Fatalf("push totals row 201/0 = %q, want %d", row, accepted)
		}
		if row := cnEval[[]string](t, bctx, cnTableRow+`("push-totals", "`+badKey+`")`); len(row) != 2 || row[1] != "1" {
			t.Fatalf("push totals row %s = %q, want 1", badKey, row)
		}
		// Four charts drawn by uPlot, with a legend entry per series.
		if n := cnEval[int](t, bctx, `document.querySelectorAll(".chart .uplot canvas").length`); n != 4 {
			t.Fatalf("%d chart canvases, want 4", n)
		}
		legend := cnEval[string](t, bctx, `document.getElementById("chart-pushes").textContent`)
		if !strings.Contains(legend, "201/0") || !strings.Contains(legend, badKey) {
			t.Fatalf("pushes chart legend %q lacks 201/0 or %s", legend, badKey)
		}
		latency := cnEval[string](t, bctx, `document.getElementById("chart-latency").textContent`)
		if !strings.Contains(latency, "produce p99") || !strings.Contains(latency, "push→socket p50") {
			t.Fatalf("latency chart legend %q lacks produce p99 or push→socket p50", latency)
		}
		// The five deliveries to the connected user agent drew push→socket
		// quantiles: positive, and a local pipeline's milliseconds.
		var live struct {
			Charts map[string]struct {
				Series []struct {
					Label  string
					Values []*float64
				}
			}
		}
		if code := cnAPI(t, base, "/api/live", &live); code != http.StatusOK {
			t.Fatalf("GET /api/live: %d", code)
		}
		var p50s []float64
		for _, sr := range live.Charts["latency"].Series {
			if sr.Label == "push→socket p50" {
				for _, v := range sr.Values {
					if v != nil {
						p50s = append(p50s, *v)
					}
				}
			}
		}
		if len(p50s) == 0 {
			t.Fatalf("no push→socket p50 in the latency chart: %+v", live.Charts["latency"])
		}
		for _, ms := range p50s {
			if ms <= 0 || ms > 3000 {
				t.Fatalf("push→socket p50 %v ms, want above 0 and below 3s (all: %v)", ms, p50s)
			}
		}
		t.Logf("push→socket p50 per interval (ms): %v", p50s)
	})

	t.Run("Analytics", func(t *testing.T) {
		got := cnPage(t, bctx, base+"/analytics?range=1h", "console-analytics.png", map[string]func(string) bool{
			"accepted":  is(fmt.Sprint(accepted)),
			"delivered": is(fmt.Sprint(acked)),
			"acked":     is(fmt.Sprint(acked)),
			"acked-pct": is("71.4 %"), // 5 of 7
			"dropped":   is(fmt.Sprint(dropped)),
			"p50":       isNumber,
			"p99":       isNumber,
		})
		_ = got
		// The sender's row links to its page.
		href := cnEval[string](t, bctx, `(() => { const a = document.querySelector("#table-01_delivery_rate a"); return a ? a.getAttribute("href") : ""; })()`)
		u, err := url.Parse(href)
		if err != nil || u.Path != "sender" || u.Query().Get("sender") != sender {
			t.Fatalf("sender link %q, want sender?sender=%s", href, sender)
		}
	})

	t.Run("Sender", func(t *testing.T) {
		q := url.Values{"sender": {sender}, "range": {"1h"}}
		cnPage(t, bctx, base+"/sender?"+q.Encode(), "console-sender.png", map[string]func(string) bool{
			"sender-name": is(sender),
			"accepted":    is(fmt.Sprint(accepted)),
			"acked":       is(fmt.Sprint(acked)),
			"acked-pct":   is("71.4 %"),
			"dropped":     is(fmt.Sprint(dropped)),
		})
		// The drop is listed under its reason.
		drops := cnEval[[][]string](t, bctx, `[...document.querySelectorAll("#table-04_expiry_and_drops tbody tr")].map(r => [...r.cells].map(c => c.textContent))`)
		if len(drops) != 1 || drops[0][1] != "dropped" || drops[0][2] != "topic_replaced" || drops[0][3] != "1" {
			t.Fatalf("drops table %q, want one message dropped for topic_replaced", drops)
		}
		// An unknown sender shows zeros, not the totals.
		q.Set("sender", "mailto:nobody@example.com")
		cnPage(t, bctx, base+"/sender?"+q.Encode(), "console-sender-unknown.png", map[string]func(string) bool{
			"accepted": is("0"),
		})
	})

	// The README's picture (after the checks of the known traffic):
	// PUSHLOG_CONSOLE_SHOT=deploy/console.png draws a minute of mixed
	// traffic on the live charts and saves the page there.
	if shot := os.Getenv("PUSHLOG_CONSOLE_SHOT"); shot != "" {
		t.Run("ReadmeShot", func(t *testing.T) {
			cnReadmeTraffic(t, ctx, s, ua, sub, offline, vapid, time.Minute)
			cnPage(t, bctx, base+"/live", "console-live-traffic.png", map[string]func(string) bool{"total-acks": func(v string) bool { return isNumber(v) && v != fmt.Sprint(acked) }})
			png, err := os.ReadFile(filepath.Join(cnOutput(t), "console-live-traffic.png"))
			if err == nil {
				err = os.WriteFile(filepath.Join(senderRepoRoot(t), shot), png, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("WithoutClickHouse", func(t *testing.T) {
		addr := freePort(t)
		startServer(t, serverOpts{Env: []string{"CLICKHOUSE_ADDR=", "PUSHLOG_CONSOLE_ADDR=" + addr}})
		cnPage(t, bctx, "http://"+addr+"/analytics", "console-analytics-off.png", map[string]func(string) bool{
			"hint": func(s string) bool { return strings.Contains(s, "--clickhouse-addr") },
		})
		cnPage(t, bctx, "http://"+addr+"/", "console-overview-no-clickhouse.png", map[string]func(string) bool{
			"clickhouse-health": is("off"),
			"kafka-health":      is("ok"),
		})
	})

	t.Run("TokenRequiredOffLoopback", func(t *testing.T) {
		cmd := exec.Command(pushlogBin, "serve", "--console-addr", "0.0.0.0:0")
		cmd.Env = append(os.Environ(), "PUSHLOG_CONSOLE_TOKEN=", "PUSHLOG_DATA_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--console-token") {
			t.Fatalf("serve on 0.0.0.0 without a token: err %v, output:\n%s", err, out)
		}
	})

	t.Run("TokenEnforced", func(t *testing.T) {
		addr := freePort(t)
		token := "console-" + analyticsRandom(12)
		startServer(t, serverOpts{Env: []string{"CLICKHOUSE_ADDR=", "PUSHLOG_CONSOLE_ADDR=" + addr, "PUSHLOG_CONSOLE_TOKEN=" + token}})
		resp, err := http.Get("http://" + addr + "/api/overview")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no token: %d, want 401", resp.StatusCode)
		}
		// The browser with basic auth (the token as password) sees the page.
		u := "http://ops:" + token + "@" + addr + "/"
		cnPage(t, bctx, u, "console-token.png", map[string]func(string) bool{"kafka-health": is("ok")})
	})
}

// cnReadmeTraffic sends for d: acked deliveries in bursts, pushes that
// replace each other on the offline user agent, and refused pushes.
func cnReadmeTraffic(t *testing.T, ctx context.Context, s *server, ua *uaClient, sub, offline *uaSubscription, vapid snVAPID, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		burst := 1 + i%4
		for j := range burst {
			msg := fmt.Sprintf("readme %d/%d", i, j)
			snMustCreate(ctx, t, sub, []byte(msg), snPush{TTL: snLongTTL, VAPID: vapid})
			ua.ack(snExpect(ctx, t, ua, sub, msg))
		}
		if i%3 == 0 {
			snMustCreate(ctx, t, offline, []byte("later"), snPush{TTL: snLongTTL, VAPID: vapid, Topic: "console"})
		}
		if i%5 == 0 {
			if resp, err := http.Post(s.HTTPURL+"/wpush/v1/not-an-endpoint", "application/octet-stream", strings.NewReader("x")); err == nil {
				resp.Body.Close()
			}
		}
		time.Sleep(400 * time.Millisecond)
	}
}
