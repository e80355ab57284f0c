package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// snCrashPushes is how many messages are accepted before the crash: the
// default per-UAID pending bound, so none may be dropped for space.
const snCrashPushes = 200

// TestSingleNodeCrashKafka: on real Kafka, every message accepted (201)
// survives kill -9; after another kill -9 the acked ones never come again
// and the unacked ones do, as the same versions.
//
// A node killed with -9 never leaves the connector group: its restarted
// self gets the partitions only when the broker expires the dead member,
// after the group session timeout (default 45 s; until then hellos with a
// uaid are told to try again). A 6 s timeout (the broker's minimum) keeps
// this test short.
func TestSingleNodeCrashKafka(t *testing.T) {
	snCrashSafety(t, serverOpts{Env: []string{"PUSHLOG_GROUP_SESSION_TIMEOUT=6s", "PUSHLOG_GROUP_HEARTBEAT=1s"}})
}

// TestSingleNodeCrashEmbedded: the same on the embedded broker (the
// default `pushlog serve`), restarted on the same data directory.
func TestSingleNodeCrashEmbedded(t *testing.T) {
	snCrashSafety(t, serverOpts{Embedded: true})
}

func snCrashSafety(t *testing.T, opts serverOpts) {
	ctx := testContext(t, 6*time.Minute)
	began := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }
	s := startServer(t, opts)
	phase("started")
	vapid := snNewVAPID(t)
	uaid, sub := snOffline(ctx, t, s, "")
	phase("subscribed, offline")

	all := snSendMany(ctx, t, sub, snCrashPushes, vapid)
	phase(fmt.Sprintf("%d pushes accepted; kill -9", snCrashPushes))
	s.kill9()
	s.restart()
	phase("restarted")
	ua := uaRedial(ctx, t, s.WSURL, uaid)
	phase("reconnected")
	first := snReceiveAll(ctx, t, ua, sub, all)
	phase("every accepted message arrived")

	// Ack half. Once their Acked events are in the log a crash must not
	// bring them back (an ack lost in a crash is a legitimate redelivery).
	acked, unacked := map[string]bool{}, map[string]bool{}
	for i := range snCrashPushes {
		text := snCrashText(i)
		if i%2 == 0 {
			acked[text] = true
			ua.ack(first[text])
		} else {
			unacked[text] = true
		}
	}
	ua.sync(ctx) // every ack handled
	snWaitAcked(ctx, t, s, uaid, sub.ChannelID, len(acked))
	phase(fmt.Sprintf("%d acked, durably; kill -9", len(acked)))
	ua.close()
	s.kill9()
	s.restart()
	phase("restarted")

	ua = uaRedial(ctx, t, s.WSURL, uaid)
	phase("reconnected")
	again := snReceiveAll(ctx, t, ua, sub, unacked) // fails on any acked one
	for text, n := range again {
		if n.Version != first[text].Version {
			t.Fatalf("%q redelivered as version %q, first delivered as %q", text, n.Version, first[text].Version)
		}
		ua.ack(n)
	}
	ua.ack(snMarker(ctx, t, ua, sub, vapid)) // nothing after the unacked ones
	ua.sync(ctx)
	phase(fmt.Sprintf("exactly the %d unacked ones came again; all acked", len(unacked)))
	ua.close()

	ua = uaRedial(ctx, t, s.WSURL, uaid)
	ua.ack(snMarker(ctx, t, ua, sub, vapid)) // none of the acked ones
	ua.sync(ctx)
	ua.close()
	s.terminate()
	s.restart()
	ua = uaRedial(ctx, t, s.WSURL, uaid)
	snMarker(ctx, t, ua, sub, vapid)
	phase("none came back after a reconnect and a restart")
}

// snSendMany accepts n distinct messages for sub with webpush-go from a few
// concurrent senders; every one must get 201. It returns the plaintexts.
func snSendMany(ctx context.Context, t *testing.T, sub *uaSubscription, n int, vapid snVAPID) map[string]bool {
	t.Helper()
	const senders = 8
	jobs := make(chan string)
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for text := range jobs {
				res, err := snTrySend(ctx, sub, []byte(text), snPush{TTL: 3600, VAPID: vapid})
				if err == nil && res.Status != http.StatusCreated {
					err = fmt.Errorf("%s", res)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s: %v", text, err))
					mu.Unlock()
				}
			}
		}()
	}
	want := make(map[string]bool, n)
	for i := range n {
		text := snCrashText(i)
		want[text] = true
		jobs <- text
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d pushes not accepted, e.g. %s", len(errs), n, errs[0])
	}
	return want
}

func snCrashText(i int) string { return fmt.Sprintf("crash-%03d", i) }

// snReceiveAll reads notifications until every message in want arrived
// once (a duplicate fails), without acking.
func snReceiveAll(ctx context.Context, t *testing.T, ua *uaClient, sub *uaSubscription, want map[string]bool) map[string]uaMessage {
	t.Helper()
	got := make(map[string]uaMessage, len(want))
	for len(got) < len(want) {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, plain := ua.nextFor(rctx, sub)
		cancel()
		text := string(plain)
		if !want[text] {
			t.Fatalf("received %q, which was not expected now (never sent, or acked)", text)
		}
		if prev, dup := got[text]; dup {
			t.Fatalf("%q delivered twice on one connection (versions %q, %q)", text, prev.Version, n.Version)
		}
		got[text] = n
	}
	return got
}

// snBrokers is the Kafka address the server uses (real or embedded).
func snBrokers(s *server) []string {
	var real, embedded string
	for _, kv := range s.env {
		if v, ok := strings.CutPrefix(kv, "KAFKA_BROKERS="); ok {
			real = v
		}
		if v, ok := strings.CutPrefix(kv, "PUSHLOG_EMBEDDED_KAFKA_ADDR="); ok {
			embedded = v
		}
	}
	if real != "" {
		return strings.Split(real, ",")
	}
	return []string{embedded}
}

// snWaitAcked waits until the acks topic holds Acked events for n distinct
// messages of the channel.
func snWaitAcked(ctx context.Context, t *testing.T, s *server, uaid, channelID string, n int) {
	t.Helper()
	names, err := schema.NamesFor(s.opts.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(snBrokers(s)...),
		kgo.ConsumeTopics(names.Acks),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	acked := map[[2]int64]bool{}
	for len(acked) < n {
		fetches := cl.PollFetches(wctx)
		if wctx.Err() != nil {
			t.Fatalf("%d of %d acks in %s: %v", len(acked), n, names.Acks, wctx.Err())
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.Logf("fetch %s/%d: %v", topic, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Key) != uaid {
				return
			}
			ev, err := schema.Decode(r)
			if err != nil {
				return
			}
			if a := ev.GetAcked(); a != nil && a.GetMsg().GetChannelId() == channelID {
				acked[[2]int64{int64(a.GetMsg().GetPartition()), a.GetMsg().GetOffset()}] = true
			}
		})
	}
}
