package integration

// Prometheus and Grafana (issue 16): the alert rules, their promtool unit
// tests and the scrape config are checked with Debian's real promtool; a
// real Prometheus server scrapes running pushlog processes and must find
// every target up, load every rule and see every pushlog series the rules
// and dashboards use; the dashboards' PromQL is evaluated by that server
// and their SQL by real ClickHouse. deploy/prometheus/install.sh installs
// the prometheus package (deploy/test.sh runs it); in CI a missing binary
// fails these tests.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	promDir    = filepath.Join("..", "deploy", "prometheus")
	grafanaDir = filepath.Join("..", "deploy", "grafana")
)

// prometheusBin returns the path of Debian's prometheus or promtool (or
// PUSHLOG_PROMETHEUS / PUSHLOG_PROMTOOL); missing, it fails in CI and
// skips elsewhere.
func prometheusBin(t testing.TB, name string) string {
	t.Helper()
	if p := os.Getenv("PUSHLOG_" + strings.ToUpper(name)); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if inCI() {
		t.Fatalf("%s is not installed: the test command installs Debian's prometheus package (deploy/prometheus/install.sh)", name)
	}
	t.Skipf("%s not installed; run deploy/prometheus/install.sh (apt-get install prometheus)", name)
	return ""
}

func readRepoFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// alertNames returns the alerts a rule file defines.
func alertNames(rules string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(rules, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestPrometheusRules: promtool accepts the rules and the scrape config,
// and the unit tests pass, with a fixture for every alert in which it fires.
func TestPrometheusRules(t *testing.T) {
	promtool := prometheusBin(t, "promtool")
	tests := []struct {
		name string
		args []string
	}{
		{"check rules", []string{"check", "rules", filepath.Join(promDir, "alerts.yml")}},
		{"check config", []string{"check", "config", filepath.Join(promDir, "prometheus.yml")}},
		{"test rules", []string{"test", "rules", filepath.Join(promDir, "alerts_test.yml")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(promtool, tt.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
		})
	}
	t.Run("every alert fires in a fixture", func(t *testing.T) {
		fixtures := readRepoFile(t, filepath.Join(promDir, "alerts_test.yml"))
		fired := map[string]bool{}
		for _, m := range regexp.MustCompile(`alertname: (\S+)\n\s*exp_alerts:\n\s*- exp_labels:`).FindAllStringSubmatch(fixtures, -1) {
			fired[m[1]] = true
		}
		alerts := alertNames(readRepoFile(t, filepath.Join(promDir, "alerts.yml")))
		if len(alerts) == 0 {
			t.Fatal("no alerts in alerts.yml")
		}
		for _, a := range alerts {
			if !fired[a] {
				t.Errorf("alert %s has no promtool fixture expecting it to fire (alerts_test.yml)", a)
			}
		}
	})
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Datasource *dsRef `json:"datasource"`
			Query      any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int               `json:"id"`
	Type       string            `json:"type"`
	Title      string            `json:"title"`
	Datasource *dsRef            `json:"datasource"`
	Targets    []json.RawMessage `json:"targets"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	Datasource *dsRef `json:"datasource"`
	Expr       string `json:"expr"`
	RawSQL     string `json:"rawSql"`
}

func loadDashboards(t testing.TB) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(grafanaDir, "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", grafanaDir, err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		var d dashboard
		if err := json.Unmarshal([]byte(readRepoFile(t, f)), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// dashboardTargets returns every query of the dashboards by data source uid.
func dashboardTargets(t testing.TB, ds map[string]dashboard) map[string][]target {
	t.Helper()
	out := map[string][]target{}
	for name, d := range ds {
		for _, p := range d.Panels {
			for _, raw := range p.Targets {
				var tg target
				if err := json.Unmarshal(raw, &tg); err != nil {
					t.Fatalf("%s panel %q: %v", name, p.Title, err)
				}
				if tg.Datasource == nil {
					tg.Datasource = p.Datasource
				}
				if tg.Datasource == nil {
					t.Fatalf("%s panel %q: a query without a data source", name, p.Title)
				}
				out[tg.Datasource.UID] = append(out[tg.Datasource.UID], tg)
			}
		}
		// Variables' queries run on their data source too.
		for _, v := range d.Templating.List {
			q, ok := v.Query.(string)
			if v.Datasource == nil || !ok {
				continue
			}
			tg := target{Datasource: v.Datasource}
			if v.Datasource.Type == "prometheus" {
				tg.Expr = q
			} else {
				tg.RawSQL = q
			}
			out[v.Datasource.UID] = append(out[v.Datasource.UID], tg)
		}
	}
	return out
}

// TestGrafanaDashboards: the dashboards parse, use only the provisioned
// data sources (a Prometheus and a ClickHouse one), have unique uids and
// panel ids, and every panel has a query; the provisioning files and the
// compose services point at these directories.
func TestGrafanaDashboards(t *testing.T) {
	sources := readRepoFile(t, filepath.Join(grafanaDir, "provisioning", "datasources", "pushlog.yml"))
	uids := map[string]string{} // uid -> type
	for _, m := range regexp.MustCompile(`(?m)^\s+uid: (\S+)\n\s+type: (\S+)`).FindAllStringSubmatch(sources, -1) {
		uids[m[1]] = m[2]
	}
	var types []string
	for _, ty := range uids {
		types = append(types, ty)
	}
	slices.Sort(types)
	if !slices.Equal(types, []string{"grafana-clickhouse-datasource", "prometheus"}) {
		t.Fatalf("provisioned data source types %v, want a Prometheus and a ClickHouse one", types)
	}
	ds := loadDashboards(t)
	seen := map[string]string{}
	for name, d := range ds {
		if d.UID == "" || seen[d.UID] != "" {
			t.Errorf("%s: uid %q empty or also in %s", name, d.UID, seen[d.UID])
		}
		seen[d.UID] = name
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", name, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s panel %q: no query", name, p.Title)
			}
			if p.Datasource == nil || uids[p.Datasource.UID] != p.Datasource.Type {
				t.Errorf("%s panel %q: data source %+v is not provisioned", name, p.Title, p.Datasource)
			}
		}
	}
	for uid, tgs := range dashboardTargets(t, ds) {
		if uids[uid] == "" {
			t.Errorf("queries on data source %q, which is not provisioned", uid)
		}
		for _, tg := range tgs {
			if tg.Expr == "" && tg.RawSQL == "" {
				t.Errorf("an empty query on %s", uid)
			}
		}
	}
	compose := readRepoFile(t, filepath.Join("..", "docker-compose.yml"))
	for _, want := range []string{
		"./deploy/prometheus:/etc/prometheus", "./deploy/grafana/provisioning:/etc/grafana/provisioning",
		"./deploy/grafana/dashboards:/var/lib/grafana/dashboards", "GF_INSTALL_PLUGINS: grafana-clickhouse-datasource",
	} {
		if !strings.Contains(compose, want) {
			t.Errorf("docker-compose.yml lacks %q", want)
		}
	}
	// Every compose scrape target is a pushlog service listening there.
	scrape := readRepoFile(t, filepath.Join(promDir, "prometheus.yml"))
	services := 0
	for _, m := range regexp.MustCompile(`(?m)^\s+- targets: \["(\w+):(\d+)"\]`).FindAllStringSubmatch(scrape, -1) {
		host, port := m[1], m[2]
		if host == "localhost" {
			continue
		}
		services++
		svc := regexp.MustCompile(`(?ms)^  ` + host + `:\n(.*?)\n\n`).FindStringSubmatch(compose + "\n\n")
		if svc == nil || !strings.Contains(svc[1], `":`+port+`"`) {
			t.Errorf("prometheus.yml scrapes %s:%s, but compose has no service %s with a listener on :%s", host, port, host, port)
		}
	}
	if services != 3 {
		t.Errorf("prometheus.yml scrapes %d compose services, want ingest, connector and projector", services)
	}
}

// promAPI queries a Prometheus server's HTTP API.
type promAPI struct {
	t    testing.TB
	base string
}

func (p promAPI) get(path string, q url.Values, into any) error {
	resp, err := http.Get(p.base + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %s: %w", path, body, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s %v: %s", path, q, env.Error)
	}
	return json.Unmarshal(env.Data, into)
}

type promTarget struct {
	ScrapeURL string `json:"scrapeUrl"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// startPrometheus runs Debian's prometheus on a free port with a config
// scraping targets (job -> host:port) every second and evaluating the
// repository's alert rules.
func startPrometheus(t *testing.T, targets map[string][]string) promAPI {
	t.Helper()
	bin := prometheusBin(t, "prometheus")
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join(promDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %q\nscrape_configs:\n", rules)
	for job, hosts := range targets {
		quoted := make([]string, len(hosts))
		for i, h := range hosts {
			quoted[i] = fmt.Sprintf("%q", h)
		}
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: [%s]\n", job, strings.Join(quoted, ", "))
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	logs := &lockedBuffer{}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("prometheus config:\n%s\nprometheus output:\n%s", cfg.String(), logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", logs.String())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return promAPI{t: t, base: "http://" + addr}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond every 250ms until it returns nil or timeout passes.
func promWait(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func hostOf(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	return pu.Host
}

// conditionalSeries are pushlog series the rules or dashboards use that
// these processes do not expose: the embedded broker's (Kafka is real here)
// and the supervisor's (only for restartable roles that ran).
var conditionalSeries = regexp.MustCompile(`^pushlog_(embedded_|role_up$)`)

// TestPrometheusScrapesPushlog: a real Prometheus scraping pushlog as a
// cluster would run it (an ingest+projector process with the projector's
// --metrics-addr listener and an ingest+connector node, on real Kafka and
// ClickHouse) finds every target up, loads every alert rule without
// evaluation errors and sees every pushlog series the rules and dashboards
// name, including the head lag of the connectors group; each dashboard
// PromQL query is valid on it and each dashboard SQL query runs on the
// analytics tables.
func TestPrometheusScrapesPushlog(t *testing.T) {
	prometheusBin(t, "prometheus")
	env := analyticsNewEnv(t)
	ns := freshNamespace()
	metricsAddr := freePort(t)
	// Two processes on one machine: no console (its default port is fixed).
	common := []string{"PUSHLOG_LAG_INTERVAL=1s", "CLICKHOUSE_ADDR=" + env.chAddr, "PUSHLOG_CLICKHOUSE_DB=" + env.db, "PUSHLOG_CONSOLE_ADDR=off"}
	proj := startServer(t, serverOpts{Namespace: ns, Roles: "ingest,projector",
		Env: append([]string{"PUSHLOG_METRICS_ADDR=" + metricsAddr}, common...)})
	node := startServer(t, serverOpts{Namespace: ns, Roles: "ingest,connector", Env: common})
	targets := map[string][]string{
		"pushlog-projector": {hostOf(proj.HTTPURL), metricsAddr},
		"pushlog-node":      {hostOf(node.HTTPURL), hostOf(node.WSURL)},
	}
	prom := startPrometheus(t, targets)

	promWait(t, 60*time.Second, "every target up", func() error {
		var data struct {
			Active []promTarget `json:"activeTargets"`
		}
		if err := prom.get("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
			return err
		}
		if len(data.Active) != 4 {
			return fmt.Errorf("%d active targets, want 4: %+v", len(data.Active), data.Active)
		}
		for _, tg := range data.Active {
			if tg.Health != "up" {
				return fmt.Errorf("target %s is %q: %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
		}
		return nil
	})

	alerts := alertNames(readRepoFile(t, filepath.Join(promDir, "alerts.yml")))
	promWait(t, 30*time.Second, "every rule loaded and evaluated", func() error {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Type      string `json:"type"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := prom.get("/api/v1/rules", nil, &data); err != nil {
			return err
		}
		var loaded []string
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
				}
				if r.Type == "alerting" {
					loaded = append(loaded, r.Name)
				}
			}
		}
		if !slices.Equal(loaded, alerts) {
			return fmt.Errorf("alerts loaded %v, want %v", loaded, alerts)
		}
		return nil
	})

	// Every pushlog series the rules and dashboards name is scraped.
	used := map[string]bool{}
	texts := []string{readRepoFile(t, filepath.Join(promDir, "alerts.yml"))}
	files, _ := filepath.Glob(filepath.Join(grafanaDir, "dashboards", "*.json"))
	for _, f := range files {
		texts = append(texts, readRepoFile(t, f))
	}
	for _, text := range texts {
		for _, name := range regexp.MustCompile(`\bpushlog_[a-z_]+`).FindAllString(text, -1) {
			if !conditionalSeries.MatchString(name) {
				used[name] = true
			}
		}
	}
	promWait(t, 60*time.Second, "every series of the rules and dashboards scraped", func() error {
		var names []string
		if err := prom.get("/api/v1/label/__name__/values", nil, &names); err != nil {
			return err
		}
		var missing []string
		for name := range used {
			if !slices.Contains(names, name) {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("not scraped: %v", missing)
		}
		return nil
	})

	// The connectors' head lag comes from the node that owns the
	// partitions (both its listeners serve it): 3 group topics × 4
	// partitions; the ingest+projector process knows no position of theirs.
	promWait(t, 30*time.Second, "the connectors' head lag", func() error {
		var res struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		}
		q := fmt.Sprintf(`pushlog_consumer_head_lag{group=%q}`, ns+"-connectors")
		if err := prom.get("/api/v1/query", url.Values{"query": {q}}, &res); err != nil {
			return err
		}
		parts := map[string]bool{}
		for _, r := range res.Result {
			if r.Metric["job"] != "pushlog-node" {
				return fmt.Errorf("head lag of the connectors from %s, which owns nothing", r.Metric["instance"])
			}
			parts[r.Metric["topic"]+"/"+r.Metric["partition"]] = true
		}
		if len(parts) != 12 {
			return fmt.Errorf("%s covers %d partitions, want 12: %v", q, len(parts), parts)
		}
		return nil
	})

	ds := loadDashboards(t)
	queries := dashboardTargets(t, ds)
	t.Run("dashboard PromQL", func(t *testing.T) {
		for _, tg := range queries["pushlog-prometheus"] {
			var res json.RawMessage
			if err := prom.get("/api/v1/query", url.Values{"query": {tg.Expr}}, &res); err != nil {
				t.Errorf("%s: %v", tg.Expr, err)
			}
		}
	})
	t.Run("dashboard SQL", func(t *testing.T) {
		ctx := testContext(t, 60*time.Second)
		promWait(t, 30*time.Second, "the projector's tables", func() error {
			return env.conn.Exec(ctx, "SELECT 1 FROM "+env.db+".sender_minute LIMIT 1")
		})
		for _, tg := range queries["pushlog-clickhouse"] {
			q := grafanaSQL(tg.RawSQL, env.db)
			if err := env.conn.Exec(ctx, q); err != nil {
				t.Errorf("%s\n(as run: %s): %v", tg.RawSQL, q, err)
			}
		}
	})
}

// grafanaSQL expands the ClickHouse data source's macros and variables
// the dashboards use (over the last hour, every sender) and qualifies the
// tables with db, as the data source's default database does.
func grafanaSQL(q, db string) string {
	q = regexp.MustCompile(`\$__timeFilter\((\w+)\)`).ReplaceAllString(q, "$1 >= now() - INTERVAL 1 HOUR AND $1 <= now()")
	q = regexp.MustCompile(`\$__timeInterval\((\w+)\)`).ReplaceAllString(q, "toStartOfMinute($1)")
	q = strings.NewReplacer("$__fromTime", "(now() - INTERVAL 1 HOUR)", "$__toTime", "now()", "$sender", "'__all'").Replace(q)
	return regexp.MustCompile(`\bFROM (\w+)\b`).ReplaceAllString(q, "FROM "+db+".$1")
}
