package integration

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/integration/attack"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Issue 10 (hostile clients), one subtest per numbered finding, on the
// embedded default and on real Kafka. The attacks are pushattack's (the
// integration/attack package); each test also keeps its own victim user
// agent, connected before the attack, whose pushes must still get 201 and
// arrive after it.

const (
	hostileTimeout = 4 * time.Minute
	// hostileMaxChannels is the small --max-channels the floods run against.
	hostileMaxChannels = 50
	// hostileBytesPerOp bounds what one register or unregister may add to
	// the channels topic: O(1) per change (a record of one channel), never
	// the whole list. The quadratic design wrote ~40 bytes × channels per
	// change, 40 KB per change at 1,000 channels.
	hostileBytesPerOp = 1024
	// hostileIdleUAIDBytes is the documented in-memory cost of an offline
	// UAID with nothing pending, for the whole process on external Kafka
	// (the owner's record; the channel projector keeps nothing for it).
	hostileIdleUAIDBytes = 200
	// hostileEmbeddedLogBytesPerUAID is what the embedded broker adds: kfake
	// keeps an in-memory index entry (~90 B) per record batch until the
	// batch is trimmed or compacted away, and an abandoned UAID leaves four
	// batches in compacted topics (Connected and Disconnected in presence,
	// its channel and last-seen records in channels) until its idle expiry
	// tombstones them. Documented in the README's Measured table.
	hostileEmbeddedLogBytesPerUAID = 400
)

// hostileMode is where the server runs its log.
type hostileMode struct {
	name     string
	embedded bool
}

var hostileModes = []hostileMode{{"Embedded", true}, {"Kafka", false}}

// hostileServer starts pushlog in mode with a debug listener (for live
// heap figures) and the extra serve flags.
func hostileServer(t *testing.T, m hostileMode, args ...string) (*server, string) {
	t.Helper()
	debug := freePort(t)
	s := startServer(t, serverOpts{Embedded: m.embedded, Args: append([]string{"--debug-addr=" + debug}, args...)})
	return s, debug
}

// hostileRunner is pushattack's runner pointed at s.
func hostileRunner(t *testing.T, s *server, debug string, count int) *attack.Runner {
	t.Helper()
	r, err := attack.New(attack.Options{
		PushURL:  s.HTTPURL,
		WSURL:    s.WSURL,
		StatsURL: "http://" + debug + "/debug/stats",
		Count:    count,
		Duration: 90 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// hostileRun runs one attack and requires the runner's own checks: the
// server is up and another user's push got 201 and arrived.
func hostileRun(ctx context.Context, t *testing.T, r *attack.Runner, name string) attack.Result {
	t.Helper()
	res, err := r.RunOne(ctx, name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	heap := "n/a"
	if res.HeapDelta != nil {
		heap = strconv.FormatFloat(mb(*res.HeapDelta), 'f', 2, 64) + " MB"
	}
	t.Logf("%s: sent %d in %s, answers %s, heap Δ %s", name, res.Sent, res.Elapsed.Round(time.Millisecond), res.AnswersString(), heap)
	if res.Error != "" {
		t.Errorf("%s stopped early: %s", name, res.Error)
	}
	if !res.ServerUp || !res.OthersOK {
		t.Errorf("%s: server up %v, other users served %v: %s", name, res.ServerUp, res.OthersOK, res.Note)
	}
	return res
}

// hostileVictim is another user, subscribed before an attack.
type hostileVictim struct {
	ua  *uaClient
	sub *uaSubscription
	v   snVAPID
}

func newHostileVictim(ctx context.Context, t *testing.T, s *server) *hostileVictim {
	t.Helper()
	ua := uaDial(ctx, t, s.WSURL, "")
	return &hostileVictim{ua: ua, sub: ua.subscribe(ctx, ""), v: snNewVAPID(t)}
}

// check requires the process to be alive and a push to the victim to get
// 201 and arrive.
func (h *hostileVictim) check(ctx context.Context, t *testing.T, s *server, what string) {
	t.Helper()
	if !s.running() {
		t.Fatalf("after %s the process exited:\n%s", what, s.logs.String())
	}
	msg := "still served after " + what
	res := snSend(ctx, t, h.sub, []byte(msg), snPush{TTL: snLongTTL, VAPID: h.v})
	if res.Status != http.StatusCreated {
		t.Fatalf("after %s another user's push answered %s, want 201", what, res)
	}
	n := snExpect(ctx, t, h.ua, h.sub, msg)
	h.ua.ack(n)
}

// errorStatuses counts the replies of kind ("register") whose status is
// not 200.
func errorStatuses(res attack.Result, kind string) int {
	n := 0
	for k, v := range res.Answers {
		st, ok := strings.CutPrefix(k, kind+" ")
		if code, err := strconv.Atoi(st); ok && err == nil && code != 200 {
			n += v
		}
	}
	return n
}

// TestHostile runs issue 10's findings against one mode at a time.
func TestHostile(t *testing.T) {
	for _, m := range hostileModes {
		t.Run(m.name, func(t *testing.T) {
			t.Run("Finding1Floods", func(t *testing.T) { hostileFloods(t, m) })
			t.Run("Finding1FloodedLog", func(t *testing.T) { hostileFloodedLog(t, m) })
			t.Run("Finding1RegistrationRate", func(t *testing.T) { hostileRate(t, m) })
			t.Run("Finding2AbandonedUAIDs", func(t *testing.T) { hostileAbandoned(t, m) })
			t.Run("Finding2IdleExpiry", func(t *testing.T) { hostileExpiry(t, m) })
			t.Run("Finding3And4Sizes", func(t *testing.T) { hostileSizes(t, m) })
		})
	}
}

// hostileFloods: finding 1. A channel flood past --max-channels gets
// error statuses on an open socket; an unregister flood of unknown channels
// costs nothing lasting; ack and broadcast_subscribe floods are harmless;
// the channels topic grows O(1) per change; the process stays up, other
// users are served, and it starts again on the same data.
func hostileFloods(t *testing.T, m hostileMode) {
	ctx := testContext(t, hostileTimeout)
	s, debug := hostileServer(t, m, "--max-channels="+strconv.Itoa(hostileMaxChannels))
	victim := newHostileVictim(ctx, t, s)
	channels := s.names(t).Channels

	t.Run("ChannelFlood", func(t *testing.T) {
		const count = 4 * hostileMaxChannels
		r := hostileRunner(t, s, debug, count)
		before := settledTopicBytes(ctx, t, s, channels)
		res := hostileRun(ctx, t, r, "channel-flood")
		if ok := res.Count("register 200"); ok > hostileMaxChannels {
			t.Errorf("%d registers got 200 on one UAID, --max-channels is %d", ok, hostileMaxChannels)
		}
		if errs := errorStatuses(res, "register"); errs < res.Sent-hostileMaxChannels {
			t.Errorf("only %d of %d registers past the limit got an error status (answers %s)", errs, res.Sent-hostileMaxChannels, res.AnswersString())
		}
		if closed := res.CountPrefix("closed"); closed > 0 {
			t.Errorf("the server closed the attacker's socket %d times: past the limit it must answer with a status and keep it open", closed)
		}
		grown := settledTopicBytes(ctx, t, s, channels) - before
		t.Logf("channels topic grew %d bytes for %d registers (%.0f per register)", grown, res.Sent, float64(grown)/float64(max(res.Sent, 1)))
		if limit := int64(res.Sent) * hostileBytesPerOp; grown > limit {
			t.Errorf("channels topic grew %d bytes for %d registers, more than %d per register", grown, res.Sent, hostileBytesPerOp)
		}
		victim.check(ctx, t, s, "a channel flood")
	})

	t.Run("UnregisterFlood", func(t *testing.T) {
		const count = 2000
		r := hostileRunner(t, s, debug, count)
		before := settledTopicBytes(ctx, t, s, channels)
		res := hostileRun(ctx, t, r, "unregister-flood")
		if res.Sent < count {
			t.Errorf("only %d of %d unregisters sent in time", res.Sent, count)
		}
		grown := settledTopicBytes(ctx, t, s, channels) - before
		t.Logf("channels topic grew %d bytes for %d unknown unregisters", grown, res.Sent)
		if limit := int64(res.Sent) * hostileBytesPerOp; grown > limit {
			t.Errorf("channels topic grew %d bytes for %d unregisters of unknown channels, more than %d per unregister", grown, res.Sent, hostileBytesPerOp)
		}
		// "Costs nothing lasting": no tombstone per unknown channel in
		// memory either (2,000 of them were ~2.7 MB).
		if res.HeapDelta != nil && *res.HeapDelta > 1<<20 {
			t.Errorf("live heap grew %.1f MB over %d unregisters of unknown channels", mb(*res.HeapDelta), res.Sent)
		}
		victim.check(ctx, t, s, "an unregister flood")
	})

	t.Run("AckAndBroadcastFloods", func(t *testing.T) {
		r := hostileRunner(t, s, debug, 1000)
		for _, name := range []string{"ack-flood", "broadcast-flood"} {
			res := hostileRun(ctx, t, r, name)
			if res.Count("ping answered") != 1 && res.CountPrefix("closed") == 0 {
				t.Errorf("%s: the socket neither answered a ping nor was closed: %s", name, res.AnswersString())
			}
		}
		victim.check(ctx, t, s, "ack and broadcast floods")
	})

	t.Run("RestartAfterFloods", func(t *testing.T) {
		victim.ua.sync(ctx) // its last ack is handled before the stop
		s.terminate()
		s.restart()
		victim.ua = uaRedial(ctx, t, s.WSURL, victim.ua.UAID)
		victim.check(ctx, t, s, "a restart on the flooded data")
	})
}

// hostileFloodedLog: finding 1, the damaged data directory. What one
// socket wrote before there were limits (~20,000 unregisters and ~12,000
// registers grew a UAID's channel state past 1 MB, the channel projector
// failed with MESSAGE_TOO_LARGE and the process exited, again on every
// restart) is written straight into the registrations log, past the
// connector's limits: the process stays up, serves others, and starts
// again on that log.
func hostileFloodedLog(t *testing.T, m hostileMode) {
	ctx := testContext(t, hostileTimeout)
	s, _ := hostileServer(t, m)
	victim := newHostileVictim(ctx, t, s)
	channels := s.names(t).Channels
	const registers, unregisters = 5000, 30000
	uaid := hostileFloodLog(ctx, t, s, registers, unregisters)
	t.Logf("wrote %d registers and %d unknown unregisters for %s straight into %s", registers, unregisters, uaid, s.names(t).Registrations)
	settledTopicBytes(ctx, t, s, channels)
	hostileCaughtUp(ctx, t, s)
	victim.check(ctx, t, s, "a flooded registrations log")
	victim.ua.sync(ctx) // its ack is handled before the stop
	s.terminate()
	s.restart() // fails the test if it exits during start-up
	victim.ua = uaRedial(ctx, t, s.WSURL, victim.ua.UAID)
	victim.check(ctx, t, s, "a restart on a flooded registrations log")
	time.Sleep(5 * time.Second) // a crash loop shows within seconds
	if !s.running() {
		t.Fatalf("the process exited after a restart on the flooded log:\n%s", s.logs.String())
	}
	hostileCaughtUp(ctx, t, s)
}

// hostileCaughtUp requires the channel projector to get past the flooded
// UAID (fold it, or quarantine it with a report) instead of failing on it
// for ever: its group's committed offsets on the registrations topic reach
// the end within a minute.
func hostileCaughtUp(ctx context.Context, t *testing.T, s *server) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(s.brokers(), ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names := s.names(t)
	group := names.Group("channels")
	deadline := time.Now().Add(time.Minute)
	for {
		ends, err := adm.ListEndOffsets(ctx, names.Registrations)
		if err != nil {
			t.Fatalf("end offsets: %v", err)
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("offsets of %s: %v", group, err)
		}
		var lag int64
		ends.Each(func(o kadm.ListedOffset) {
			c, ok := committed.Lookup(names.Registrations, o.Partition)
			switch {
			case !ok:
				lag += o.Offset
			case o.Offset > c.At:
				lag += o.Offset - c.At
			}
		})
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the channel projector (group %s) is still %d registrations behind a minute after the flood: it fails on the flooded UAID instead of getting past it", group, lag)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// hostileRate: registrations per socket are bounded in rate: past the
// burst of --max-registrations-per-minute a register is answered 429 and
// the socket stays open.
func hostileRate(t *testing.T, m hostileMode) {
	const perMinute, count = 30, 100
	ctx := testContext(t, hostileTimeout)
	s, debug := hostileServer(t, m, "--max-registrations-per-minute="+strconv.Itoa(perMinute))
	victim := newHostileVictim(ctx, t, s)
	r := hostileRunner(t, s, debug, count)
	res := hostileRun(ctx, t, r, "channel-flood")
	// The flood takes about a second: at most one more token refills.
	if ok := res.Count("register 200"); ok > perMinute+1 || ok == 0 {
		t.Errorf("%d of %d registers on one socket got 200 with --max-registrations-per-minute %d", ok, res.Sent, perMinute)
	}
	if limited := res.Count("register 429"); limited < res.Sent-perMinute-1 {
		t.Errorf("only %d registers past the rate got 429 (answers %s)", limited, res.AnswersString())
	}
	if closed := res.CountPrefix("closed"); closed > 0 {
		t.Errorf("the server closed the socket %d times: past the rate it must answer 429 and keep it open", closed)
	}
	victim.check(ctx, t, s, "a registration-rate flood")
}

// hostileFloodLog produces registration events for a fresh UAID
// directly to the server's registrations topic and returns the UAID.
func hostileFloodLog(ctx context.Context, t *testing.T, s *server, registers, unregisters int) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(s.brokers(), ",")...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	names := s.names(t)
	uaid := schema.NewUAID()
	var first error
	var mu sync.Mutex
	for i := range registers + unregisters {
		ev := schema.NewEvent(uaid, time.Now())
		chid := uaChannelID()
		if i < registers {
			ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: chid}}
		} else {
			ev.Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: chid, Code: 200}}
		}
		rec, err := names.Record(ev)
		if err != nil {
			t.Fatal(err)
		}
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if first != nil {
		t.Fatalf("produce flood: %v", first)
	}
	return uaid
}

// hostileAbandoned: finding 2. UAIDs that say hello, register and leave
// cost at most the documented bytes each in memory, once the log's replay
// window has passed (the embedded broker runs in the process, and its
// index of recent records is not per-UAID state: a short window here).
// The cost is the slope between two floods of the same size: buffers that
// do not grow with UAIDs (the analytics projector's column buffers when
// ClickHouse is configured, franz-go's fetch buffers) are in both
// figures and cancel out.
func hostileAbandoned(t *testing.T, m hostileMode) {
	ctx := testContext(t, hostileTimeout)
	var args []string
	if m.embedded {
		args = []string{"--embedded-retain=5s", "--embedded-trim-interval=2s", "--embedded-segment-bytes=65536"}
	}
	s, debug := hostileServer(t, m, args...)
	victim := newHostileVictim(ctx, t, s)
	const count = 10000
	perUAID := int64(hostileIdleUAIDBytes)
	if m.embedded {
		perUAID += hostileEmbeddedLogBytesPerUAID
	}
	// flood makes count abandoned UAIDs and returns how many registered and
	// the live heap once it has settled at most limit(made) above from (or
	// after 45 s, whatever it is then).
	flood := func(from, slack int64) (int, int64) {
		res := hostileRun(ctx, t, hostileRunner(t, s, debug, count), "hello-flood")
		made := res.Count("register 200")
		if made < count*9/10 {
			t.Fatalf("only %d of %d abandoned UAIDs registered (answers %s)", made, count, res.AnswersString())
		}
		deadline := time.Now().Add(45 * time.Second)
		for {
			heap := liveHeap(ctx, t, debug).HeapAlloc
			if heap-from <= int64(made)*perUAID+slack || time.Now().After(deadline) {
				return made, heap
			}
			time.Sleep(2 * time.Second)
		}
	}
	before := liveHeap(ctx, t, debug).HeapAlloc
	// The first flood also fills buffers sized by the load, not by UAIDs.
	made1, mid := flood(before, 8<<20)
	made2, after := flood(mid, 1<<20)
	slope := float64(after-mid) / float64(made2)
	names := s.names(t)
	t.Logf("live heap %+.2f MB for the first %d abandoned UAIDs, %+.2f MB for the next %d: %.0f bytes each; log bytes: registrations %d, channels %d, presence %d",
		mb(mid-before), made1, mb(after-mid), made2, slope,
		topicBytes(ctx, t, s, names.Registrations), topicBytes(ctx, t, s, names.Channels), topicBytes(ctx, t, s, names.Presence))
	// The first round: 8 MiB of slack for buffers sized by the load.
	if limit := int64(made1)*perUAID + 8<<20; mid-before > limit {
		t.Errorf("live heap grew %.2f MB for the first %d abandoned UAIDs (%.0f bytes each), over %d bytes each + 8 MB",
			mb(mid-before), made1, float64(mid-before)/float64(made1), perUAID)
	}
	// The second: 1 MiB of slack for what else moves in a live process.
	if limit := int64(made2)*perUAID + 1<<20; after-mid > limit {
		t.Errorf("live heap grew %.2f MB for %d more abandoned UAIDs (%.0f bytes each), over %d bytes each + 1 MB",
			mb(after-mid), made2, slope, perUAID)
	}
	victim.check(ctx, t, s, "a hello flood")
}

// hostileExpiry: finding 2. With a short --uaid-expiry (its minimum, a
// minute, checked once a minute) an offline UAID is reset: its endpoint
// answers 410 errno 103 and a hello with it gets a new UAID. A user agent
// that stays connected is not expired.
func hostileExpiry(t *testing.T, m hostileMode) {
	const expiry = time.Minute
	ctx := testContext(t, expiry+hostileTimeout)
	s, _ := hostileServer(t, m, "--uaid-expiry="+expiry.String())
	connected := newHostileVictim(ctx, t, s)
	uaid, sub := snOffline(ctx, t, s, "")
	vapid := snNewVAPID(t)
	began := time.Now()
	var res snResult
	for {
		res = snSend(ctx, t, sub, []byte("are you still there?"), snPush{TTL: 60, VAPID: vapid})
		if res.Status != http.StatusCreated || time.Since(began) > expiry+3*time.Minute {
			break
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("offline UAID answered %s %s after it left (--uaid-expiry %s)", res, time.Since(began).Round(time.Second), expiry)
	snCheckError(t, "push to an expired UAID", res.Status, res.Header, res.Body, http.StatusGone, 103)
	if cc := res.Header.Get("Cache-Control"); cc != "max-age=86400" {
		t.Errorf("410 Cache-Control %q, want max-age=86400", cc)
	}
	// "A UAID without a connection this long is reset": never sooner
	// (the scan may come up to a minute later).
	if elapsed := time.Since(began); elapsed < expiry {
		t.Errorf("the UAID was reset %s after it left, sooner than --uaid-expiry %s", elapsed.Round(time.Second), expiry)
	}
	ua := uaDial(ctx, t, s.WSURL, uaid)
	if ua.UAID == uaid {
		t.Errorf("hello with the expired UAID %s kept it", uaid)
	}
	ua.close()
	// The connected one has had no traffic for longer than the expiry
	// too, but it never was without a connection.
	connected.check(ctx, t, s, "the offline UAID's expiry")
}

// hostileSizes: findings 3 and 4. Oversized crypto headers and VAPID subs
// are refused (4xx), never stored; many distinct valid VAPID tokens keep
// the cache within its byte bound; lenient parses are refused.
func hostileSizes(t *testing.T, m hostileMode) {
	ctx := testContext(t, hostileTimeout)
	s, debug := hostileServer(t, m)
	victim := newHostileVictim(ctx, t, s)

	t.Run("OversizedHeadersAndSub", func(t *testing.T) {
		r := hostileRunner(t, s, debug, 5)
		for _, name := range []string{"oversized-encryption", "oversized-crypto-key", "oversized-sub"} {
			res := hostileRun(ctx, t, r, name)
			if n := res.CountPrefix("4"); n != res.Sent || res.Sent == 0 {
				t.Errorf("%s: %d of %d refused with 4xx (answers %s)", name, n, res.Sent, res.AnswersString())
			}
		}
		victim.check(ctx, t, s, "oversized headers")
	})

	t.Run("VAPIDCacheBytes", func(t *testing.T) {
		// 7,000 distinct valid 4 KB tokens, each sent twice (a token is
		// cached the second time it is verified): 28 MB of tokens against
		// the documented 16 MiB cache, twice. The first round fills the
		// cache; the second must only replace entries.
		const count, cacheBytes = 7000, 16 << 20
		// Each token came with an accepted push, which is pending for the
		// rest of the test: the owner's index and payload (~350 B), the
		// retry index (~130 B) and, embedded, the broker's batch index
		// (~90 B). Without the byte bound the tokens alone were 28 MB a
		// round.
		const perPush = 600
		for round := 1; round <= 2; round++ {
			res := hostileRun(ctx, t, hostileRunner(t, s, debug, count), "vapid-cache")
			if res.HeapDelta == nil {
				t.Fatal("no live-heap figure from the debug listener")
			}
			delta := *res.HeapDelta
			t.Logf("round %d: live heap %+.1f MB after %d pushes with %d distinct %d-byte tokens", round, mb(delta), res.Sent, count, 4000)
			// The first round also grows buffers sized by the load, not by
			// tokens (the analytics projector's when ClickHouse is
			// configured): 8 MB of slack there, 2 MB after.
			limit := int64(res.Sent*perPush + 2<<20)
			if round == 1 {
				limit += cacheBytes + 6<<20
			}
			if delta > limit {
				t.Errorf("round %d: live heap grew %.1f MB for %d pushes with distinct tokens, over %.1f MB: the VAPID cache is bounded at %d MB (+%d B per pending push)",
					round, mb(delta), res.Sent, mb(limit), cacheBytes>>20, perPush)
			}
		}
		victim.check(ctx, t, s, "many distinct VAPID tokens")
	})

	t.Run("LenientParsing", func(t *testing.T) {
		r := hostileRunner(t, s, debug, 1)
		res := hostileRun(ctx, t, r, "lenient")
		want := map[string]int{"aud-trailing-slash": 401, "exp-string": 401, "ttl-plus": 400, "ttl-spaces": 400}
		for _, p := range attack.ProbeNames() {
			if res.Count(p+" "+strconv.Itoa(want[p])) != 1 {
				t.Errorf("probe %s: answers %s, want %d", p, res.AnswersString(), want[p])
			}
		}
	})
}

// TestPushattackCLI runs the operator tool itself against the embedded
// default: it prints one JSON result per attack and exits 0 when the
// server stayed up and other users were served.
func TestPushattackCLI(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pushattack")
	build := exec.Command("go", "build", "-o", bin, "github.com/pushlog/pushlog/cmd/pushattack")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pushattack: %v\n%s", err, out)
	}
	ctx := testContext(t, hostileTimeout)
	s := startServer(t, serverOpts{Embedded: true})
	cmd := exec.CommandContext(ctx, bin, "--push-url", s.HTTPURL, "--ws-url", s.WSURL,
		"--attacks", "channel-flood,oversized-sub,lenient", "--count", "20", "--duration", "30s", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pushattack: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var results []attack.Result
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		t.Fatalf("pushattack --json printed %q: %v", stdout.String(), err)
	}
	if len(results) != 3 {
		t.Fatalf("%d results, want 3: %s", len(results), stdout.String())
	}
	for _, r := range results {
		t.Logf("%s: sent %d, answers %s, up %v, others served %v", r.Attack, r.Sent, r.AnswersString(), r.ServerUp, r.OthersOK)
		if !r.ServerUp || !r.OthersOK || r.Sent == 0 {
			t.Errorf("%s: %+v", r.Attack, r)
		}
	}

	// Anything but loopback is refused unless --allow-remote.
	out, err := exec.CommandContext(ctx, bin, "--push-url", "https://push.example.com", "--ws-url", "wss://push.example.com/").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--allow-remote") {
		t.Fatalf("remote target: err %v, output %q; want exit 2 naming --allow-remote", err, out)
	}
}
