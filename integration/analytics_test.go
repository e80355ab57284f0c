package integration

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/analytics"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// analyticsTestPartitions is used only when the pushlog topics do not exist
// yet; it matches the partition count the other integration tests start
// pushlog with (PUSHLOG_PARTITIONS=4), since topic names are shared.
const analyticsTestPartitions = 4

// analyticsClickHouseAddr returns the real ClickHouse the test command
// started; outside CI a developer without one gets a skip.
func analyticsClickHouseAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("CLICKHOUSE_ADDR")
	if addr == "" {
		if inCI() {
			t.Fatal("CLICKHOUSE_ADDR is not set: the test command must start real ClickHouse (deploy/clickhouse/clickhouse.sh start)")
		}
		t.Skip("CLICKHOUSE_ADDR not set; run deploy/clickhouse/clickhouse.sh start and set CLICKHOUSE_ADDR=127.0.0.1:19000")
	}
	return addr
}

func analyticsRandom(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// analyticsEnv is one test's slice of the shared servers: a fresh database
// and fresh consumer groups; its events are told apart by fresh UAIDs.
type analyticsEnv struct {
	t       testing.TB
	brokers []string
	chAddr  string
	db      string
	conn    driver.Conn
	prod    *kgo.Client
	start   time.Time
	// partitions is the partition count of every pushlog topic.
	partitions int32
}

func analyticsNewEnv(t testing.TB) *analyticsEnv {
	t.Helper()
	brokers := strings.Split(kafkaBrokers(t), ",")
	chAddr := analyticsClickHouseAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := &analyticsEnv{t: t, brokers: brokers, chAddr: chAddr, db: "it_" + analyticsRandom(6),
		start: time.Now().Add(-time.Second)}
	conn, err := analytics.Open(ctx, chAddr, e.db)
	if err != nil {
		t.Fatalf("clickhouse: %v", err)
	}
	e.conn = conn
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.conn.Exec(ctx, "DROP DATABASE IF EXISTS "+e.db); err != nil {
			t.Logf("drop %s: %v", e.db, err)
		}
		_ = e.conn.Close()
	})
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	e.prod = prod
	e.partitions = analyticsEnsureTopics(t, ctx, prod)
	return e
}

// analyticsEnsureTopics creates missing pushlog topics with the partition
// count the existing ones have, and returns that count.
func analyticsEnsureTopics(t testing.TB, ctx context.Context, cl *kgo.Client) int32 {
	t.Helper()
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	partitions := int32(analyticsTestPartitions)
	for _, d := range details {
		if strings.HasPrefix(d.Topic, "pushlog.") && d.Err == nil && len(d.Partitions) > 0 {
			partitions = int32(len(d.Partitions))
			break
		}
	}
	// schema.EnsureTopics reports TOPIC_ALREADY_EXISTS when a topic created
	// a moment ago is not in the metadata yet (kadm.CreateTopic returns the
	// response error as its error); asking again settles it.
	for attempt := 1; ; attempt++ {
		err := schema.EnsureTopics(ctx, adm, schema.Topics(30*24*time.Hour), partitions, 1)
		if err == nil {
			return partitions // EnsureTopics refuses topics with another count
		}
		if !errors.Is(err, kerr.TopicAlreadyExists) || attempt == 20 {
			t.Fatalf("ensure topics: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// produce writes events durably and returns the largest offset per topic
// partition it wrote.
func (e *analyticsEnv) produce(events []*pb.Event) map[string]map[int32]int64 {
	e.t.Helper()
	recs := make([]*kgo.Record, len(events))
	for i, ev := range events {
		r, err := schema.Record(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		recs[i] = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := e.prod.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
	out := map[string]map[int32]int64{}
	for _, r := range res {
		if out[r.Record.Topic] == nil {
			out[r.Record.Topic] = map[int32]int64{}
		}
		if cur, ok := out[r.Record.Topic][r.Record.Partition]; !ok || r.Record.Offset > cur {
			out[r.Record.Topic][r.Record.Partition] = r.Record.Offset
		}
	}
	return out
}

func analyticsMergeOffsets(a, b map[string]map[int32]int64) map[string]map[int32]int64 {
	out := map[string]map[int32]int64{}
	for _, m := range []map[string]map[int32]int64{a, b} {
		for topic, ps := range m {
			if out[topic] == nil {
				out[topic] = map[int32]int64{}
			}
			for p, off := range ps {
				out[topic][p] = max(out[topic][p], off)
			}
		}
	}
	return out
}

// analyticsRun is one projector running in the background.
type analyticsRun struct {
	p      *analytics.Projector
	cancel context.CancelFunc
	done   chan error
}

// startProjector starts a projector; opts are added to its Kafka client's
// options (a client id, say).
func (e *analyticsEnv) startProjector(conn driver.Conn, group string, batchRows int, interval time.Duration, opts ...kgo.Opt) *analyticsRun {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: analyticsLogLevel()}))
	}
	p, err := analytics.NewProjector(analytics.ProjectorConfig{
		ClientOpts:    append([]kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...),
		Conn:          conn,
		Database:      e.db,
		Group:         group,
		BatchRows:     batchRows,
		BatchInterval: interval,
		RetryMax:      500 * time.Millisecond,
		StartAfter:    e.start,
		Logger:        log,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &analyticsRun{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels the projector and waits for Run to return.
func (r *analyticsRun) stop(t testing.TB) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("projector: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("projector did not stop")
	}
	r.done = nil
}

// waitProjected waits until the database's progress covers every offset in
// want: everything produced so far is stored (or known to have no row).
func (e *analyticsEnv) waitProjected(want map[string]map[int32]int64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if done, err := e.projected(want); err == nil && done {
			return
		} else if err != nil {
			lastErr = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("projection did not reach %v within %v (last error: %v)", want, timeout, lastErr)
}

func (e *analyticsEnv) projected(want map[string]map[int32]int64) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for topic, ps := range want {
		parts := make([]int32, 0, len(ps))
		for p := range ps {
			parts = append(parts, p)
		}
		got, err := analytics.Progress(ctx, e.conn, e.db, topic, parts)
		if err != nil {
			return false, err
		}
		for p, off := range ps {
			if g, ok := got[p]; !ok || g < off {
				return false, nil
			}
		}
	}
	return true, nil
}

// counts returns, per raw table, the rows of the given UAIDs.
func (e *analyticsEnv) counts(uaids []string) map[string]uint64 {
	e.t.Helper()
	out := map[string]uint64{}
	for _, tb := range analytics.Tables() {
		out[tb.Name] = e.scalar(fmt.Sprintf("SELECT count() FROM %s.%s WHERE uaid IN (%s)", e.db, tb.Name, analyticsInList(uaids)))
	}
	return out
}

func (e *analyticsEnv) scalar(query string) uint64 {
	e.t.Helper()
	var err error
	// A pooled connection may still be from before a ClickHouse restart:
	// the first use fails and drops it.
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var n uint64
		err = e.conn.QueryRow(ctx, "SELECT toUInt64(("+query+"))").Scan(&n)
		cancel()
		if err == nil {
			return n
		}
	}
	e.t.Fatalf("%s: %v", query, err)
	return 0
}

func analyticsInList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = analytics.QuoteString(s)
	}
	return strings.Join(q, ", ")
}

// analyticsMix is a known mix of events of fresh UAIDs, one sender and one
// node, with what ClickHouse must hold for them.
type analyticsMix struct {
	sender, node string
	uaids        []string
	events       []*pb.Event
	rows         map[string]uint64 // per table
}

// analyticsNewMix builds, at base (start of a minute, inside the report
// window):
//   - u0: 11 messages of 100 bytes, delivered (one twice) and acked after
//     10, 20, ... 110 ms;
//   - u1: 3 messages of 200 bytes: one delivered and nacked, all 3 expired
//     after their 60 s TTL;
//   - u2: 2 empty messages dropped by a user reset after 500 ms;
//   - u3: 3 messages of 50 bytes: dropped for the pending limit (after
//     1 s), deleted by the sender (after 2 s), replaced by topic (after 3 s);
//   - 2 channels registered per UAID, one unregistered (u3), one reset (u2);
//   - every UAID connects to node; u0 and u1 disconnect after 1 s and 3 s.
func analyticsNewMix(base time.Time) *analyticsMix {
	m := &analyticsMix{
		sender: "mailto:it-" + analyticsRandom(4) + "@example.com",
		node:   "it-node-" + analyticsRandom(4),
	}
	for range 4 {
		m.uaids = append(m.uaids, schema.NewUAID())
	}
	ms := base.UnixMilli()
	ev := func(uaid string, at int64) *pb.Event {
		e := schema.NewEvent(uaid, time.UnixMilli(at))
		m.events = append(m.events, e)
		return e
	}
	chans := map[string][]string{}
	for i, u := range m.uaids {
		for c := range 2 {
			ch := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, c)
			chans[u] = append(chans[u], ch)
			ev(u, ms).Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch}}
		}
		ev(u, ms).Body = &pb.Event_Connected{Connected: &pb.Connected{Node: m.node, ConnId: "c" + strconv.Itoa(i), SinceMs: ms, UserAgent: "it"}}
	}
	offset := int64(0)
	accept := func(u string, size int, topic string, at int64) *pb.MessageRef {
		ch := chans[u][0]
		ev(u, at).Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{
			ChannelId: ch, Payload: make([]byte, size), Encoding: "aes128gcm", TtlS: 60, Topic: topic,
			Urgency: pb.Urgency_URGENCY_HIGH, VapidSub: m.sender, VapidKeyHash: []byte{1, 2, 3},
		}}
		offset++
		return &pb.MessageRef{Partition: 0, Offset: offset, ChannelId: ch, AcceptedMs: at, VapidSub: m.sender}
	}
	u0, u1, u2, u3 := m.uaids[0], m.uaids[1], m.uaids[2], m.uaids[3]
	for i := range 11 {
		at := ms + int64(i)*100
		ref := accept(u0, 100, "", at)
		ev(u0, at+5).Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: m.node, ConnId: "c0", Attempt: 1}}
		if i == 0 {
			ev(u0, at+6).Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: m.node, ConnId: "c0", Attempt: 2}}
		}
		ev(u0, at+int64(i+1)*10).Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}
	}
	for i := range 3 {
		at := ms + 1200 + int64(i)*10
		ref := accept(u1, 200, "", at)
		if i == 0 {
			ev(u1, at+5).Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: m.node, ConnId: "c1", Attempt: 1}}
			ev(u1, at+7).Body = &pb.Event_Nacked{Nacked: &pb.Nacked{Msg: ref, Code: 302}}
		}
		ev(u1, at+60_000).Body = &pb.Event_Expired{Expired: &pb.Expired{Msg: ref}}
	}
	for i := range 2 {
		at := ms + 1300 + int64(i)
		ref := accept(u2, 0, "", at)
		ev(u2, at+500).Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_USER_RESET}}
	}
	ev(u2, ms+1900).Body = &pb.Event_UserReset{UserReset: &pb.UserReset{Reason: "test"}}
	at := ms + 1400
	ref := accept(u3, 50, "", at)
	ev(u3, at+1000).Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_PENDING_LIMIT}}
	ref = accept(u3, 50, "", at+1)
	ev(u3, at+2001).Body = &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: ref}}
	ev(u3, at+2001).Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_DELETED}}
	ref = accept(u3, 50, "news", at+2)
	ev(u3, at+3002).Body = &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_TOPIC_REPLACED}}
	ev(u3, ms+2000).Body = &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: chans[u3][1], Code: 200}}
	ev(u0, ms+4000).Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{Node: m.node, ConnId: "c0", DurationMs: 1000}}
	ev(u1, ms+4000).Body = &pb.Event_Disconnected{Disconnected: &pb.Disconnected{Node: m.node, ConnId: "c1", DurationMs: 3000}}

	m.rows = map[string]uint64{
		analytics.TableAccepted: 19, analytics.TableDeleted: 1, analytics.TableDelivered: 13,
		analytics.TableAcked: 11, analytics.TableNacked: 1, analytics.TableExpired: 3,
		analytics.TableDropped: 5, analytics.TableRegistrations: 10, analytics.TableConnections: 6,
	}
	return m
}

// analyticsBase is the start of a minute well inside a 1 h report window,
// so the per-minute numbers of a mix do not depend on the clock.
func analyticsBase() time.Time { return time.Now().Truncate(time.Minute).Add(-10 * time.Minute) }

// half splits the events of a mix into two parts.
func (m *analyticsMix) half() ([]*pb.Event, []*pb.Event) {
	n := len(m.events) / 2
	return m.events[:n], m.events[n:]
}

func (e *analyticsEnv) checkRows(m *analyticsMix) {
	e.t.Helper()
	got := e.counts(m.uaids)
	for table, want := range m.rows {
		if got[table] != want {
			e.t.Errorf("%s: %d rows, want %d", table, got[table], want)
		}
	}
}

func TestAnalyticsMigrations(t *testing.T) {
	e := analyticsNewEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// From nothing: the database does not exist yet.
	if n := e.scalar("SELECT count() FROM system.databases WHERE name = " + analytics.QuoteString(e.db)); n != 0 {
		t.Fatalf("database %s exists before the first migration", e.db)
	}
	migs, err := analytics.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		applied, err := analytics.AppliedMigrations(ctx, e.conn, e.db)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != len(migs) {
			t.Fatalf("%s: applied %v, want %d migrations", when, applied, len(migs))
		}
		rows := e.scalar(fmt.Sprintf("SELECT count() FROM %s.%s", e.db, analytics.MigrationsTable))
		if rows != uint64(len(migs)) {
			t.Fatalf("%s: %d migration records, want %d (each applied once)", when, rows, len(migs))
		}
		for _, tb := range analytics.Tables() {
			cols := analyticsDescribe(t, e, tb.Name)
			want, _ := analytics.InsertColumns(tb.Name)
			if !slices.Equal(cols, want) {
				t.Fatalf("%s: %s has columns %v, want %v", when, tb.Name, cols, want)
			}
		}
	}
	for i := range 2 {
		if err := analytics.Migrate(ctx, e.conn, e.db); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
		check(fmt.Sprintf("after run %d", i+1))
	}
	// A run that stopped after the DDL but before its record: the next run
	// completes it without error.
	if err := e.conn.Exec(ctx, fmt.Sprintf("TRUNCATE TABLE %s.%s", e.db, analytics.MigrationsTable)); err != nil {
		t.Fatal(err)
	}
	if err := analytics.Migrate(ctx, e.conn, e.db); err != nil {
		t.Fatalf("migrate after lost records: %v", err)
	}
	check("after lost records")
	if err := analytics.Migrate(ctx, e.conn, "bad-name"); !errors.Is(err, analytics.ErrBadDatabase) {
		t.Fatalf("bad database name: %v", err)
	}
}

func analyticsDescribe(t testing.TB, e *analyticsEnv, table string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := e.conn.Query(ctx, fmt.Sprintf("SELECT name FROM system.columns WHERE database = %s AND table = %s",
		analytics.QuoteString(e.db), analytics.QuoteString(table)))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestAnalyticsProjection: a known mix gives exactly the expected rows and
// report numbers, and replaying the topics into the same database (progress
// lost, a new group) adds nothing.
func TestAnalyticsProjection(t *testing.T) {
	e := analyticsNewEnv(t)
	m := analyticsNewMix(analyticsBase())
	run := e.startProjector(e.conn, "it-analytics-"+analyticsRandom(4), 7, 100*time.Millisecond) // small batches: many flushes
	produced := e.produce(m.events)
	e.waitProjected(produced, 90*time.Second)
	e.checkRows(m)

	in := analyticsInList(m.uaids)
	sums := map[string]uint64{
		fmt.Sprintf("SELECT sum(payload_bytes) FROM %s.accepted WHERE uaid IN (%s)", e.db, in):                                      1850,
		fmt.Sprintf("SELECT sum(has_topic) FROM %s.accepted WHERE uaid IN (%s)", e.db, in):                                          1,
		fmt.Sprintf("SELECT countIf(urgency = 'high' AND vapid_key_hash = '010203') FROM %s.accepted WHERE uaid IN (%s)", e.db, in): 19,
		fmt.Sprintf("SELECT sum(latency_ms) FROM %s.acked WHERE uaid IN (%s)", e.db, in):                                            660,
		fmt.Sprintf("SELECT countIf(attempt = 2) FROM %s.delivered WHERE uaid IN (%s)", e.db, in):                                   1,
		fmt.Sprintf("SELECT countIf(action = 'registered') FROM %s.registrations WHERE uaid IN (%s)", e.db, in):                     8,
		fmt.Sprintf("SELECT countIf(action = 'reset') FROM %s.registrations WHERE uaid IN (%s)", e.db, in):                          1,
		fmt.Sprintf("SELECT countIf(reason = 'user_reset') FROM %s.dropped WHERE uaid IN (%s)", e.db, in):                           2,
		fmt.Sprintf("SELECT sum(duration_ms) FROM %s.connections WHERE uaid IN (%s)", e.db, in):                                     4000,
		fmt.Sprintf("SELECT uniqExact(kafka_partition, kafka_offset) - count() FROM %s.acked WHERE uaid IN (%s)", e.db, in):         0,
	}
	for q, want := range sums {
		if got := e.scalar(q); got != want {
			t.Errorf("%s = %d, want %d", q, got, want)
		}
	}
	analyticsCheckReport(t, e, m)

	// Replay: forget the progress and let a new group read everything
	// again. Every record is at or below a stored offset, so nothing is
	// added.
	run.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.conn.Exec(ctx, fmt.Sprintf("TRUNCATE TABLE %s.%s", e.db, analytics.ProgressTable)); err != nil {
		t.Fatal(err)
	}
	replay := e.startProjector(e.conn, "it-analytics-replay-"+analyticsRandom(4), 1000, 100*time.Millisecond)
	e.waitProjected(produced, 90*time.Second)
	e.checkRows(m)
	if st := replay.p.Stats(); st.Skipped < int64(len(m.events)) {
		t.Errorf("replay skipped %d records, want at least the %d of the mix (stats %+v)", st.Skipped, len(m.events), st)
	}
}

// analyticsCheckReport checks the dashboard numbers of the mix's sender and node.
func analyticsCheckReport(t *testing.T, e *analyticsEnv, m *analyticsMix) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := analytics.ReportOptions{Since: time.Hour, Sender: m.sender, Node: m.node}
	want := map[string][][]string{
		"delivery_rate":    {{m.sender, "19", "12", "1", "11", "1", "3", "5", "1", "57.9"}},
		"ack_latency":      {{m.sender, "11", "60", "105", "109", "60", "110"}},
		"volume_by_sender": {{m.sender, "19", "1850", "97.4", "19", "1"}},
		"expiry_and_drops": {
			{m.sender, "expired", "-", "3", "60000"},
			{m.sender, "dropped", "user_reset", "2", "500"},
			{m.sender, "dropped", "deleted", "1", "2000"},
			{m.sender, "dropped", "pending_limit", "1", "1000"},
			{m.sender, "dropped", "topic_replaced", "1", "3000"},
		},
		"connections": {{m.node, "4", "2", "4", "2", "2.9"}},
	}
	for name, rows := range want {
		q, err := analytics.LookupQuery(name)
		if err != nil {
			t.Fatal(err)
		}
		res, err := analytics.RunQuery(ctx, e.conn, e.db, q, opts)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]string
		for _, r := range res.Rows {
			if r[0] != "(all)" {
				got = append(got, r)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(rows) {
			t.Errorf("%s (columns %v):\n got %v\nwant %v", name, res.Columns, got, rows)
		}
	}
	var sb strings.Builder
	if err := analytics.ReportWith(ctx, e.conn, e.db, opts, &sb); err != nil {
		t.Fatalf("report: %v", err)
	}
	for _, s := range []string{"== Delivery rate by sender (last 1h0m0s) ==", m.sender, m.node, "acked_pct", "p99_ms"} {
		if !strings.Contains(sb.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, sb.String())
		}
	}
	if err := analytics.Report(ctx, e.conn, e.db, time.Hour, io.Discard); err != nil {
		t.Fatalf("unfiltered report: %v", err)
	}
	if testing.Verbose() {
		t.Logf("report:\n%s", sb.String())
	}
}

// analyticsScript runs deploy/clickhouse/clickhouse.sh with the test's
// environment (ports and state directory as the test command set them).
func analyticsScript(t testing.TB, arg string) error {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "deploy", "clickhouse", "clickhouse.sh")
	cmd := exec.Command("bash", script, arg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("clickhouse.sh %s: %v\n%s", arg, err, out)
	}
	return nil
}

// TestAnalyticsClickHouseOutage stops ClickHouse mid-stream and starts it
// again: the projector pauses, catches up, and the counts are exact.
func TestAnalyticsClickHouseOutage(t *testing.T) {
	e := analyticsNewEnv(t)
	if err := analyticsScript(t, "status"); err != nil {
		msg := fmt.Sprintf("ClickHouse at %s is not run by deploy/clickhouse/clickhouse.sh, so it cannot be stopped: %v", e.chAddr, err)
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if err := analyticsScript(t, "start"); err != nil {
			t.Errorf("restart ClickHouse: %v", err)
		}
	})
	m := analyticsNewMix(analyticsBase())
	first, second := m.half()
	run := e.startProjector(e.conn, "it-analytics-"+analyticsRandom(4), 5, 100*time.Millisecond)
	produced := e.produce(first)
	e.waitProjected(produced, 90*time.Second)

	if err := analyticsScript(t, "stop"); err != nil {
		t.Fatal(err)
	}
	failuresBefore := run.p.Stats().Failures
	produced = analyticsMergeOffsets(produced, e.produce(second))
	// The projector must notice the outage (it retries, it does not skip).
	deadline := time.Now().Add(60 * time.Second)
	for run.p.Stats().Failures == failuresBefore {
		if time.Now().After(deadline) {
			t.Fatal("the projector never saw ClickHouse down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := analyticsScript(t, "start"); err != nil {
		t.Fatal(err)
	}
	e.waitProjected(produced, 120*time.Second)
	e.checkRows(m)
	run.stop(t)
}

// analyticsFailingConn makes inserts into one table (or the progress table)
// fail while armed: a crash between the inserts of one batch. While it
// watches partitions (watch), it records every row or progress mark of
// them that its projector tries to write.
type analyticsFailingConn struct {
	driver.Conn
	table    string
	armed    atomic.Bool
	failures atomic.Int64

	mu         sync.Mutex
	watched    map[analyticsTP]bool
	violations []string
}

// analyticsTP is a topic partition.
type analyticsTP struct {
	topic     string
	partition int32
}

func (c *analyticsFailingConn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	if c.armed.Load() && strings.Contains(query, "."+c.table+" (") {
		c.failures.Add(1)
		return nil, errors.New("injected failure")
	}
	b, err := c.Conn.PrepareBatch(ctx, query, opts...)
	if err != nil {
		return nil, err
	}
	return &analyticsWatchedBatch{Batch: b, conn: c, table: analyticsInsertTable(query)}, nil
}

// watch starts (or, with nil, stops) recording writes to tps.
func (c *analyticsFailingConn) watch(tps map[analyticsTP]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watched = tps
}

func (c *analyticsFailingConn) recordedViolations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.violations)
}

func (c *analyticsFailingConn) check(table string, tp analyticsTP, offset int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watched[tp] && len(c.violations) < 20 {
		c.violations = append(c.violations, fmt.Sprintf("%s: %s/%d offset %d", table, tp.topic, tp.partition, offset))
	}
}

// analyticsInsertTable is the table of "INSERT INTO db.table (cols)".
func analyticsInsertTable(query string) string {
	rest, ok := strings.CutPrefix(query, "INSERT INTO ")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, " ")
	_, table, _ := strings.Cut(name, ".")
	return table
}

// analyticsWatchedBatch reports the partition of every appended row (or
// progress mark) to its conn.
type analyticsWatchedBatch struct {
	driver.Batch
	conn  *analyticsFailingConn
	table string
}

func (b *analyticsWatchedBatch) Append(v ...any) error {
	if tp, off, ok := analyticsAppendedTP(b.table, v); ok {
		b.conn.check(b.table, tp, off)
	}
	return b.Batch.Append(v...)
}

// analyticsAppendedTP is the topic partition and offset a row of table is
// about: the progress table's rows are (topic, partition, offset, time); a
// raw table's rows have the kafka_partition and kafka_offset columns of
// analytics.CommonColumns.
func analyticsAppendedTP(table string, v []any) (analyticsTP, int64, bool) {
	if table == analytics.ProgressTable {
		if len(v) < 3 {
			return analyticsTP{}, 0, false
		}
		topic, ok1 := v[0].(string)
		part, ok2 := v[1].(int32)
		off, ok3 := v[2].(int64)
		return analyticsTP{topic, part}, off, ok1 && ok2 && ok3
	}
	t, ok := analytics.LookupTable(table)
	pcol := slices.Index(analytics.CommonColumns, "kafka_partition")
	ocol := slices.Index(analytics.CommonColumns, "kafka_offset")
	if !ok || pcol < 0 || ocol < 0 || len(v) <= max(pcol, ocol) {
		return analyticsTP{}, 0, false
	}
	part, ok1 := v[pcol].(int32)
	off, ok2 := v[ocol].(int64)
	return analyticsTP{t.Topic, part}, off, ok1 && ok2
}

// TestAnalyticsProjectorRestart kills the projector at several points and
// starts another: the counts are exact, nothing lost, nothing doubled.
func TestAnalyticsProjectorRestart(t *testing.T) {
	tests := []struct {
		name     string
		failAt   string // table whose insert fails before the kill; "" for none
		newGroup bool   // the restarted projector uses another consumer group
	}{
		{"stopped between batches", "", false},
		{"stopped, restarted in a new group", "", true},
		{"killed between the tables of a batch", analytics.TableRegistrations, false},
		{"killed before the progress was saved", analytics.ProgressTable, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := analyticsNewEnv(t)
			m := analyticsNewMix(analyticsBase())
			first, second := m.half()
			group := "it-analytics-" + analyticsRandom(4)

			// First run: the first half is stored completely.
			fc := &analyticsFailingConn{Conn: e.conn, table: tt.failAt}
			run := e.startProjector(fc, group, 1000, 100*time.Millisecond)
			produced := e.produce(first)
			e.waitProjected(produced, 90*time.Second)

			// The second half arrives; if a failure is injected, the
			// batch is cut short and the projector is killed with it.
			fc.armed.Store(tt.failAt != "")
			produced = analyticsMergeOffsets(produced, e.produce(second))
			if tt.failAt != "" {
				deadline := time.Now().Add(60 * time.Second)
				for fc.failures.Load() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the injected failure never happened")
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Logf("at the kill: %v", e.counts(m.uaids))
			}
			run.stop(t)

			if tt.newGroup {
				group = "it-analytics-" + analyticsRandom(4)
			}
			e.startProjector(e.conn, group, 1000, 100*time.Millisecond)
			e.waitProjected(produced, 90*time.Second)
			e.checkRows(m)
		})
	}
}

// BenchmarkAnalyticsProjection measures events per second from Kafka into
// ClickHouse: b.N events (a realistic mix: per message an accept, a
// delivery and an ack) are produced first, then one projector projects
// them, timed from its first polled record until all are stored. The
// default settings and 10,000-row batches (the default before issue 17)
// are compared. Run with a fixed count:
//
//	go test ./integration -run '^$' -bench AnalyticsProjection -benchtime 300000x
func BenchmarkAnalyticsProjection(b *testing.B) {
	for _, rows := range []int{0, 10_000} {
		name := fmt.Sprintf("batch=%d", rows)
		if rows == 0 {
			name = "default"
		}
		b.Run(name, func(b *testing.B) { analyticsBenchProjection(b, rows) })
	}
}

func analyticsBenchProjection(b *testing.B, batchRows int) {
	e := analyticsNewEnv(b)
	sender := "mailto:bench-" + analyticsRandom(4) + "@example.com"
	uaids := make([]string, 64)
	for i := range uaids {
		uaids[i] = schema.NewUAID()
	}
	events := make([]*pb.Event, 0, b.N+2)
	now := time.Now()
	for i := 0; len(events) < b.N; i++ {
		u := uaids[i%len(uaids)]
		ref := &pb.MessageRef{Partition: 0, Offset: int64(i), ChannelId: "00000000-0000-4000-8000-000000000000", AcceptedMs: now.UnixMilli(), VapidSub: sender}
		acc := schema.NewEvent(u, now)
		acc.Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: ref.ChannelId, Payload: make([]byte, 1024), Encoding: "aes128gcm", TtlS: 3600, VapidSub: sender}}
		del := schema.NewEvent(u, now.Add(3*time.Millisecond))
		del.Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: "bench", ConnId: "c", Attempt: 1}}
		ack := schema.NewEvent(u, now.Add(9*time.Millisecond))
		ack.Body = &pb.Event_Acked{Acked: &pb.Acked{Msg: ref, Code: 100}}
		events = append(events, acc, del, ack)
	}
	events = events[:b.N]
	produced := map[string]map[int32]int64{}
	for chunk := range slices.Chunk(events, 20000) {
		produced = analyticsMergeOffsets(produced, e.produce(chunk))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := analytics.Migrate(ctx, e.conn, e.db); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	run := e.startProjector(e.conn, "bench-analytics-"+analyticsRandom(4), batchRows, 0)
	// Time from the first record polled, not the group join.
	deadline := time.Now().Add(2 * time.Minute)
	for run.p.Stats().Records == 0 {
		if time.Now().After(deadline) {
			b.Fatal("the projector polled nothing")
		}
		time.Sleep(time.Millisecond)
	}
	began, cpu0 := time.Now(), analyticsCPU()
	e.waitProjected(produced, 10*time.Minute)
	elapsed, cpu := time.Since(began), analyticsCPU()-cpu0
	b.StopTimer()
	run.stop(b)

	st := run.p.Stats()
	b.ReportMetric(float64(st.Records)/elapsed.Seconds(), "events/s")
	// CPU of this process (the projector) per event: unlike events/s it
	// does not depend on what else the machine is doing.
	b.ReportMetric(float64(cpu.Microseconds())/float64(st.Records), "projector-cpu-µs/event")
	b.ReportMetric(float64(cmp.Or(batchRows, analytics.DefaultBatchRows)), "batch_rows")
	b.ReportMetric(float64(st.Batches), "batches")
}

// TestAnalyticsRebalanceWhileFailing: a member stuck on a failing
// ClickHouse gives up its unstored batch when another member joins, so the
// rebalance goes on and the new member stores the partitions it was given;
// the stuck member never writes those again; when its ClickHouse recovers
// it catches up with the partitions it kept. The counts are exact.
//
// Which partitions the new member gets is up to the group's assignor, so
// every partition of every topic gets records (the mix's four UAIDs alone
// may all hash to partitions the stuck member keeps), and the test reads
// the assignment from the group coordinator.
func TestAnalyticsRebalanceWhileFailing(t *testing.T) {
	e := analyticsNewEnv(t)
	m := analyticsNewMix(analyticsBase())
	fillers, fillerUAIDs := analyticsPartitionFillers(analyticsBase(), e.partitions)
	group := "it-analytics-" + analyticsRandom(4)
	stuckID, healthyID := group+"-stuck", group+"-healthy"
	fc := &analyticsFailingConn{Conn: e.conn, table: analytics.TableAccepted}
	fc.armed.Store(true)
	stuck := e.startProjector(fc, group, 1000, 100*time.Millisecond, kgo.ClientID(stuckID))
	produced := e.produce(append(slices.Clone(m.events), fillers...))
	analyticsWaitFor(t, 60*time.Second, "the stuck member to try to write", func() (bool, error) {
		return fc.failures.Load() > 0, nil
	})

	healthy := e.startProjector(e.conn, group, 1000, 100*time.Millisecond, kgo.ClientID(healthyID))
	// The rebalance completes only if the stuck member lets go: the
	// coordinator then shows the new member owning partitions.
	var assigned map[string]map[analyticsTP]bool
	analyticsWaitFor(t, 2*time.Minute, "the rebalance to give the new member partitions", func() (bool, error) {
		a, err := e.assignment(group)
		if err != nil {
			return false, err
		}
		assigned = a
		return len(a[healthyID]) > 0 && len(a[stuckID]) > 0, nil
	})
	mine, theirs := assigned[healthyID], assigned[stuckID]
	if n, all := len(mine)+len(theirs), len(analytics.Topics())*int(e.partitions); n != all {
		t.Fatalf("the members own %d topic partitions together, want %d: %v", n, all, assigned)
	}
	for tp := range mine {
		if theirs[tp] {
			t.Fatalf("%v is assigned to both members: %v", tp, assigned)
		}
	}
	// From here on the stuck member must not write the partitions it lost.
	fc.watch(mine)
	t.Logf("new member owns %v", analyticsTPList(mine))

	// The new member stores everything of its partitions while the other
	// one still fails.
	want := map[string]map[int32]int64{}
	for tp := range mine {
		if off, ok := produced[tp.topic][tp.partition]; ok {
			if want[tp.topic] == nil {
				want[tp.topic] = map[int32]int64{}
			}
			want[tp.topic][tp.partition] = off
		}
	}
	if len(want) == 0 {
		t.Fatalf("nothing was produced to the new member's partitions %v (produced %v)", analyticsTPList(mine), produced)
	}
	e.waitProjected(want, 90*time.Second)
	// Accepted messages cannot be stored by the stuck member: if the new
	// member has a messages partition, it stored it.
	for tp := range mine {
		if tp.topic == schema.TopicMessages && healthy.p.Stats().Batches == 0 {
			t.Errorf("%s/%d is projected, but not by its owner", tp.topic, tp.partition)
			break
		}
	}

	// ClickHouse recovers: the stuck member catches up with what it kept.
	fc.armed.Store(false)
	e.waitProjected(produced, 90*time.Second)
	fc.watch(nil)
	if v := fc.recordedViolations(); len(v) > 0 {
		// Only a bug if the partitions were not moved back by another
		// rebalance in between.
		if now, err := e.assignment(group); err == nil && fmt.Sprint(now) == fmt.Sprint(assigned) {
			t.Errorf("the stuck member wrote partitions it had lost:\n%s", strings.Join(v, "\n"))
		} else {
			t.Logf("writes to the new member's partitions after another rebalance (%v -> %v, %v): %v", assigned, now, err, v)
		}
	}
	e.checkRows(m)
	got := e.counts(fillerUAIDs)
	for _, table := range []string{analytics.TableAccepted, analytics.TableDelivered, analytics.TableRegistrations, analytics.TableConnections} {
		if got[table] != uint64(len(fillerUAIDs)) {
			t.Errorf("%s: %d rows of the partition fillers, want %d", table, got[table], len(fillerUAIDs))
		}
	}
	t.Logf("stuck member %+v, new member %+v", stuck.p.Stats(), healthy.p.Stats())
}

// analyticsPartitionFillers returns events of one fresh UAID per partition
// (of n) with a record in every topic the projector consumes (a channel
// registered, a connection, a message accepted and delivered), and the
// UAIDs.
func analyticsPartitionFillers(base time.Time, n int32) ([]*pb.Event, []string) {
	var events []*pb.Event
	var uaids []string
	for p := int32(0); p < n; p++ {
		u := schema.NewUAID()
		for schema.PartitionOf(u, n) != p {
			u = schema.NewUAID()
		}
		uaids = append(uaids, u)
		ch := fmt.Sprintf("%08x-0000-4000-8000-0000000000ff", p)
		ev := func() *pb.Event {
			e := schema.NewEvent(u, base)
			events = append(events, e)
			return e
		}
		ev().Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: ch}}
		ev().Body = &pb.Event_Connected{Connected: &pb.Connected{Node: "it-filler", ConnId: "f", SinceMs: base.UnixMilli()}}
		ev().Body = &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: ch, TtlS: 60}}
		ref := &pb.MessageRef{ChannelId: ch, AcceptedMs: base.UnixMilli()}
		ev().Body = &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Node: "it-filler", ConnId: "f", Attempt: 1}}
	}
	return events, uaids
}

// assignment returns what the group coordinator assigned to each member
// (by client id) once the group is stable; nil while it is rebalancing.
func (e *analyticsEnv) assignment(group string) (map[string]map[analyticsTP]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	groups, err := kadm.NewClient(e.prod).DescribeGroups(ctx, group)
	if err != nil {
		return nil, err
	}
	g, ok := groups[group]
	if !ok {
		return nil, fmt.Errorf("group %s not described", group)
	}
	if g.Err != nil {
		return nil, fmt.Errorf("describe group %s: %w", group, g.Err)
	}
	if g.State != "Stable" {
		return nil, nil
	}
	out := map[string]map[analyticsTP]bool{}
	for _, mem := range g.Members {
		c, ok := mem.Assigned.AsConsumer()
		if !ok {
			continue
		}
		if out[mem.ClientID] == nil {
			out[mem.ClientID] = map[analyticsTP]bool{}
		}
		for _, tp := range c.Topics {
			for _, p := range tp.Partitions {
				out[mem.ClientID][analyticsTP{tp.Topic, p}] = true
			}
		}
	}
	return out, nil
}

func analyticsTPList(tps map[analyticsTP]bool) []string {
	var out []string
	for tp := range tps {
		out = append(out, fmt.Sprintf("%s/%d", tp.topic, tp.partition))
	}
	slices.Sort(out)
	return out
}

// analyticsWaitFor polls cond until it holds, failing the test after
// timeout; a condition that cannot be evaluated yet (an error) is retried.
func analyticsWaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %v for %s (last error: %v)", timeout, what, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// analyticsCPU is the user+system CPU time this process has used.
func analyticsCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// analyticsLogLevel is Info, or Debug with PUSHLOG_TEST_DEBUG=1.
func analyticsLogLevel() slog.Level {
	if os.Getenv("PUSHLOG_TEST_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}
