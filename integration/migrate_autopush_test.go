package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/connector/bridge/fcm/fcmtest"
	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// redisURL returns the real Redis the test command started
// (deploy/redis/redis.sh). Missing in CI is a failure.
func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		if inCI() {
			t.Fatal("REDIS_URL is not set: the test command must start real Redis (deploy/test.sh runs deploy/redis/redis.sh)")
		}
		t.Skip("REDIS_URL not set; run deploy/redis/redis.sh start and export REDIS_URL=$(deploy/redis/redis.sh env | cut -d= -f2-)")
	}
	return u
}

// apMintScript makes endpoint tokens exactly as autopush does
// (autopush-common endpoint.rs make_endpoint, scripts/gendpoint.py):
// Fernet(key).encrypt(uaid bytes + chid bytes [+ sha256(raw VAPID key)]),
// '=' stripped. Input lines: "uaid chid [vapid-public-key]".
const apMintScript = `
import base64, hashlib, sys
from cryptography.fernet import Fernet
f = Fernet(sys.argv[1].encode())
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    base = bytes.fromhex(parts[0].replace('-', '')) + bytes.fromhex(parts[1].replace('-', ''))
    if len(parts) > 2:
        raw = base64.urlsafe_b64decode(parts[2] + '=' * (-len(parts[2]) % 4))
        base += hashlib.sha256(raw).digest()
    print(f.encrypt(base).strip(b'=').decode())
`

// apMint runs apMintScript with Python's cryptography (the venv of
// deploy/clients/install.sh, where pywebpush brings it).
func apMint(t testing.TB, key string, lines ...string) []string {
	t.Helper()
	cmd := exec.Command(senderPython(t), "-c", apMintScript, key)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python cryptography Fernet: %v\n%s", err, out)
	}
	toks := strings.Fields(string(out))
	if len(toks) != len(lines) {
		t.Fatalf("minted %d tokens for %d lines: %s", len(toks), len(lines), out)
	}
	return toks
}

// dashed formats 16 bytes as autopush writes UUIDs in its Redis keys.
func dashed(b []byte) string { return schema.FormatChannelID(b) }

// apUser is one autopush user loaded into Redis.
type apUser struct {
	uaid     schema.UAID
	channels []string
}

// apLoad writes records in autopush-rs's Redis layout
// (autopush-common/src/db/redis): the user JSON (uaid without dashes),
// the channel list, the storage timestamp and stored messages.
func apLoad(ctx context.Context, t testing.TB, rdb *redis.Client, prefix string, u apUser, router string, msgs []map[string]any) {
	t.Helper()
	key := dashed(u.uaid[:])
	user, _ := json.Marshal(map[string]any{
		"uaid": u.uaid.String(), "connected_at": time.Now().UnixMilli(), "router_type": router,
		"router_data": map[string]any{}, "record_version": 1, "priv_channels": []string{},
	})
	pipe := rdb.TxPipeline()
	pipe.Set(ctx, prefix+"user/"+key, user, 60*24*time.Hour)
	pipe.Set(ctx, prefix+"co/"+key, time.Now().UnixMilli(), 60*24*time.Hour)
	for _, ch := range u.channels {
		pipe.RPush(ctx, prefix+"channels/"+key, ch)
	}
	for i, m := range msgs {
		id := fmt.Sprintf("02:%d:%s", time.Now().UnixMilli()+int64(i), m["channelID"])
		m["sortkey_timestamp"] = time.Now().UnixMilli() + int64(i)
		b, _ := json.Marshal(m)
		exp := m["timestamp"].(int64) + m["ttl"].(int64)
		pipe.Set(ctx, prefix+"msg/"+key+"/"+id, b, 0)
		if exp > time.Now().Unix() {
			pipe.ExpireAt(ctx, prefix+"msg/"+key+"/"+id, time.Unix(exp, 0))
		}
		pipe.ZAdd(ctx, prefix+"msgs_exp/"+key, redis.Z{Score: float64(exp), Member: id})
		pipe.ZAdd(ctx, prefix+"msgs/"+key, redis.Z{Score: float64(m["timestamp"].(int64)), Member: id})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("load autopush records: %v", err)
	}
}

// apStoredMessage is a notification as autoendpoint stores it for an
// offline user: the body base64url, the crypto headers as it cleaned them.
func apStoredMessage(t testing.TB, channel string, keys *webpush.ReceiverKeys, plaintext string, age, ttl int64) map[string]any {
	t.Helper()
	m, err := webpush.Encrypt(keys.Subscription("https://autopush.invalid/"), []byte(plaintext), webpush.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{
		"channelID": channel, "version": "gAAAAA" + hex.EncodeToString([]byte(plaintext)),
		"timestamp": time.Now().Unix() - age, "ttl": ttl,
		"data":    base64.RawURLEncoding.EncodeToString(m.Body),
		"headers": map[string]string{"encoding": "aes128gcm"},
	}
}

// runImport runs `pushlog import autopush` against s and returns its
// summary line. On the embedded broker it gives no broker or namespace:
// the import finds the running serve through its --data-dir.
func runImport(ctx context.Context, t testing.TB, s *server, redisURL string, extra ...string) string {
	t.Helper()
	args := append([]string{"import", "autopush", "--redis", redisURL}, extra...)
	env := append(os.Environ(), "KAFKA_BROKERS=", "PUSHLOG_NAMESPACE=")
	if s.opts.Embedded {
		args = append(args, "--data-dir", s.opts.DataDir)
	} else {
		args = append(args, "--kafka-brokers", kafkaBrokers(t), "--namespace", s.opts.Namespace)
	}
	cmd := exec.CommandContext(ctx, pushlogBin, args...)
	cmd.Env = env
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pushlog %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("import: %s", lines[len(lines)-1])
	return lines[len(lines)-1]
}

// logEnds sums the end offsets of the registrations and messages topics:
// what an import appended.
func logEnds(ctx context.Context, t testing.TB, brokers, namespace string) int64 {
	t.Helper()
	names, err := schema.NamesFor(namespace)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, names.Registrations, names.Messages)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func wantSummary(t testing.TB, line string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !regexp.MustCompile(`(^|[ :;,(])` + regexp.QuoteMeta(w) + `($|[ :;,)])`).MatchString(line) {
			t.Errorf("summary %q lacks %q", line, w)
		}
	}
}

// TestMigrateFromAutopush: endpoints minted by autopush (tokens made by
// Python's cryptography Fernet exactly as autopush makes them) are
// accepted and delivered to the right channel; `pushlog import autopush`
// brings autopush-rs's Redis records over (a second run adds nothing); a
// Firefox-protocol client saying hello with its old UAID keeps it, gets
// its stored message and receives pushes sent to its old endpoints.
func TestMigrateFromAutopush(t *testing.T) {
	for _, embedded := range []bool{false, true} {
		name := "kafka"
		if embedded {
			name = "embedded"
		}
		t.Run(name, func(t *testing.T) { testMigrateFromAutopush(t, embedded) })
	}
}

func testMigrateFromAutopush(t *testing.T, embedded bool) {
	rurl := redisURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// autopush's CRYPTO_KEY (a Fernet key) and two keys of the past.
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	fkey := base64.URLEncoding.EncodeToString(raw[:])
	_, _ = rand.Read(raw[:])
	oldKey := base64.URLEncoding.EncodeToString(raw[:])

	// An FCM app "fenix" (the local FCM v1 server of bridges_test.go) for
	// autopush's mobile users.
	fcm := fcmtest.New("pushlog-it")
	t.Cleanup(fcm.Close)
	fdir := t.TempDir()
	creds, caFile := filepath.Join(fdir, "sa.json"), filepath.Join(fdir, "fcm-ca.pem")
	if err := os.WriteFile(creds, fcm.Credentials(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, fcm.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, serverOpts{Embedded: embedded, Env: []string{
		fmt.Sprintf(`PUSHLOG_AUTOPUSH_CRYPTO_KEYS=["%s", "%s"]`, fkey, oldKey),
		`PUSHLOG_FCM_APPS={"fenix": {"credentials": "` + creds + `"}}`,
		"PUSHLOG_FCM_BASE_URL=" + fcm.URL, "PUSHLOG_FCM_TOKEN_URL=" + fcm.TokenURL(),
		"PUSHLOG_BRIDGE_CA_FILE=" + caFile, "PUSHLOG_BRIDGE_AUTH_KEYS=" + bridgeAuthKey,
	}})
	brokers := ""
	for _, e := range s.env {
		if v, ok := strings.CutPrefix(e, "KAFKA_BROKERS="); ok && v != "" {
			brokers = v
		}
		if v, ok := strings.CutPrefix(e, "PUSHLOG_EMBEDDED_KAFKA_ADDR="); ok && embedded {
			brokers = v
		}
	}
	if brokers == "" {
		t.Fatal("no Kafka address for the import")
	}

	// A database of its own, emptied: the layout has a fixed prefix.
	opts, err := redis.ParseURL(rurl)
	if err != nil {
		t.Fatal(err)
	}
	if embedded {
		opts.DB = 2
	} else {
		opts.DB = 1
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("redis %s: %v", rurl, err)
	}
	dbURL := fmt.Sprintf("redis://%s/%d", opts.Addr, opts.DB)

	// The browser: a UAID with a v1 and a v2 (key-bound) subscription, and
	// a message autopush stored while it was offline.
	vapid := snNewVAPID(t)
	user := apUser{uaid: schema.RandomUAID(), channels: []string{uaChannelID(), uaChannelID()}}
	k1, _ := webpush.GenerateReceiverKeys()
	k2, _ := webpush.GenerateReceiverKeys()
	gone := uaChannelID() // a channel the user unsubscribed: not in the list
	apLoad(ctx, t, rdb, "autopush/", user, "webpush", []map[string]any{
		apStoredMessage(t, user.channels[0], k1, "stored while offline", 60, 3600),
		apStoredMessage(t, user.channels[0], k1, "expired", 7200, 3600),
		apStoredMessage(t, gone, k1, "for an unsubscribed channel", 60, 3600),
	})
	// A user without channels and a mobile (FCM) user without router
	// data: nothing to import.
	apLoad(ctx, t, rdb, "autopush/", apUser{uaid: schema.RandomUAID()}, "webpush", nil)
	apLoad(ctx, t, rdb, "autopush/", apUser{uaid: schema.RandomUAID(), channels: []string{uaChannelID()}}, "fcm", nil)
	// A mobile user of the FCM app: its bridge registration and channel.
	mobile := apUser{uaid: schema.RandomUAID(), channels: []string{uaChannelID()}}
	apLoad(ctx, t, rdb, "autopush/", mobile, "fcm", nil)
	fcm.Register("fcm-imported-device-token")
	mobileRec, _ := json.Marshal(map[string]any{"uaid": mobile.uaid.String(), "connected_at": time.Now().UnixMilli(), "router_type": "fcm",
		"router_data": map[string]any{"token": "fcm-imported-device-token", "app_id": "fenix"}, "record_version": 1})
	if err := rdb.Set(ctx, "autopush/user/"+dashed(mobile.uaid[:]), mobileRec, 0).Err(); err != nil {
		t.Fatal(err)
	}

	uaidDashed := dashed(user.uaid[:])
	toks := apMint(t, fkey,
		uaidDashed+" "+user.channels[0],
		uaidDashed+" "+user.channels[1]+" "+vapid.Public,
	)
	oldTok := apMint(t, oldKey, uaidDashed+" "+user.channels[0])[0] // minted before a key rotation
	mobileTok := apMint(t, fkey, dashed(mobile.uaid[:])+" "+mobile.channels[0])[0]
	sub1 := &uaSubscription{ChannelID: user.channels[0], Endpoint: s.HTTPURL + "/wpush/v1/" + toks[0], Keys: k1}
	sub2 := &uaSubscription{ChannelID: user.channels[1], Endpoint: s.HTTPURL + "/wpush/v2/" + toks[1], Keys: k2}
	subOld := &uaSubscription{ChannelID: user.channels[0], Endpoint: s.HTTPURL + "/wpush/v1/" + oldTok, Keys: k1}

	// Dry run: the plan, nothing written.
	before := logEnds(ctx, t, brokers, s.opts.Namespace)
	line := runImport(ctx, t, s, dbURL, "--dry-run")
	wantSummary(t, line, "4 users read", "2 imported", "3 channels registered", "1 messages stored", "1 bridge users imported", "dry run")
	if after := logEnds(ctx, t, brokers, s.opts.Namespace); after != before {
		t.Fatalf("dry run appended %d records", after-before)
	}

	line = runImport(ctx, t, s, dbURL)
	wantSummary(t, line, "4 users read", "2 imported", "3 channels registered", "1 messages stored", "1 bridge users imported",
		"1 users without channels", "1 users of other routers", "1 expired", "1 for channels not registered")
	imported := logEnds(ctx, t, brokers, s.opts.Namespace)
	if imported-before != 5 {
		t.Fatalf("import appended %d records, want 5 (1 bridge registration, 3 channel registrations, 1 message)", imported-before)
	}

	// Import twice: the same state.
	line = runImport(ctx, t, s, dbURL)
	wantSummary(t, line, "0 imported", "0 channels registered", "0 messages stored", "3 channels already in pushlog", "1 messages already imported",
		"0 bridge users imported", "1 already bridged in pushlog")
	if again := logEnds(ctx, t, brokers, s.opts.Namespace); again != imported {
		t.Fatalf("second import appended %d records, want none", again-imported)
	}

	// Firefox reconnects (DNS switched): same UAID, its stored message.
	ua := uaDial(ctx, t, s.WSURL, user.uaid.String())
	if ua.UAID != user.uaid.String() {
		t.Fatalf("hello with the imported uaid %s answered with %s: the subscriptions are lost", user.uaid, ua.UAID)
	}
	n := snExpect(ctx, t, ua, sub1, "stored while offline")
	ua.ack(n)

	// Pushes to the endpoints autopush minted: 201, delivered to their channel.
	for _, tc := range []struct {
		sub  *uaSubscription
		text string
	}{{sub1, "to the old v1 endpoint"}, {sub2, "to the old v2 endpoint"}, {subOld, "to an endpoint of a rotated-out key"}} {
		snMustCreate(ctx, t, tc.sub, []byte(tc.text), snPush{TTL: snLongTTL, VAPID: vapid})
		ua.ack(snExpect(ctx, t, ua, tc.sub, tc.text))
	}
	// The mobile user's old autopush endpoint: delivered through FCM to its
	// device token.
	// Unpadded: webpush-go's 4096-byte bodies exceed FCM's limit, and an
	// autopush token carries no bridge mark for ingest to refuse them early.
	mm, err := webpush.Encrypt(k1.Subscription(s.HTTPURL+"/wpush/v1/"+mobileTok), []byte("to a mobile user"), webpush.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	preq, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.HTTPURL+"/wpush/v1/"+mobileTok, bytes.NewReader(mm.Body))
	preq.Header.Set("TTL", "600")
	preq.Header.Set("Content-Encoding", "aes128gcm")
	presp, err := http.DefaultClient.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if presp.StatusCode != http.StatusCreated {
		t.Fatalf("push to the mobile user's autopush endpoint: %d, want 201", presp.StatusCode)
	}
	for got := false; !got; {
		for _, r := range fcm.Received() {
			got = got || r.Token == "fcm-imported-device-token"
		}
		if ctx.Err() != nil {
			t.Fatalf("FCM received nothing for the imported device token; rejected %v", fcm.Rejected())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The v2 endpoint only takes the key it was bound to.
	other := snNewVAPID(t)
	res := snSend(ctx, t, sub2, []byte("wrong key"), snPush{TTL: snLongTTL, VAPID: other})
	snCheckError(t, "v2 autopush endpoint signed with another key", res.Status, res.Header, res.Body, http.StatusUnauthorized, 109)
	// A forged or damaged autopush token: 404 errno 102, like pushlog's own.
	bad := &uaSubscription{ChannelID: sub1.ChannelID, Endpoint: s.HTTPURL + "/wpush/v1/" + toks[0][:len(toks[0])-4] + "AAAA", Keys: k1}
	res = snSend(ctx, t, bad, []byte("forged"), snPush{TTL: snLongTTL, VAPID: vapid})
	snCheckError(t, "damaged autopush token", res.Status, res.Header, res.Body, http.StatusNotFound, 102)

	// The user unsubscribes from an imported channel: its old endpoint is
	// gone (410), and importing again does not revive it.
	ua.unregister(ctx, sub2.ChannelID)
	snSendUntil(ctx, t, sub2, snPush{TTL: snLongTTL, VAPID: vapid}, http.StatusGone)
	ua.close()
	settled := logEnds(ctx, t, brokers, s.opts.Namespace)
	line = runImport(ctx, t, s, dbURL)
	wantSummary(t, line, "0 imported", "0 channels registered", "2 channels already in pushlog", "1 unregistered in pushlog")
	if again := logEnds(ctx, t, brokers, s.opts.Namespace); again != settled {
		t.Fatalf("import after an unsubscribe appended %d records, want none", again-settled)
	}
}
