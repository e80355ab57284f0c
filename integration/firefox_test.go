package integration

// Headless Firefox ESR (Debian's firefox-esr, unmodified) against a running
// pushlog on real Kafka. A fresh profile's user.js points Firefox's push
// client at pushlog's WebSocket listener (PROTOCOL.md §4) and keeps the
// browser off the internet; a page and service worker served from loopback
// (integration/clients/firefox) subscribe, hand the subscription to the test
// and report every decrypted push event back over HTTP. No WebDriver: the
// page polls the test server for commands (unsubscribe).
//
// Senders are the real libraries of senders_test.go: npm web-push over HTTPS
// to the ingest listener, pywebpush and webpush-go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"
)

//go:embed clients/firefox
var ffSiteFiles embed.FS

// ffTestTimeout bounds each Firefox scenario (pushlog's start, one or two
// browser launches of a few seconds each, the pushes).
const ffTestTimeout = 3 * time.Minute

// ffBinary is Debian's firefox-esr (PUSHLOG_FIREFOX overrides).
func ffBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PUSHLOG_FIREFOX"); p != "" {
		if _, err := os.Stat(p); err != nil {
			senderMissing(t, "firefox-esr", err)
		}
		return p
	}
	p, err := exec.LookPath("firefox-esr")
	if err != nil {
		senderMissing(t, "firefox-esr", err)
	}
	return p
}

// --- the profile ---------------------------------------------------------------

type ffPref struct {
	Name  string
	Value any // bool, int or string
}

// ffPrefs are the user.js preferences of a test profile: Firefox's push
// client pointed at pushURL (a ws:// URL is used only with
// dom.push.testing.allowInsecureServerURL; wss:// needs no such switch),
// permission prompts answered,
// and every background service that would reach the internet off. As a
// last guard all non-loopback traffic goes to a proxy at 127.0.0.1:guardPort
// that refuses it (loopback never goes through a proxy).
func ffPrefs(pushURL string, guardPort int) []ffPref {
	prefs := []ffPref{
		// Push (PROTOCOL.md §4).
		{"dom.push.enabled", true},
		{"dom.push.connection.enabled", true},
		{"dom.push.serverURL", pushURL},
		{"dom.push.testing.allowInsecureServerURL", strings.HasPrefix(pushURL, "ws://")},
		{"dom.push.testing.ignorePermission", true},
		{"permissions.default.desktop-notification", 1},
		// Pushes that show no notification use up a quota (16 by default);
		// tests send more than a handful to one subscription.
		{"dom.push.maxQuotaPerSubscription", 1000},
		{"dom.serviceWorkers.enabled", true},
		// Diagnostics: push client log and console output on stdout, which
		// the test prints when it fails.
		{"dom.push.loglevel", "Debug"},
		{"devtools.console.stdout.chrome", true},
		{"devtools.console.stdout.content", true},

		// Everything non-loopback goes to the refusing guard proxy.
		{"network.proxy.type", 1},
		{"network.proxy.http", "127.0.0.1"},
		{"network.proxy.http_port", guardPort},
		{"network.proxy.ssl", "127.0.0.1"},
		{"network.proxy.ssl_port", guardPort},
		{"network.proxy.socks_remote_dns", true},
		{"network.proxy.allow_hijacking_localhost", false},
		{"network.proxy.no_proxies_on", "localhost, 127.0.0.1"},
		{"network.trr.mode", 5},
		{"network.dns.disablePrefetch", true},
		{"network.prefetch-next", false},
		{"network.predictor.enabled", false},
		{"network.http.speculative-parallel-limit", 0},
		{"browser.urlbar.speculativeConnect.enabled", false},
		{"browser.places.speculativeConnect.enabled", false},

		// Captive portal and connectivity checks.
		{"network.captive-portal-service.enabled", false},
		{"network.connectivity-service.enabled", false},
		{"captivedetect.canonicalURL", ""},

		// Telemetry and data reporting.
		{"toolkit.telemetry.enabled", false},
		{"toolkit.telemetry.unified", false},
		{"toolkit.telemetry.archive.enabled", false},
		{"toolkit.telemetry.server", ""},
		{"toolkit.telemetry.newProfilePing.enabled", false},
		{"toolkit.telemetry.shutdownPingSender.enabled", false},
		{"toolkit.telemetry.firstShutdownPing.enabled", false},
		{"toolkit.telemetry.updatePing.enabled", false},
		{"toolkit.telemetry.bhrPing.enabled", false},
		{"toolkit.telemetry.reportingpolicy.firstRun", false},
		{"datareporting.healthreport.uploadEnabled", false},
		{"datareporting.policy.dataSubmissionEnabled", false},
		{"datareporting.usage.uploadEnabled", false},
		{"datareporting.policy.firstRunURL", ""},
		{"browser.ping-centre.telemetry", false},
		{"browser.newtabpage.activity-stream.telemetry", false},
		{"browser.newtabpage.activity-stream.feeds.telemetry", false},

		// Updates: the application, add-ons, system add-ons, search, GMP.
		{"app.update.auto", false},
		{"app.update.disabledForTesting", true},
		{"app.update.checkInstallTime", false},
		{"extensions.update.enabled", false},
		{"extensions.update.autoUpdateDefault", false},
		{"extensions.getAddons.cache.enabled", false},
		{"extensions.blocklist.enabled", false},
		{"extensions.systemAddon.update.enabled", false},
		{"extensions.systemAddon.update.url", ""},
		{"extensions.webservice.discoverURL", ""},
		{"extensions.getAddons.showPane", false},
		{"extensions.htmlaboutaddons.recommendations.enabled", false},
		{"extensions.pocket.enabled", false},
		{"browser.search.update", false},
		{"browser.region.network.url", ""},
		{"browser.region.update.enabled", false},
		{"geo.enabled", false},
		{"geo.provider.network.url", ""},
		{"media.gmp-manager.url", ""},
		{"media.gmp-gmpopenh264.enabled", false},
		{"media.gmp-widevinecdm.enabled", false},
		{"media.eme.enabled", false},
		{"media.gmp-manager.chromium-update-url", ""},
		{"media.gmp-widevinecdm.allow-chromium-update", false},
		{"media.gmp-provider.enabled", false},

		// Remote settings (and what feeds on them), Normandy, studies.
		{"services.settings.server", "data:,#remote-settings-dummy/v1"},
		{"app.normandy.enabled", false},
		{"app.normandy.api_url", ""},
		{"app.shield.optoutstudies.enabled", false},
		{"messaging-system.rsexperimentloader.enabled", false},
		{"security.remote_settings.crlite_filters.enabled", false},
		{"security.remote_settings.intermediates.enabled", false},
		{"security.OCSP.enabled", 0},
		{"security.certerrors.mitm.priming.enabled", false},
		{"signon.management.page.breach-alerts.enabled", false},
		{"browser.translations.enable", false},
		{"browser.ml.enable", false},
		{"browser.ml.chat.enabled", false},
		{"identity.fxaccounts.enabled", false},

		// Safe browsing.
		{"browser.safebrowsing.malware.enabled", false},
		{"browser.safebrowsing.phishing.enabled", false},
		{"browser.safebrowsing.downloads.enabled", false},
		{"browser.safebrowsing.downloads.remote.enabled", false},
		{"browser.safebrowsing.blockedURIs.enabled", false},
		{"browser.safebrowsing.provider.google.updateURL", ""},
		{"browser.safebrowsing.provider.google.gethashURL", ""},
		{"browser.safebrowsing.provider.google4.updateURL", ""},
		{"browser.safebrowsing.provider.google4.gethashURL", ""},
		{"browser.safebrowsing.provider.mozilla.updateURL", ""},
		{"browser.safebrowsing.provider.mozilla.gethashURL", ""},

		// Start-up pages, new tab content, first-run and default-browser
		// prompts; no session restore after a kill.
		{"browser.startup.page", 0},
		{"browser.startup.homepage", "about:blank"},
		{"browser.startup.homepage_override.mstone", "ignore"},
		{"startup.homepage_welcome_url", ""},
		{"startup.homepage_welcome_url.additional", ""},
		{"browser.aboutwelcome.enabled", false},
		{"browser.shell.checkDefaultBrowser", false},
		{"browser.uitour.enabled", false},
		{"browser.discovery.enabled", false},
		{"browser.newtabpage.enabled", false},
		{"browser.newtabpage.activity-stream.feeds.section.topstories", false},
		{"browser.newtabpage.activity-stream.feeds.topsites", false},
		{"browser.newtabpage.activity-stream.feeds.snippets", false},
		{"browser.newtabpage.activity-stream.showSponsored", false},
		{"browser.newtabpage.activity-stream.showSponsoredTopSites", false},
		{"browser.newtabpage.activity-stream.default.sites", ""},
		{"browser.topsites.contile.enabled", false},
		{"browser.urlbar.quicksuggest.enabled", false},
		{"browser.vpn_promo.enabled", false},
		{"browser.sessionstore.resume_from_crash", false},
		{"toolkit.startup.max_resumed_crashes", -1},
		{"browser.tabs.warnOnClose", false},
	}
	return prefs
}

// ffUserJS renders prefs as a user.js file.
func ffUserJS(prefs []ffPref) string {
	var b strings.Builder
	b.WriteString("// pushlog integration test profile (integration/firefox_test.go)\n")
	for _, p := range prefs {
		v, _ := json.Marshal(p.Value) // bool, int and string are valid JavaScript as JSON
		fmt.Fprintf(&b, "user_pref(%q, %s);\n", p.Name, v)
	}
	return b.String()
}

// ffNewProfile makes a fresh profile directory with the test user.js.
func ffNewProfile(t testing.TB, pushURL string, guardPort int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "profile")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user.js"), []byte(ffUserJS(ffPrefs(pushURL, guardPort))), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ffImportCA makes the profile's NSS certificate database trust the test CA
// (Debian's certutil, libnss3-tools): without it Firefox refuses the wss://
// certificate and silently keeps retrying.
func ffImportCA(t testing.TB, profile, caFile string) {
	t.Helper()
	certutil := os.Getenv("PUSHLOG_CERTUTIL")
	if certutil == "" {
		p, err := exec.LookPath("certutil")
		if err != nil {
			senderMissing(t, "certutil (libnss3-tools)", err)
		}
		certutil = p
	}
	db := "sql:" + profile
	for _, args := range [][]string{
		{"-N", "-d", db, "--empty-password"},
		{"-A", "-d", db, "-n", "pushlog integration test CA", "-t", "C,,", "-i", caFile},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// ffStartWSSProxy terminates TLS (the test CA's certificate) in front of
// pushlog's ws:// listener, as a production deployment's proxy would, and
// counts the WebSocket upgrades it forwards.
func ffStartWSSProxy(t testing.TB, ca *senderCA, wsURL string) (string, *atomic.Int32) {
	t.Helper()
	target, err := url.Parse(strings.Replace(wsURL, "ws://", "http://", 1))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(ca.CertFile, ca.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	upgrades := &atomic.Int32{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			upgrades.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "https://", "wss://", 1) + "/", upgrades
}

// --- the guard proxy -------------------------------------------------------------

// ffGuard is the proxy every non-loopback request of the browser goes to:
// it refuses everything and remembers what was tried, so a background
// service that the prefs missed shows up in the test log, never on the
// network.
type ffGuard struct {
	srv      *httptest.Server
	mu       sync.Mutex
	attempts []string
}

func ffStartGuard(t testing.TB) *ffGuard {
	t.Helper()
	g := &ffGuard{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.attempts = append(g.attempts, r.Method+" "+r.Host+" "+r.URL.String())
		g.mu.Unlock()
		http.Error(w, "pushlog integration test: no internet", http.StatusForbidden)
	}))
	t.Cleanup(g.srv.Close)
	t.Cleanup(func() {
		if a := g.tried(); len(a) > 0 {
			t.Logf("Firefox tried to reach (refused by the guard proxy): %s", strings.Join(a, "; "))
		}
	})
	return g
}

func (g *ffGuard) port(t testing.TB) int {
	t.Helper()
	u, err := url.Parse(g.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (g *ffGuard) tried() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.attempts...)
}

// --- the test site -------------------------------------------------------------------

// ffSite serves the page and service worker on loopback (a secure context)
// and receives what they report.
type ffSite struct {
	srv     *httptest.Server
	subs    chan ffSubscription
	pushes  chan ffPush
	results chan ffResult
	// commands waiting for the page; each is handed out once, so a page
	// loaded again never repeats an old one.
	commands chan ffCommand
	nextID   atomic.Int32
	logs     lockedBuffer
	failed   chan string // the page's script gave up (fails the wait at once)
}

// ffSubscription is what the page posts once it has a subscription.
type ffSubscription struct {
	Existing     bool            `json:"existing"` // found by getSubscription (not newly made)
	Subscription json.RawMessage `json:"subscription"`
}

// endpoint returns the subscription's push endpoint.
func (s ffSubscription) endpoint() string {
	var v struct {
		Endpoint string `json:"endpoint"`
	}
	_ = json.Unmarshal(s.Subscription, &v)
	return v.Endpoint
}

// ffPush is one push event as the service worker saw it.
type ffPush struct {
	HasData bool   `json:"hasData"`
	Base64  string `json:"base64"` // the decrypted bytes
	Text    string `json:"text"`   // event.data.text()
}

type ffCommand struct {
	ID int    `json:"id"`
	Op string `json:"op"`
}

type ffResult struct {
	ID           int             `json:"id"`
	OK           bool            `json:"ok"`
	Error        string          `json:"error"`
	Subscription json.RawMessage `json:"subscription"`
}

func ffStartSite(t testing.TB) *ffSite {
	t.Helper()
	files, err := fs.Sub(ffSiteFiles, "clients/firefox")
	if err != nil {
		t.Fatal(err)
	}
	s := &ffSite{
		subs:     make(chan ffSubscription, 8),
		pushes:   make(chan ffPush, 64),
		results:  make(chan ffResult, 8),
		commands: make(chan ffCommand, 8),
		failed:   make(chan string, 8),
	}
	mux := http.NewServeMux()
	static := http.FileServerFS(files)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		static.ServeHTTP(w, r)
	}))
	mux.HandleFunc("POST /ff/log", func(w http.ResponseWriter, r *http.Request) {
		var m struct{ From, Msg string }
		if !ffDecode(w, r, &m) {
			return
		}
		fmt.Fprintf(&s.logs, "%s %s: %s\n", time.Now().Format("15:04:05.000"), m.From, m.Msg)
		if m.From == "page" && strings.HasPrefix(m.Msg, "page failed") {
			ffHand(r, s.failed, m.Msg)
		}
	})
	mux.HandleFunc("POST /ff/subscription", func(w http.ResponseWriter, r *http.Request) {
		var m ffSubscription
		if ffDecode(w, r, &m) {
			fmt.Fprintf(&s.logs, "%s page: subscription (existing %v) %s\n", time.Now().Format("15:04:05.000"), m.Existing, m.endpoint())
			ffHand(r, s.subs, m)
		}
	})
	mux.HandleFunc("POST /ff/push", func(w http.ResponseWriter, r *http.Request) {
		var m ffPush
		if ffDecode(w, r, &m) {
			fmt.Fprintf(&s.logs, "%s sw: push %q\n", time.Now().Format("15:04:05.000"), m.Text)
			ffHand(r, s.pushes, m)
		}
	})
	mux.HandleFunc("POST /ff/result", func(w http.ResponseWriter, r *http.Request) {
		var m ffResult
		if ffDecode(w, r, &m) {
			ffHand(r, s.results, m)
		}
	})
	mux.HandleFunc("GET /ff/command", s.serveCommand)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// ffHand passes a report to the test, unless the request is gone (the
// site is closing).
func ffHand[T any](r *http.Request, ch chan<- T, v T) {
	select {
	case ch <- v:
	case <-r.Context().Done():
	}
}

func ffDecode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// serveCommand long-polls: the next queued command, or 204 after a few
// seconds.
func (s *ffSite) serveCommand(w http.ResponseWriter, r *http.Request) {
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	select {
	case c := <-s.commands:
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(c); err != nil {
			fmt.Fprintf(&s.logs, "(test) command %q lost: %v\n", c.Op, err)
		}
	case <-timeout.C:
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done():
	}
}

// command queues a command for the page and waits for its result.
func (s *ffSite) command(ctx context.Context, t testing.TB, op string) ffResult {
	t.Helper()
	c := ffCommand{ID: int(s.nextID.Add(1)), Op: op}
	s.commands <- c
	for {
		select {
		case r := <-s.results:
			if r.ID == c.ID {
				return r
			}
		case <-ctx.Done():
			t.Fatalf("page did not run %q: %v", op, ctx.Err())
		}
	}
}

func (s *ffSite) pageURL(applicationServerKey string) string {
	u := s.srv.URL + "/index.html"
	if applicationServerKey != "" {
		u += "?key=" + url.QueryEscape(applicationServerKey)
	}
	return u
}

// --- the browser ----------------------------------------------------------------------

// ffBrowser is one headless Firefox process on a profile.
type ffBrowser struct {
	t       testing.TB
	bin     string
	profile string
	home    string
	url     string
	cmd     *exec.Cmd
	out     *lockedBuffer
	done    chan struct{}
	started time.Time
}

// ffLaunch starts Firefox on profile, opening pageURL.
func ffLaunch(t testing.TB, profile, pageURL string) *ffBrowser {
	t.Helper()
	b := &ffBrowser{t: t, bin: ffBinary(t), profile: profile, home: t.TempDir(), url: pageURL, out: &lockedBuffer{}}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("Firefox output (last 64 KB):\n%s", ffTail(b.out.String(), 64<<10))
		}
	})
	b.start()
	return b
}

func (b *ffBrowser) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "--headless", "--profile", b.profile, "--no-remote", b.url)
	b.cmd.Env = append(os.Environ(),
		"HOME="+b.home, // nothing lands in the real home directory
		"XDG_CONFIG_HOME="+filepath.Join(b.home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(b.home, ".cache"),
		"MOZ_HEADLESS=1",
		"MOZ_CRASHREPORTER_DISABLE=1",
		"MOZ_NO_REMOTE=1",
		// Firefox's own test switch: it refuses non-local connections and
		// honours services.settings.server (remote settings stay off).
		"MOZ_DISABLE_NONLOCAL_CONNECTIONS=1",
	)
	// Its own process group, so content processes can be ended with it.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(b.out, "--- launch %s\n", time.Now().Format("15:04:05.000"))
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start firefox: %v", err)
	}
	b.started = time.Now()
	done := make(chan struct{})
	b.done = done
	cmd := b.cmd
	go func() { _ = cmd.Wait(); close(done) }()
}

// stop ends Firefox with SIGTERM (as a user's session ending would), then
// SIGKILL for whatever of its process group is left.
func (b *ffBrowser) stop() {
	if b.cmd == nil {
		return
	}
	pgid := b.cmd.Process.Pid
	select {
	case <-b.done:
	default:
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(20 * time.Second):
			fmt.Fprintln(b.out, "--- (test) no exit 20s after SIGTERM: SIGKILL")
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-b.done
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // leftover child processes, if any
	fmt.Fprintf(b.out, "--- stopped %s (%v)\n", time.Now().Format("15:04:05.000"), b.cmd.ProcessState)
	b.cmd = nil
}

// ffUAIDPref is how prefs.js holds the push client's uaid.
var ffUAIDPref = regexp.MustCompile(`user_pref\("dom\.push\.userAgentID", "[0-9a-f]{32}"\);`)

// stopSaved waits until Firefox has written its push uaid to prefs.js, then
// stops it. Killed with SIGTERM, Firefox loses preferences it has not saved
// yet (it saves them shortly after a change): without the uaid it would say
// hello as a new user agent and drop its subscriptions on restart.
func (b *ffBrowser) stopSaved(ctx context.Context) {
	b.t.Helper()
	prefsJS := filepath.Join(b.profile, "prefs.js")
	for {
		if data, err := os.ReadFile(prefsJS); err == nil && ffUAIDPref.Match(data) {
			b.t.Logf("prefs.js holds the uaid %.1fs after launch; stopping Firefox", time.Since(b.started).Seconds())
			break
		}
		select {
		case <-ctx.Done():
			b.t.Fatalf("Firefox never saved dom.push.userAgentID to %s: %v", prefsJS, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	b.stop()
}

// waitOutput waits until Firefox's output (its push client logs at Debug
// level) contains s.
func (b *ffBrowser) waitOutput(ctx context.Context, s string) {
	b.t.Helper()
	for !strings.Contains(b.out.String(), s) {
		select {
		case <-ctx.Done():
			b.t.Fatalf("Firefox never logged %s: %v", s, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ffTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// --- one scenario's world ----------------------------------------------------------------

// ffRig is pushlog (TLS ingest, real Kafka), the test site, the guard and
// one Firefox subscribed through the page.
type ffRig struct {
	t       testing.TB
	ctx     context.Context
	ca      *senderCA
	srv     *server
	site    *ffSite
	browser *ffBrowser
	vapid   senderVAPID
	sub     ffSubscription
	// wssUpgrades counts WebSockets through the TLS proxy (WSS only).
	wssUpgrades *atomic.Int32
}

// ffOpts vary a scenario's set-up.
type ffOpts struct {
	// KeyBound: the page subscribes with the VAPID public key as its
	// applicationServerKey (a v2 endpoint); else without one (v1).
	KeyBound bool
	// WSS: Firefox reaches pushlog as wss:// through a TLS proxy, with the
	// test CA imported into its profile, instead of ws:// on loopback.
	WSS bool
}

// ffSetup starts everything and waits for the page's subscription.
func ffSetup(t *testing.T, o ffOpts) *ffRig {
	t.Helper()
	ffBinary(t)
	senderNodeModules(t)
	r := &ffRig{t: t, ctx: testContext(t, ffTestTimeout), ca: senderNewCA(t), vapid: senderNewVAPID(t)}
	r.srv = senderStartTLSServer(t, r.ca)
	r.site = ffStartSite(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page and service worker log:\n%s", r.site.logs.String())
		}
	})
	guard := ffStartGuard(t)
	pushURL := r.srv.WSURL
	if o.WSS {
		pushURL, r.wssUpgrades = ffStartWSSProxy(t, r.ca, r.srv.WSURL)
	}
	profile := ffNewProfile(t, pushURL, guard.port(t))
	if o.WSS {
		ffImportCA(t, profile, r.ca.CAFile)
	}
	key := ""
	if o.KeyBound {
		key = r.vapid.PublicKey
	}
	r.browser = ffLaunch(t, profile, r.site.pageURL(key))
	r.sub = r.waitSubscription()
	if r.sub.Existing {
		t.Fatalf("a fresh profile already had a subscription: %s", r.sub.Subscription)
	}
	want := "/wpush/v1/"
	if o.KeyBound {
		want = "/wpush/v2/"
	}
	if ep := r.sub.endpoint(); !strings.HasPrefix(ep, r.srv.HTTPURL+want) {
		t.Fatalf("endpoint %q, want %s%s…", ep, r.srv.HTTPURL, want)
	}
	t.Logf("Firefox subscribed %.1fs after launch: %s", time.Since(r.browser.started).Seconds(), r.sub.endpoint())
	return r
}

func (r *ffRig) waitSubscription() ffSubscription {
	r.t.Helper()
	select {
	case s := <-r.site.subs:
		return s
	case msg := <-r.site.failed:
		r.t.Fatalf("the test page failed before reporting a subscription: %s", msg)
	case <-r.ctx.Done():
		r.t.Fatalf("the page never reported a subscription: %v", r.ctx.Err())
	}
	return ffSubscription{}
}

// waitPush waits for the next push event the service worker reports and
// returns its decrypted bytes.
func (r *ffRig) waitPush(what string) []byte {
	r.t.Helper()
	p := r.waitPushEvent(what)
	if !p.HasData {
		r.t.Fatalf("%s: Firefox delivered a push without data", what)
	}
	b, err := base64.StdEncoding.DecodeString(p.Base64)
	if err != nil {
		r.t.Fatalf("service worker sent bad base64 %q: %v", p.Base64, err)
	}
	return b
}

// waitPushEvent waits for the next push event as the service worker
// reported it.
func (r *ffRig) waitPushEvent(what string) ffPush {
	r.t.Helper()
	select {
	case p := <-r.site.pushes:
		return p
	case <-r.ctx.Done():
		r.t.Fatalf("Firefox never delivered %s: %v", what, r.ctx.Err())
	}
	return ffPush{}
}

// expectPush waits for the next push and checks it is exactly want.
func (r *ffRig) expectPush(what string, want []byte) {
	r.t.Helper()
	got := r.waitPush(what)
	if !bytes.Equal(got, want) {
		r.t.Fatalf("%s: Firefox decrypted %d bytes %q, sent %d bytes %q", what, len(got), got, len(want), want)
	}
}

// send pushes with npm web-push to the page's subscription.
func (r *ffRig) send(job senderJob) senderResult {
	r.t.Helper()
	job.Subscription = r.sub.Subscription
	if job.VAPID == (senderVAPID{}) {
		job.VAPID = r.vapid
	}
	return senderNodeSend(r.ctx, r.t, r.ca, job)
}

// --- the scenarios ---------------------------------------------------------------------------

// TestFirefoxLiveDelivery: a connected Firefox decrypts what each standard
// library sends, byte for byte: npm web-push in aes128gcm and aesgcm,
// pywebpush and webpush-go with their defaults (TTL 0: delivered because
// Firefox is connected right now; webpush-go pads to 4096 bytes); and an
// empty push arrives as a push event without data.
func TestFirefoxLiveDelivery(t *testing.T) {
	r := ffSetup(t, ffOpts{KeyBound: true})
	senders := []struct {
		name string
		send func(p []byte) senderResult
		ttl  string
	}{
		{"npm web-push aes128gcm", func(p []byte) senderResult {
			return r.send(senderJob{Payload: p, Encoding: "aes128gcm"})
		}, "2419200"},
		{"npm web-push aesgcm", func(p []byte) senderResult {
			return r.send(senderJob{Payload: p, Encoding: "aesgcm"})
		}, "2419200"},
		{"pywebpush defaults", func(p []byte) senderResult {
			return senderPythonSend(r.ctx, t, r.ca, senderJob{Subscription: r.sub.Subscription, Payload: p, VAPID: r.vapid})
		}, "0"},
		{"webpush-go defaults", func(p []byte) senderResult {
			return senderGoSend(r.ctx, t, r.ca, r.sub.Subscription, p, r.vapid, webpushgo.Options{})
		}, "0"},
	}
	for _, s := range senders {
		for _, p := range senderPayloads(s.name) {
			res := s.send(p.Body)
			senderCheckCreated(t, s.name+" "+p.Name, res, s.ttl)
			r.expectPush(s.name+" "+p.Name, p.Body)
		}
	}
	// An empty body is a valid push: a push event without data.
	senderCheckCreated(t, "web-push empty", r.send(senderJob{}), "2419200")
	if p := r.waitPushEvent("the empty push"); p.HasData {
		t.Fatalf("empty push arrived with data %q", p.Text)
	}
}

// TestFirefoxDeliveryAfterRestart: a message sent while Firefox is closed
// arrives after it restarts with the same profile (same uaid, same
// subscription). The subscription here has no applicationServerKey (v1).
func TestFirefoxDeliveryAfterRestart(t *testing.T) {
	r := ffSetup(t, ffOpts{})
	r.browser.stopSaved(r.ctx)
	msg := []byte("sent while Firefox was closed " + senderRandomHex(4))
	senderCheckCreated(t, "web-push", r.send(senderJob{Payload: msg}), "2419200")
	r.browser.start()
	r.expectPush("the message sent while closed", msg)
	again := r.waitSubscription()
	if !again.Existing || again.endpoint() != r.sub.endpoint() {
		t.Fatalf("after the restart the page has subscription %s (existing %v), want the old %s", again.endpoint(), again.Existing, r.sub.endpoint())
	}
	// And the reconnected browser gets live pushes again.
	live := []byte("live after restart " + senderRandomHex(4))
	senderCheckCreated(t, "web-push", r.send(senderJob{Payload: live}), "2419200")
	r.expectPush("a live push after the restart", live)
}

// TestFirefoxUnsubscribeGone: after the page unsubscribes, the sender gets
// 410 Gone (errno 106). The gone set is projected from the registration log,
// so the sender retries for a bounded while until it sees it.
func TestFirefoxUnsubscribeGone(t *testing.T) {
	r := ffSetup(t, ffOpts{KeyBound: true})
	first := []byte("before unsubscribing")
	senderCheckCreated(t, "web-push", r.send(senderJob{Payload: first}), "2419200")
	r.expectPush("a push before unsubscribing", first)

	res := r.site.command(r.ctx, t, "unsubscribe")
	if !res.OK {
		t.Fatalf("page could not unsubscribe: %s", res.Error)
	}
	gone := r.send(senderJob{Payload: []byte("after unsubscribing"), UntilStatus: http.StatusGone, TimeoutMs: 20000})
	if gone.Status != http.StatusGone {
		t.Fatalf("push after unsubscribe: status %d after %d attempts over 20s, want 410; body %s", gone.Status, gone.Attempts, gone.Body)
	}
	if n := gone.errno(); n != 106 {
		t.Errorf("410 with errno %d, want 106; body %s", n, gone.Body)
	}
	t.Logf("410 Gone at attempt %d", gone.Attempts)
	check := r.site.command(r.ctx, t, "subscription")
	if string(check.Subscription) != "null" && len(check.Subscription) != 0 {
		t.Errorf("page still has a subscription after unsubscribe: %s", check.Subscription)
	}
}

// TestFirefoxTopicReplaces: two messages with the same Topic sent while
// Firefox is closed: after the restart only the newer arrives. A live
// sentinel sent afterwards bounds the wait (everything stored is delivered
// right after hello, before it).
func TestFirefoxTopicReplaces(t *testing.T) {
	r := ffSetup(t, ffOpts{KeyBound: true})
	r.browser.stopSaved(r.ctx)
	older := []byte("older, replaced " + senderRandomHex(4))
	newer := []byte("newer, same topic " + senderRandomHex(4))
	senderCheckCreated(t, "web-push older", r.send(senderJob{Payload: older, Topic: "scores"}), "2419200")
	senderCheckCreated(t, "web-push newer", r.send(senderJob{Payload: newer, Topic: "scores"}), "2419200")
	r.browser.start()
	got := r.waitPush("the newer message")
	if bytes.Equal(got, older) {
		t.Fatalf("the replaced message was delivered: %q", got)
	}
	if !bytes.Equal(got, newer) {
		t.Fatalf("after the restart Firefox delivered %q, want %q", got, newer)
	}
	sentinel := []byte("sentinel " + senderRandomHex(4))
	senderCheckCreated(t, "web-push sentinel", r.send(senderJob{Payload: sentinel}), "2419200")
	if got := r.waitPush("the sentinel"); !bytes.Equal(got, sentinel) {
		t.Fatalf("after the newer message Firefox delivered %q, want only the sentinel %q", got, sentinel)
	}
}

// TestFirefoxKeyBoundRejectsOtherKey: a subscription made with an
// applicationServerKey (v2 endpoint) refuses a push signed with another
// VAPID key (401, errno 109) and accepts one signed with its own.
func TestFirefoxKeyBoundRejectsOtherKey(t *testing.T) {
	r := ffSetup(t, ffOpts{KeyBound: true})
	other := senderNewVAPID(t)
	res := r.send(senderJob{Payload: []byte("signed with another key"), VAPID: other})
	if res.Status != http.StatusUnauthorized {
		t.Fatalf("push signed with another VAPID key: status %d, want 401; body %s", res.Status, res.Body)
	}
	if n := res.errno(); n != 109 {
		t.Errorf("401 with errno %d, want 109; body %s", n, res.Body)
	}
	own := []byte("signed with the subscription's key " + senderRandomHex(4))
	senderCheckCreated(t, "web-push own key", r.send(senderJob{Payload: own}), "2419200")
	r.expectPush("the push signed with the right key", own)
}

// TestFirefoxSecureWebSocket: Firefox with a wss:// push server URL (no
// insecure-URL testing switch) through a TLS proxy in front of pushlog,
// trusting the test CA through its profile's certificate database, as a
// deployment outside loopback runs it; subscription and a live push work.
func TestFirefoxSecureWebSocket(t *testing.T) {
	r := ffSetup(t, ffOpts{KeyBound: true, WSS: true})
	if n := r.wssUpgrades.Load(); n == 0 {
		t.Fatal("Firefox subscribed without a WebSocket through the wss:// proxy")
	}
	msg := []byte("over wss:// " + senderRandomHex(4))
	senderCheckCreated(t, "web-push", r.send(senderJob{Payload: msg}), "2419200")
	r.expectPush("a push over wss://", msg)
}

// TestFirefoxBroadcastSubscribeKeepsSocket: some 17 s after hello Firefox
// sends broadcast_subscribe (remote settings' monitor_changes); pushlog
// must answer it without closing the socket: a push afterwards is
// delivered on the same WebSocket (Firefox never reconnected).
func TestFirefoxBroadcastSubscribeKeepsSocket(t *testing.T) {
	r := ffSetup(t, ffOpts{KeyBound: true})
	r.browser.waitOutput(r.ctx, `\"messageType\":\"broadcast_subscribe\"`)
	msg := []byte("after broadcast_subscribe " + senderRandomHex(4))
	senderCheckCreated(t, "web-push", r.send(senderJob{Payload: msg}), "2419200")
	r.expectPush("a push after broadcast_subscribe", msg)
	if n := strings.Count(r.browser.out.String(), "beginWSSetup: Connecting to"); n != 1 {
		t.Fatalf("Firefox opened %d WebSockets, want 1 (the socket was closed)", n)
	}
}

// TestFirefoxProfilePrefs: the generated user.js has the prefs PROTOCOL.md
// §4 requires, allows plain ws:// only for a ws:// server URL, and points
// every non-loopback request at the guard proxy.
func TestFirefoxProfilePrefs(t *testing.T) {
	for _, tc := range []struct {
		pushURL       string
		allowInsecure string
	}{
		{"ws://127.0.0.1:8080/", "true"},
		{"wss://push.example.com/", "false"},
	} {
		t.Run(tc.pushURL, func(t *testing.T) {
			js := ffUserJS(ffPrefs(tc.pushURL, 4711))
			for _, want := range []string{
				`user_pref("dom.push.serverURL", "` + tc.pushURL + `");`,
				`user_pref("dom.push.testing.allowInsecureServerURL", ` + tc.allowInsecure + `);`,
				`user_pref("dom.push.enabled", true);`,
				`user_pref("dom.push.connection.enabled", true);`,
				`user_pref("dom.push.testing.ignorePermission", true);`,
				`user_pref("permissions.default.desktop-notification", 1);`,
				`user_pref("network.proxy.type", 1);`,
				`user_pref("network.proxy.http_port", 4711);`,
				`user_pref("network.proxy.ssl_port", 4711);`,
				`user_pref("toolkit.telemetry.enabled", false);`,
				`user_pref("app.normandy.enabled", false);`,
				`user_pref("network.captive-portal-service.enabled", false);`,
				`user_pref("browser.safebrowsing.malware.enabled", false);`,
			} {
				if !strings.Contains(js, want+"\n") {
					t.Errorf("user.js lacks %s", want)
				}
			}
			seen := map[string]bool{}
			for _, p := range ffPrefs(tc.pushURL, 4711) {
				if seen[p.Name] {
					t.Errorf("pref %s set twice", p.Name)
				}
				seen[p.Name] = true
			}
		})
	}
}
