package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	webpushgo "github.com/SherClockHolmes/webpush-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// kcUAs is the number of user agents (and senders, one each).
const kcUAs = 8

func kcRound(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, 0, min(len(ds), 5))
	for _, d := range ds[:min(len(ds), 5)] {
		out = append(out, d.Round(10*time.Millisecond))
	}
	return out
}

// kcPartitions is what the harness starts pushlog with (PUSHLOG_PARTITIONS).
const kcPartitions = 4

// TestKafkaClusterFailover runs pushlog on a 3-broker Apache Kafka cluster
// (deploy/kafka/cluster.sh: KRaft, replication 3, min.insync.replicas=2)
// while senders push in a loop, retrying every 503 with the exact bytes of
// their first attempt, and user agents receive and ack:
//
//  1. kill -9 a broker that leads a messages partition, the connectors
//     group's coordinator when it leads one (kcVictim): every 201 is
//     delivered, nothing acked comes back, no payload arrives twice as two
//     messages (a retry appended again), and 201s resume soon after Kafka
//     moved leadership (the outage is logged; only a generous bound is
//     asserted, timings on a shared 2-core machine vary);
//  2. stop two brokers: every push answered after that is 503 with
//     Retry-After, never 201 (but for the retry of a push written before
//     the stop, which ingest recognises); start them again and pushes
//     recover.
func TestKafkaClusterFailover(t *testing.T) {
	brokers := kcCluster(t)
	ctx := testContext(t, 4*time.Minute)
	began := time.Now()
	phase := func(format string, a ...any) {
		t.Logf("%6.1fs %s", time.Since(began).Seconds(), fmt.Sprintf(format, a...))
	}
	s := startServer(t, serverOpts{Env: []string{
		"KAFKA_BROKERS=" + brokers,
		"PUSHLOG_REPLICATION=3",
		"PUSHLOG_GROUP_SESSION_TIMEOUT=6s",
		"PUSHLOG_GROUP_HEARTBEAT=1s",
		// Not about quotas: 8 senders of one VAPID key push back to back.
		"PUSHLOG_PUSH_QUOTA_VAPID_RATE=-1", "PUSHLOG_PUSH_QUOTA_SUBSCRIPTION_RATE=-1",
		// Nor about the per-UAID bound: while the owner re-bootstraps
		// after the coordinator's death its user agents receive nothing,
		// and a sender pushing back to back passes the default 200
		// pending in seconds (the oldest would be dropped, by design).
		"PUSHLOG_PENDING_LIMIT=100000",
	}})
	adm := kcAdmin(t, brokers)
	names, _ := schema.NamesFor(s.opts.Namespace)
	kcCheckTopics(ctx, t, adm, names.Messages)
	phase("pushlog running on the cluster; topics have 3 replicas and min.insync.replicas=2")

	led := newKCLedger()
	vapid := snNewVAPID(t)
	var uas []*kcUA
	for i := range kcUAs {
		ua := uaDial(ctx, t, s.WSURL, "")
		sub := ua.subscribe(ctx, "")
		u := &kcUA{idx: i, ua: ua, sub: sub, part: schema.PartitionOf(ua.UAID, kcPartitions), led: led}
		uas = append(uas, u)
	}
	recvCtx, stopRecv := context.WithCancel(ctx)
	var recvWG sync.WaitGroup
	for _, u := range uas {
		recvWG.Add(1)
		go func() { defer recvWG.Done(); u.receive(recvCtx) }()
	}
	defer func() { stopRecv(); recvWG.Wait() }()

	sendCtx, stopSend := context.WithCancel(ctx)
	var sendWG sync.WaitGroup
	for _, u := range uas {
		sendWG.Add(1)
		go func() { defer sendWG.Done(); u.send(sendCtx, vapid) }()
	}
	stopSenders := func() { stopSend(); sendWG.Wait() }
	defer stopSenders()
	kcSleep(ctx, 3*time.Second)
	phase("warm: %s", led.summary())

	// 1. kill -9 the leader of the busiest messages partition.
	busy := kcBusiest(uas)
	leaders := kcLeaders(ctx, t, adm, names.Messages)
	victim := kcVictim(ctx, t, adm, names.Group("connectors"), leaders, busy)
	affected := map[int32]bool{}
	for p, l := range leaders {
		if l == victim {
			affected[p] = true
		}
	}
	kcScript(t, "kill", fmt.Sprint(victim))
	killAt := time.Now() // the script returns once the process is gone
	phase("killed broker %d (-9), leader of partitions %v (busiest: %d)", victim, kcKeys(affected), busy)
	recovered := kcWaitRecovered(ctx, t, adm, names.Messages, victim)
	phase("Kafka recovered %s after the kill: new leaders elected, broker %d out of every ISR",
		recovered.Sub(killAt).Round(10*time.Millisecond), victim)
	resumed, ok := led.firstCreated(affected, killAt, recovered.Add(20*time.Second))
	if !ok {
		t.Fatalf("no 201 on the affected partitions %v within 20s of Kafka's recovery; %s", kcKeys(affected), led.summary())
	}
	lastBefore := led.lastCreatedBefore(affected, killAt)
	gap := resumed.Sub(recovered)
	phase("201s resumed on the affected partitions %s after Kafka's recovery (outage for their senders: %s from the last 201 before the kill)",
		gap.Round(10*time.Millisecond), resumed.Sub(lastBefore).Round(10*time.Millisecond))
	// ingest's own share must be small; 3 s leaves room for a loaded machine.
	if gap > 3*time.Second {
		t.Errorf("201s resumed %s after Kafka's recovery, want about a second", gap)
	}
	kcScript(t, "start", fmt.Sprint(victim))
	kcWaitFullISR(ctx, t, adm, names.Messages)
	phase("broker %d back, every ISR full: %s", victim, led.summary())

	// 2. Stop two brokers: below min.insync.replicas, no new message gets a 201.
	var down []int32
	for _, b := range []int32{1, 2, 3} {
		if b != victim && len(down) < 1 {
			down = append(down, b)
		}
	}
	down = append(down, victim)
	led.setQuorumLost(time.Now())
	for _, b := range down {
		kcScript(t, "stop", fmt.Sprint(b))
	}
	downAt := time.Now()
	phase("stopped brokers %v", down)
	// Pushes in flight at the stop wait up to the produce timeout (5 s);
	// the ones sent after it are answered at once once the breaker opens.
	kcSleep(ctx, 12*time.Second)
	bad, refused, recognised := led.answersSince(downAt, time.Now())
	phase("with one broker left: %d pushes answered 503 with Retry-After, %d retries of pushes written before the stop answered 201, %d other answers",
		refused, recognised, len(bad))
	for _, b := range bad {
		t.Errorf("with two brokers down: %s", b)
	}
	if refused == 0 {
		t.Errorf("no push was answered while two brokers were down")
	}
	restartAt := time.Now()
	kcScript(t, "start")
	upAt := time.Now()
	phase("brokers %v started again (%s)", down, upAt.Sub(restartAt).Round(10*time.Millisecond))
	all := map[int32]bool{0: true, 1: true, 2: true, 3: true}
	back, ok := led.firstCreated(all, upAt, upAt.Add(60*time.Second))
	if !ok {
		t.Fatalf("no 201 within 60s of the brokers' return; %s", led.summary())
	}
	phase("201s again %s after the brokers answered", back.Sub(upAt).Round(10*time.Millisecond))
	kcSleep(ctx, 2*time.Second)
	stopSenders()
	phase("senders stopped: %s", led.summary())

	// Every 201 delivered (TTL 600 s: none expires), nothing twice.
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := led.undelivered()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, v := range led.violations() { // a closed connection explains what follows
				t.Error(v)
			}
			t.Fatalf("%d accepted pushes never delivered, e.g. %v; %s", len(missing), missing[:min(5, len(missing))], led.summary())
		}
		kcSleep(ctx, 250*time.Millisecond)
	}
	phase("every 201 delivered: %s", led.summary())
	for _, v := range led.violations() {
		t.Error(v)
	}
	t.Logf("FIGURES kill -9 leader: Kafka recovery %s, 201s resumed %s after it; two brokers down: %d × 503, 0 × 201; recovery after restart %s; %s",
		recovered.Sub(killAt).Round(10*time.Millisecond), gap.Round(10*time.Millisecond), refused,
		back.Sub(upAt).Round(10*time.Millisecond), led.summary())
}

// kcVictim is the broker to kill: the connectors group's coordinator when
// it leads a messages partition, else the busiest partition's leader. The
// coordinator's death is the harder case: the owner's group session ends
// with it, so the owner loses every partition and must bootstrap them
// again through the group's new coordinator while the dead one is still
// cached by its clients.
func kcVictim(ctx context.Context, t *testing.T, adm *kadm.Client, group string, leaders map[int32]int32, busy int32) int32 {
	t.Helper()
	for _, c := range adm.FindGroupCoordinators(ctx, group) {
		if c.Err != nil {
			t.Logf("find the coordinator of %s: %v; killing the busiest partition's leader", group, c.Err)
			break
		}
		for _, l := range leaders {
			if l == c.NodeID {
				t.Logf("broker %d is the coordinator of %s and leads a messages partition", c.NodeID, group)
				return c.NodeID
			}
		}
		t.Logf("broker %d, the coordinator of %s, leads no messages partition; killing the busiest partition's leader", c.NodeID, group)
	}
	return leaders[busy]
}

// kcCluster returns the 3-broker cluster's bootstrap list, after making
// sure (through its script) that every broker runs. The test command
// starts the cluster and sets KAFKA_CLUSTER_BROKERS; in CI its absence or
// a failed start is a failure, elsewhere a skip.
func kcCluster(t *testing.T) string {
	t.Helper()
	brokers := os.Getenv("KAFKA_CLUSTER_BROKERS")
	if brokers == "" {
		if inCI() {
			t.Fatal("KAFKA_CLUSTER_BROKERS is not set: the test command must start the 3-broker cluster (deploy/kafka/cluster.sh start)")
		}
		t.Skip("KAFKA_CLUSTER_BROKERS not set; run deploy/kafka/cluster.sh start and export what deploy/kafka/cluster.sh env prints")
	}
	kcScript(t, "start")
	return brokers
}

// kcScript runs deploy/kafka/cluster.sh with args; failure fails the test.
func kcScript(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join("..", "deploy", "kafka", "cluster.sh")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func kcAdmin(t *testing.T, brokers string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.MetadataMinAge(50*time.Millisecond),
		kgo.RequestTimeoutOverhead(2*time.Second), kgo.RetryTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

func kcCheckTopics(ctx context.Context, t *testing.T, adm *kadm.Client, topic string) {
	t.Helper()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range td[topic].Partitions {
		if len(p.Replicas) != 3 {
			t.Fatalf("%s/%d has replicas %v, want 3", topic, p.Partition, p.Replicas)
		}
	}
	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rc {
		for _, kv := range r.Configs {
			if kv.Key == "min.insync.replicas" && (kv.Value == nil || *kv.Value != "2") {
				t.Fatalf("%s min.insync.replicas = %v, want 2 (pushlog's default with --replication 3)", topic, kv.Value)
			}
		}
	}
}

// kcLeaders maps each messages partition to its leader broker.
func kcLeaders(ctx context.Context, t *testing.T, adm *kadm.Client, topic string) map[int32]int32 {
	t.Helper()
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int32{}
	for _, p := range td[topic].Partitions {
		out[p.Partition] = p.Leader
	}
	return out
}

// kcWaitRecovered polls metadata until no messages partition is led by
// the dead broker or has it in its ISR: from then on Kafka accepts
// acks=all writes again. That moment is Kafka's share of the outage.
func kcWaitRecovered(ctx context.Context, t *testing.T, adm *kadm.Client, topic string, dead int32) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if td, err := adm.ListTopics(ctx, topic); err == nil && len(td[topic].Partitions) == kcPartitions {
			ok := true
			for _, p := range td[topic].Partitions {
				if p.Leader < 0 || p.Leader == dead || p.Err != nil {
					ok = false
				}
				for _, r := range p.ISR {
					if r == dead {
						ok = false
					}
				}
			}
			if ok {
				return time.Now()
			}
		}
		kcSleep(ctx, 50*time.Millisecond)
	}
	t.Fatalf("Kafka did not move leadership away from broker %d within 60s", dead)
	return time.Time{}
}

func kcWaitFullISR(ctx context.Context, t *testing.T, adm *kadm.Client, topic string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if td, err := adm.ListTopics(ctx, topic); err == nil && len(td[topic].Partitions) == kcPartitions {
			full := true
			for _, p := range td[topic].Partitions {
				full = full && len(p.ISR) == 3 && p.Leader >= 0
			}
			if full {
				return
			}
		}
		kcSleep(ctx, 200*time.Millisecond)
	}
	t.Fatal("ISRs not full within 90s of the broker's restart")
}

func kcBusiest(uas []*kcUA) int32 {
	count := map[int32]int{}
	for _, u := range uas {
		count[u.part]++
	}
	best := int32(-1)
	for p, n := range count {
		if best < 0 || n > count[best] || n == count[best] && p < best {
			best = p
		}
	}
	return best
}

func kcKeys(m map[int32]bool) []int32 {
	var out []int32
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func kcSleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// kcUA is one user agent and its sender.
type kcUA struct {
	idx  int
	ua   *uaClient
	sub  *uaSubscription
	part int32
	led  *kcLedger
}

// receive decrypts and acks every notification at once, recording it.
func (u *kcUA) receive(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.ua.done:
			u.led.violation(fmt.Sprintf("ua %d: connection closed: %v", u.idx, u.ua.readErr()))
			return
		case n := <-u.ua.notes:
			plain, err := n.decrypt(u.sub.Keys)
			if err != nil {
				u.led.violation(fmt.Sprintf("ua %d: decrypt %s: %v", u.idx, n.Version, err))
				continue
			}
			u.led.received(string(plain), n.Version)
			ack := map[string]any{"messageType": "ack", "updates": []map[string]any{{"channelID": n.ChannelID, "version": n.Version, "code": 100}}}
			if err := u.ua.sendJSON(ack); err != nil {
				u.led.violation(fmt.Sprintf("ua %d: ack: %v", u.idx, err))
				return
			}
			u.led.acked(n.Version)
		}
	}
}

// send pushes payloads one after another. Each is encrypted once; a 503
// is retried with exactly the same request (as a sender replaying its
// request would), so a message that was written despite the 503 can be
// recognised by ingest instead of appended twice.
func (u *kcUA) send(ctx context.Context, vapid snVAPID) {
	client := &http.Client{Timeout: 30 * time.Second}
	for seq := 0; ctx.Err() == nil; seq++ {
		payload := fmt.Sprintf("ua%d-%06d", u.idx, seq)
		req, err := kcEncrypt(ctx, u.sub, payload, vapid)
		if err != nil {
			u.led.violation(fmt.Sprintf("encrypt %s: %v", payload, err))
			return
		}
		for ctx.Err() == nil {
			start := time.Now()
			status, retryAfter, err := req.post(ctx, client)
			end := time.Now()
			if ctx.Err() != nil {
				return
			}
			u.led.answer(kcAnswer{payload: payload, part: u.part, start: start, end: end, status: status, retryAfter: retryAfter, err: err})
			if status == http.StatusCreated {
				break
			}
			kcSleep(ctx, 100*time.Millisecond)
		}
	}
}

// kcRequest is one encrypted push, replayable byte for byte.
type kcRequest struct {
	url    string
	header http.Header
	body   []byte
}

func (r *kcRequest) post(ctx context.Context, client *http.Client) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(r.body))
	if err != nil {
		return 0, "", err
	}
	req.Header = r.header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After"), nil
}

// kcEncrypt has webpush-go build (encrypt and sign) a push without sending
// it: its transport keeps the request and answers 201 itself.
func kcEncrypt(ctx context.Context, sub *uaSubscription, payload string, vapid snVAPID) (*kcRequest, error) {
	var s webpushgo.Subscription
	if err := json.Unmarshal(sub.json(), &s); err != nil {
		return nil, err
	}
	keep := &kcKeep{}
	resp, err := webpushgo.SendNotificationWithContext(ctx, []byte(payload), &s, &webpushgo.Options{
		HTTPClient:      &http.Client{Transport: keep},
		Subscriber:      "integration@pushlog.example",
		VAPIDPublicKey:  vapid.Public,
		VAPIDPrivateKey: vapid.Private,
		TTL:             600,
	})
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return keep.req, nil
}

type kcKeep struct{ req *kcRequest }

func (k *kcKeep) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	k.req = &kcRequest{url: req.URL.String(), header: req.Header.Clone(), body: body}
	return &http.Response{StatusCode: http.StatusCreated, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req}, nil
}

// kcAnswer is one attempt's outcome.
type kcAnswer struct {
	payload    string
	part       int32
	start, end time.Time
	status     int
	retryAfter string
	err        error
}

// kcLedger is what every sender was told and every user agent received.
type kcLedger struct {
	mu       sync.Mutex
	answers  []kcAnswer
	created  map[string]bool            // payloads answered 201
	versions map[string]map[string]bool // payload -> versions received
	times    map[string]int             // version -> receptions
	ackedV   map[string]time.Time       // version -> when the user agent acked it
	comeback []time.Duration            // acked versions delivered again: time since the ack
	// strict are the acked versions delivered again whose ack was made
	// before quorumLost: one broker down must not cost an ack.
	strict     []time.Duration
	quorumLost time.Time
	errs       []string
}

func newKCLedger() *kcLedger {
	return &kcLedger{created: map[string]bool{}, versions: map[string]map[string]bool{}, times: map[string]int{}, ackedV: map[string]time.Time{}}
}

func (l *kcLedger) answer(a kcAnswer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers = append(l.answers, a)
	if a.status == http.StatusCreated {
		l.created[a.payload] = true
	}
}

func (l *kcLedger) received(payload, version string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.versions[payload] == nil {
		l.versions[payload] = map[string]bool{}
	}
	l.versions[payload][version] = true
	l.times[version]++
	if at, ok := l.ackedV[version]; ok {
		l.comeback = append(l.comeback, time.Since(at))
		if l.quorumLost.IsZero() || at.Before(l.quorumLost) {
			l.strict = append(l.strict, time.Since(at))
		}
	}
}

func (l *kcLedger) acked(version string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ackedV[version] = time.Now()
}

func (l *kcLedger) setQuorumLost(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.quorumLost = at
}

func (l *kcLedger) violation(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, s)
}

// firstCreated waits until a push to one of parts, sent after from, is
// answered 201; it returns when that answer came. (A push sent before a
// broker died may be answered 201 just after: that is not a recovery.)
func (l *kcLedger) firstCreated(parts map[int32]bool, from, until time.Time) (time.Time, bool) {
	for time.Now().Before(until) {
		l.mu.Lock()
		var first time.Time
		for _, a := range l.answers {
			if a.status == http.StatusCreated && parts[a.part] && a.start.After(from) && (first.IsZero() || a.end.Before(first)) {
				first = a.end
			}
		}
		l.mu.Unlock()
		if !first.IsZero() {
			return first, true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Time{}, false
}

func (l *kcLedger) lastCreatedBefore(parts map[int32]bool, t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	for _, a := range l.answers {
		if a.status == http.StatusCreated && parts[a.part] && a.end.Before(t) && a.end.After(last) {
			last = a.end
		}
	}
	return last
}

// answersSince checks the answers to pushes sent in [from, to]: each must
// be 503 with Retry-After, or 201 for the retry of a push first sent
// before from; it returns the others, the 503 count and the 201 count.
func (l *kcLedger) answersSince(from, to time.Time) (bad []string, refused, recognised int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A push first sent before the stop may have been written before the
	// quorum went, although its sender got a 503 (the append outlived the
	// request); ingest then answers its retry 201 with the original's
	// Location. That is no new message accepted without the quorum (and
	// the check for payloads delivered twice still holds it).
	before := map[string]bool{}
	for _, a := range l.answers {
		if a.start.Before(from) {
			before[a.payload] = true
		}
	}
	for _, a := range l.answers {
		if a.start.Before(from) || a.start.After(to) {
			continue
		}
		switch {
		case a.status == http.StatusServiceUnavailable && a.retryAfter != "":
			refused++
		case a.status == http.StatusCreated && before[a.payload]:
			recognised++
		default:
			bad = append(bad, fmt.Sprintf("push %s sent %s after the stop: status %d, Retry-After %q, err %v",
				a.payload, a.start.Sub(from).Round(time.Millisecond), a.status, a.retryAfter, a.err))
		}
	}
	return bad, refused, recognised
}

func (l *kcLedger) undelivered() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p := range l.created {
		if len(l.versions[p]) == 0 {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// violations: a payload delivered as two messages (a retry appended
// twice), an acked message delivered again, a status other than 201/503,
// a connection error, a broken user agent.
func (l *kcLedger) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string(nil), l.errs...)
	for p, vs := range l.versions {
		if len(vs) > 1 {
			out = append(out, fmt.Sprintf("payload %s delivered as %d messages: a retried push was appended again", p, len(vs)))
		}
	}
	// While two brokers are down Kafka refuses every write, acks
	// included: a message acked then comes again once the owner rereads
	// the log (at least once, as the protocol allows). With one broker
	// down nothing acked may come back.
	for _, d := range l.strict {
		out = append(out, fmt.Sprintf("a message acked %s earlier, before two brokers stopped, was delivered again", d.Round(time.Millisecond)))
	}
	for _, a := range l.answers {
		if a.err != nil || a.status != http.StatusCreated && a.status != http.StatusServiceUnavailable {
			out = append(out, fmt.Sprintf("push %s: status %d, err %v", a.payload, a.status, a.err))
		} else if a.status == http.StatusServiceUnavailable && a.retryAfter == "" {
			out = append(out, fmt.Sprintf("push %s: 503 without Retry-After", a.payload))
		}
	}
	return out
}

func (l *kcLedger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n503, delivered, written503 := 0, 0, 0
	for _, a := range l.answers {
		if a.status == http.StatusServiceUnavailable {
			n503++
		}
	}
	for p, vs := range l.versions {
		if len(vs) > 0 {
			delivered++
			if !l.created[p] {
				written503++
			}
		}
	}
	return fmt.Sprintf("%d × 201, %d × 503, %d delivered (%d of them never answered 201), %d acked, %d acked delivered again %v (%d acked before two brokers stopped)",
		len(l.created), n503, delivered, written503, len(l.ackedV), len(l.comeback), kcRound(l.comeback), len(l.strict))
}
