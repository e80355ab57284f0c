// Package attack runs hostile-client attacks against a pushlog deployment
// (issue 10): channel and unregister floods on one socket, hello floods
// that abandon UAIDs, oversized crypto headers and VAPID subs, many
// distinct large VAPID tokens, lenient-parsing probes, and ack and
// broadcast_subscribe floods. Every attack is bounded in count and time.
// After each attack the runner checks that the server is still up and that
// another user's push still gets 201 and arrives.
//
// It is an operator tool: it refuses targets that are not on loopback
// unless told otherwise (Options.AllowRemote), so it is not pointed at a
// deployment by accident. cmd/pushattack wires it to flags; the
// integration tests import it. It lives under integration/ because the
// hostile tests are what defines it, and code outside cmd/ may not import
// a binary's packages.
package attack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// Options configure a Runner.
type Options struct {
	PushURL string // push API base, e.g. http://127.0.0.1:8082
	WSURL   string // connection listener, e.g. ws://127.0.0.1:8080/
	// StatsURL, optional, is the server's /debug/stats (its --debug-addr):
	// when set, each attack reports the change of live heap it caused.
	StatsURL string
	// AllowRemote permits targets that are not loopback addresses.
	AllowRemote bool
	Count       int           // messages or requests per attack (default DefaultCount)
	Duration    time.Duration // bound on one attack (default DefaultDuration)
	Concurrency int           // sockets at a time for hello floods (default 16)
	// Window is how many requests one socket keeps in flight (default 32).
	Window int
	// Sizes of the oversized inputs, in bytes (defaults: the issue's).
	HeaderSize int // aesgcm Encryption / Crypto-Key header (60,005)
	SubSize    int // VAPID sub (28,000)
	// TokenSize is the size of each distinct VAPID token of vapid-cache
	// (default 4,000: just under pushlog's default token limit, so every
	// token is verified and cached; the 37,000-byte tokens are now
	// refused before parsing).
	TokenSize int
	// ProbeTimeout bounds the after-attack checks (default 15 s).
	ProbeTimeout time.Duration
	Logger       *slog.Logger
}

// Defaults.
const (
	DefaultCount    = 200
	DefaultDuration = 60 * time.Second
)

func (o *Options) setDefaults() {
	if o.Count <= 0 {
		o.Count = DefaultCount
	}
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Window <= 0 {
		o.Window = 32
	}
	if o.HeaderSize <= 0 {
		o.HeaderSize = 60005
	}
	if o.SubSize <= 0 {
		o.SubSize = 28000
	}
	if o.TokenSize <= 0 {
		o.TokenSize = 4000
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Result is what one attack did and how the server answered.
type Result struct {
	Attack string `json:"attack"`
	Sent   int    `json:"sent"`
	// Answers counts the server's answers by kind: an HTTP status ("413"),
	// a reply status ("register 200"), a probe's answer ("ttl-plus 400"),
	// "closed 4774" for a socket the server closed, "no reply" for a
	// request whose answer did not come.
	Answers map[string]int `json:"answers"`
	// ServerUp: the push API's /__lbheartbeat__ and a WebSocket hello
	// both answered after the attack.
	ServerUp bool `json:"server_up"`
	// OthersOK: a push to another user agent (connected before the
	// attack) got 201 and arrived after it.
	OthersOK bool `json:"others_ok"`
	// HeapDelta is the change of the server's live heap (after a GC) over
	// the attack, when Options.StatsURL is set.
	HeapDelta *int64        `json:"heap_delta,omitempty"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Note      string        `json:"note,omitempty"`  // why the checks failed
	Error     string        `json:"error,omitempty"` // why the attack itself stopped early
}

// Count returns how many answers were of kind.
func (r Result) Count(kind string) int { return r.Answers[kind] }

// CountPrefix returns how many answers have kinds starting with prefix.
func (r Result) CountPrefix(prefix string) int {
	n := 0
	for k, v := range r.Answers {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// AnswersString renders Answers sorted by kind: "register 200=50 register 429=150".
func (r Result) AnswersString() string {
	keys := make([]string, 0, len(r.Answers))
	for k := range r.Answers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.Answers[k]))
	}
	return strings.Join(parts, " ")
}

// attackFunc runs one attack, filling res.Sent and res.Answers.
type attackFunc func(ctx context.Context, r *Runner, res *Result) error

// Attack is one named attack.
type Attack struct {
	Name        string
	Description string
	run         attackFunc
}

// attacks lists every attack in the order they run by default.
var attacks = []Attack{
	{"channel-flood", "registers of new channels on one socket, past any per-UAID limit", channelFlood},
	{"unregister-flood", "unregisters of random unknown channel ids on one socket", unregisterFlood},
	{"hello-flood", "new UAIDs: hello, register one channel, leave (abandoned UAIDs)", helloFlood},
	{"oversized-encryption", "aesgcm push with an oversized Encryption header", oversizedEncryption},
	{"oversized-crypto-key", "aesgcm push with an oversized Crypto-Key header", oversizedCryptoKey},
	{"oversized-sub", "push with an oversized VAPID sub claim", oversizedSub},
	{"vapid-cache", "many distinct large (valid) VAPID tokens, each sent twice, to fill the token cache", vapidCache},
	{"lenient", "probes PROTOCOL.md refuses: aud with a trailing slash, exp as a string, TTL +5, TTL with spaces", lenientProbes},
	{"ack-flood", "ack messages full of unknown versions on one socket", ackFlood},
	{"broadcast-flood", "broadcast_subscribe messages with many unknown ids on one socket", broadcastFlood},
}

// Names lists the attacks' names in their default order.
func Names() []string {
	out := make([]string, len(attacks))
	for i, a := range attacks {
		out[i] = a.Name
	}
	return out
}

// Describe returns an attack's description ("" when unknown).
func Describe(name string) string {
	for _, a := range attacks {
		if a.Name == name {
			return a.Description
		}
	}
	return ""
}

func lookup(name string) (Attack, bool) {
	for _, a := range attacks {
		if a.Name == name {
			return a, true
		}
	}
	return Attack{}, false
}

// Runner runs attacks against one target.
type Runner struct {
	opts    Options
	push    *url.URL
	http    *http.Client
	log     *slog.Logger
	victim  *victim
	bodyCap int64
}

// New checks the options (loopback targets only unless AllowRemote).
func New(opts Options) (*Runner, error) {
	opts.setDefaults()
	push, err := checkURL("push URL", opts.PushURL, []string{"http", "https"}, opts.AllowRemote)
	if err != nil {
		return nil, err
	}
	if _, err := checkURL("ws URL", opts.WSURL, []string{"ws", "wss"}, opts.AllowRemote); err != nil {
		return nil, err
	}
	if opts.StatsURL != "" {
		if _, err := checkURL("stats URL", opts.StatsURL, []string{"http", "https"}, opts.AllowRemote); err != nil {
			return nil, err
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	return &Runner{
		opts: opts,
		push: push,
		// Requests are bounded by their context; this is a backstop.
		http:    &http.Client{Transport: tr, Timeout: 30 * time.Second},
		log:     opts.Logger,
		bodyCap: 64 << 10,
	}, nil
}

// checkURL parses u and refuses other schemes and, unless allowRemote,
// hosts that are not loopback.
func checkURL(what, raw string, schemes []string, allowRemote bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !slices.Contains(schemes, strings.ToLower(u.Scheme)) || u.Host == "" {
		return nil, fmt.Errorf("%s %q: want an absolute %s URL", what, raw, strings.Join(schemes, "/"))
	}
	if !allowRemote && !IsLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("%s %q is not a loopback address: pushattack attacks only the local machine unless --allow-remote is given", what, raw)
	}
	return u, nil
}

// IsLoopbackHost reports whether host is "localhost" or a loopback IP.
// Other names are not resolved: what they point at can change.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run runs the named attacks in order (all when names is empty). Each
// attack is bounded by Options.Duration; the whole run by ctx. It stops at
// the first attack that cannot even start (an unknown name, no victim).
func (r *Runner) Run(ctx context.Context, names []string) ([]Result, error) {
	if len(names) == 0 {
		names = Names()
	}
	for _, n := range names {
		if _, ok := lookup(n); !ok {
			return nil, fmt.Errorf("unknown attack %q (known: %s)", n, strings.Join(Names(), ", "))
		}
	}
	defer r.Close()
	var out []Result
	for _, n := range names {
		res, err := r.RunOne(ctx, n)
		if err != nil {
			return out, err
		}
		out = append(out, res)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// RunOne runs one attack and the after-attack checks. The error is for a
// run that could not start (unknown attack, no victim user agent); what
// the attack met is in the Result.
func (r *Runner) RunOne(ctx context.Context, name string) (Result, error) {
	a, ok := lookup(name)
	if !ok {
		return Result{}, fmt.Errorf("unknown attack %q", name)
	}
	if r.victim == nil {
		v, err := newVictim(ctx, r)
		if err != nil {
			return Result{}, fmt.Errorf("victim user agent: %w", err)
		}
		r.victim = v
	}
	res := Result{Attack: name, Answers: map[string]int{}}
	before, statsErr := r.liveHeap(ctx)
	actx, cancel := context.WithTimeout(ctx, r.opts.Duration)
	start := time.Now()
	err := a.run(actx, r, &res)
	cancel()
	res.Elapsed = time.Since(start)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		res.Error = err.Error()
	}
	r.log.Info("attack done", "attack", name, "sent", res.Sent, "answers", res.AnswersString(), "elapsed", res.Elapsed)
	if statsErr == nil {
		if after, err := r.liveHeap(ctx); err == nil {
			d := after - before
			res.HeapDelta = &d
		}
	}
	r.check(ctx, &res)
	return res, nil
}

// check fills ServerUp and OthersOK.
func (r *Runner) check(ctx context.Context, res *Result) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.ProbeTimeout)
	defer cancel()
	var notes []string
	if err := r.serverUp(ctx); err != nil {
		notes = append(notes, "server: "+err.Error())
	} else {
		res.ServerUp = true
	}
	if err := r.victim.probe(ctx); err != nil {
		notes = append(notes, "other user: "+err.Error())
	} else {
		res.OthersOK = true
	}
	res.Note = strings.Join(notes, "; ")
}

// serverUp checks the push API's load-balancer heartbeat and a hello.
func (r *Runner) serverUp(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.origin()+"/__lbheartbeat__", nil)
	if err != nil {
		return err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("lbheartbeat: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("lbheartbeat: status %d", resp.StatusCode)
	}
	c, err := dialHello(ctx, r.opts.WSURL, "")
	if err != nil {
		return err
	}
	c.close()
	return nil
}

// Close drops the victim user agent.
func (r *Runner) Close() {
	if r.victim != nil {
		r.victim.close()
		r.victim = nil
	}
}

// origin is the push URL's scheme://host.
func (r *Runner) origin() string { return r.push.Scheme + "://" + r.push.Host }

// target moves an endpoint the server issued onto the origin of the push
// URL the operator named (its path kept), so the tool never posts anywhere
// else even when the server's public URL points elsewhere.
func (r *Runner) target(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	return r.origin() + u.EscapedPath(), nil
}
