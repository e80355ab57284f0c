package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushlog/pushlog/ingest/webpush"
	"github.com/pushlog/pushlog/schema"
)

// lockedBuffer is an io.Writer the test can read while Listen writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(t *testing.T, w *lockedBuffer) *slog.Logger {
	if w == nil {
		w = &lockedBuffer{}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startListen runs Listen in the background; the returned channel yields
// its result.
func startListen(t *testing.T, ctx context.Context, opts ListenOptions) <-chan error {
	t.Helper()
	if opts.ReconnectDelay == 0 {
		opts.ReconnectDelay = 10 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t, nil)
	}
	done := make(chan error, 1)
	go func() { done <- Listen(ctx, opts) }()
	return done
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return")
		return nil
	}
}

// waitFile polls until path exists with content different from prev (the
// listener writes it atomically, so what is read is whole).
func waitFile(t *testing.T, path string, prev []byte) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 && !bytes.Equal(b, prev) {
			return b
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s was not written", path)
	return nil
}

func readSubscription(t *testing.T, b []byte) webpush.Subscription {
	t.Helper()
	s, err := webpush.ParseSubscription(b)
	if err != nil {
		t.Fatalf("subscription file %q: %v", b, err)
	}
	return s
}

// The whole path: listen registers (key-bound), send encrypts and signs
// three messages in both encodings, the fake server forwards them, listen
// decrypts, prints JSON lines, acks, and stops after Count.
func TestListenAndSend(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	subFile, stateFile := filepath.Join(dir, "sub.json"), filepath.Join(dir, "state.json")
	vapid, _ := webpush.GenerateVAPIDKey()
	f.checkPush = func(r *http.Request, body []byte) {
		checkVAPID(t, r, f.srv.URL, vapid.PublicKeyString())
	}

	out := &lockedBuffer{}
	done := startListen(t, t.Context(), ListenOptions{
		URL: f.wsURL(), StateFile: stateFile, SubscriptionOut: subFile, ServerKey: vapid.PublicKeyString(),
		Count: 3, JSON: true, Out: out,
	})
	sub := readSubscription(t, waitFile(t, subFile, nil))

	msgs := []struct {
		encoding string
		data     []byte
	}{
		{"aes128gcm", []byte("When I grow up, I want to be a watermelon")},
		{"aesgcm", []byte("héllo, legacy")},
		{"aes128gcm", []byte{0xff, 0xfe, 0x00, 0x01}},
	}
	for i, m := range msgs {
		var sendOut bytes.Buffer
		status, loc, err := Send(t.Context(), SendOptions{
			Subscription: "@" + subFile, Message: m.data, VAPIDPrivateKey: vapid.PrivateKeyString(),
			TTL: 60, Encoding: m.encoding, Out: &sendOut,
		})
		if err != nil || status != http.StatusCreated || !strings.HasSuffix(loc, "/m/v"+string(rune('1'+i))) {
			t.Fatalf("send %d: %d %q %v", i, status, loc, err)
		}
		if !strings.Contains(sendOut.String(), "status: 201 Created\nlocation: "+loc+"\nttl: 60\n") {
			t.Fatalf("send printed %q", sendOut.String())
		}
		a := f.nextAck(t)
		if a.Code != ackDelivered || a.ChannelID != readState(t, stateFile).ChannelID || a.Version != "v"+string(rune('1'+i)) {
			t.Fatalf("ack %d = %+v", i, a)
		}
	}
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("output lines:\n%s", out.String())
	}
	for i, line := range lines {
		var r received
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		want := string(msgs[i].data)
		if r.Binary {
			b, _ := base64.StdEncoding.DecodeString(r.Data)
			r.Data = string(b)
		}
		if r.Data != want || r.Encoding != msgs[i].encoding || r.Error != "" || r.Binary != (i == 2) {
			t.Fatalf("line %d = %+v", i, r)
		}
	}

	hellos, registers, _ := f.snapshot()
	if len(hellos) != 1 || hellos[0].UAID != "" {
		t.Fatalf("hellos = %+v (a fresh listener sends no uaid)", hellos)
	}
	if len(registers) != 1 || registers[0].Key != vapid.PublicKeyString() {
		t.Fatalf("registers = %+v, want one with the server key", registers)
	}
	st := readState(t, stateFile)
	if st.ChannelID != registers[0].ChannelID || st.Endpoint != sub.Endpoint || st.ServerKey != vapid.PublicKeyString() {
		t.Fatalf("state = %+v", st)
	}
	if fi, _ := os.Stat(stateFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", fi.Mode())
	}
}

func readState(t *testing.T, path string) listenState {
	t.Helper()
	var st listenState
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A dropped socket is reconnected with the same uaid and channel (no new
// register); a restarted listen resumes from the state file.
func TestListenReconnectsAndResumes(t *testing.T) {
	f := newFakeServer(t)
	f.dropAfter = 1
	dir := t.TempDir()
	subFile, stateFile := filepath.Join(dir, "sub.json"), filepath.Join(dir, "state.json")

	out := &lockedBuffer{}
	done := startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), StateFile: stateFile, SubscriptionOut: subFile, Count: 1, Out: out})
	first := waitFile(t, subFile, nil)
	if _, _, err := Send(t.Context(), SendOptions{Subscription: string(first), Message: []byte("after reconnect"), Out: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	if a := f.nextAck(t); a.Code != ackDelivered {
		t.Fatalf("ack %+v", a)
	}
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	hellos, registers, _ := f.snapshot()
	if len(hellos) != 2 || len(registers) != 1 {
		t.Fatalf("hellos %+v registers %+v: want a reconnect without a new register", hellos, registers)
	}
	st := readState(t, stateFile)
	if hellos[1].UAID != st.UAID {
		t.Fatalf("reconnect hello uaid %q, state %q", hellos[1].UAID, st.UAID)
	}
	if !strings.Contains(out.String(), `data="after reconnect"`) || strings.Count(out.String(), "subscription: ") != 1 {
		t.Fatalf("output:\n%s", out.String())
	}

	// A new process with the same state file: same subscription, old keys.
	os.Remove(subFile)
	out2 := &lockedBuffer{}
	done = startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), StateFile: stateFile, SubscriptionOut: subFile, Count: 1, Out: out2})
	again := waitFile(t, subFile, nil)
	if !bytes.Equal(again, first) {
		t.Fatalf("resumed subscription %s, want %s", again, first)
	}
	if _, _, err := Send(t.Context(), SendOptions{Subscription: string(first), Message: []byte("after restart"), Encoding: "aesgcm", Out: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	hellos, registers, _ = f.snapshot()
	if len(hellos) != 3 || hellos[2].UAID != st.UAID || len(registers) != 1 {
		t.Fatalf("after restart: hellos %+v registers %+v", hellos, registers)
	}
	if !strings.Contains(out2.String(), `encoding=aesgcm data="after restart"`) {
		t.Fatalf("output:\n%s", out2.String())
	}
}

// When hello answers with another uaid, the saved subscription is gone:
// listen registers afresh and prints the new subscription.
func TestListenUAIDReset(t *testing.T) {
	f := newFakeServer(t)
	f.resetUAID = true
	dir := t.TempDir()
	subFile, stateFile := filepath.Join(dir, "sub.json"), filepath.Join(dir, "state.json")
	oldKeys, _ := webpush.GenerateReceiverKeys()
	old := listenState{UAID: schema.NewUAID(), ChannelID: newChannelID(), Endpoint: f.srv.URL + "/push/old",
		PrivateKey: oldKeys.PrivateKeyString(), Auth: oldKeys.AuthString()}
	b, _ := json.Marshal(old)
	if err := os.WriteFile(stateFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	out, logs := &lockedBuffer{}, &lockedBuffer{}
	done := startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), StateFile: stateFile, SubscriptionOut: subFile, Count: 1, Out: out, Logger: testLogger(t, logs)})
	sub := readSubscription(t, waitFile(t, subFile, nil))
	if sub.Endpoint == old.Endpoint || sub.Keys.P256dh == oldKeys.PublicKeyString() {
		t.Fatalf("subscription was not renewed: %+v", sub)
	}
	if _, _, err := Send(t.Context(), SendOptions{Subscription: "@" + subFile, Message: []byte("fresh"), Out: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	hellos, registers, _ := f.snapshot()
	if len(hellos) != 1 || hellos[0].UAID != old.UAID || len(registers) != 1 || registers[0].ChannelID == old.ChannelID {
		t.Fatalf("hellos %+v registers %+v", hellos, registers)
	}
	st := readState(t, stateFile)
	if st.UAID == old.UAID || st.ChannelID != registers[0].ChannelID || st.Endpoint != sub.Endpoint {
		t.Fatalf("state not replaced: %+v", st)
	}
	if !strings.Contains(out.String(), "endpoint: "+sub.Endpoint+"\nsubscription: {") || !strings.Contains(out.String(), `data="fresh"`) {
		t.Fatalf("output:\n%s", out.String())
	}
	if !strings.Contains(logs.String(), "old subscription is gone") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

// A changed server key needs a key-bound channel: register anew on the
// same uaid and unregister the old channel.
func TestListenServerKeyChange(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	subFile, stateFile := filepath.Join(dir, "sub.json"), filepath.Join(dir, "state.json")
	ctx, cancel := context.WithCancel(t.Context())
	done := startListen(t, ctx, ListenOptions{URL: f.wsURL(), StateFile: stateFile, SubscriptionOut: subFile, Out: &lockedBuffer{}})
	first := waitFile(t, subFile, nil)
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	before := readState(t, stateFile)

	key, _ := webpush.GenerateVAPIDKey()
	done = startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), StateFile: stateFile, SubscriptionOut: subFile, ServerKey: key.PublicKeyString(), Count: 1, Out: &lockedBuffer{}})
	second := waitFile(t, subFile, first)
	if _, _, err := Send(t.Context(), SendOptions{Subscription: string(second), Message: []byte("bound"), VAPIDPrivateKey: key.PrivateKeyString(), Out: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	after := readState(t, stateFile)
	_, registers, unregistered := f.snapshot()
	if after.UAID != before.UAID || after.ChannelID == before.ChannelID || after.ServerKey != key.PublicKeyString() {
		t.Fatalf("state before %+v after %+v", before, after)
	}
	if len(registers) != 2 || registers[1].Key != key.PublicKeyString() || len(unregistered) != 1 || unregistered[0] != before.ChannelID {
		t.Fatalf("registers %+v unregistered %v", registers, unregistered)
	}
}

// Undecryptable data is acked with 101 and reported; an empty push is a
// message without data; another channel's notification is acked 102 and a
// duplicate version is acked again but printed once. Pings are answered.
func TestListenNotificationCases(t *testing.T) {
	f := newFakeServer(t)
	subFile := filepath.Join(t.TempDir(), "sub.json")
	out := &lockedBuffer{}
	done := startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), SubscriptionOut: subFile, Count: 3, JSON: true, Out: out})
	sub := readSubscription(t, waitFile(t, subFile, nil))
	_, registers, _ := f.snapshot()
	ch := registers[0].ChannelID

	f.mu.Lock()
	if err := f.conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	f.mu.Unlock()
	select {
	case p := <-f.pongs:
		if p != "are you there" {
			t.Fatalf("pong %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
	}

	good, err := webpush.Encrypt(sub, []byte("good"), webpush.EncryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(channel, version string, data []byte, headers map[string]string) []byte {
		n := map[string]any{"messageType": "notification", "channelID": channel, "version": version}
		if data != nil {
			n["data"] = base64.RawURLEncoding.EncodeToString(data)
			n["headers"] = headers
		}
		b, _ := json.Marshal(n)
		return b
	}
	steps := []struct {
		frame []byte
		code  int
	}{
		{frame(ch, "bad", []byte("not a push message at all"), map[string]string{"encoding": "aes128gcm"}), ackDecryptionError},
		{frame(strings.ToUpper(ch), "empty", nil, nil), ackDelivered},
		{frame(newChannelID(), "elsewhere", good.Body, map[string]string{"encoding": "aes128gcm"}), ackNotDelivered},
		{[]byte(`{"messageType":"notification"}`), 0}, // no version: nothing to ack
		{[]byte(`{"messageType":"broadcast","broadcasts":{}}`), 0},
		{frame(ch, "empty", nil, nil), ackDelivered}, // duplicate
		{frame(ch, "good", good.Body, map[string]string{"encoding": "aes128gcm"}), ackDelivered},
	}
	for i, s := range steps {
		f.deliver(s.frame)
		if s.code == 0 {
			continue
		}
		if a := f.nextAck(t); a.Code != s.code {
			t.Fatalf("step %d: ack %+v, want code %d", i, a, s.code)
		}
	}
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	var got []received
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r received
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, r)
	}
	if len(got) != 3 || got[0].Version != "bad" || got[0].Error == "" || got[1].Version != "empty" || got[1].Data != "" ||
		got[2].Version != "good" || got[2].Data != "good" {
		t.Fatalf("printed %+v", got)
	}
}

// Close code 4774 means "do not reconnect".
func TestListenStopsOn4774(t *testing.T) {
	f := newFakeServer(t)
	f.closeCode = closeDoNotReturn
	err := waitDone(t, startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), Out: &lockedBuffer{}}))
	if err == nil || !strings.Contains(err.Error(), "4774") {
		t.Fatalf("err = %v", err)
	}
	if hellos, _, _ := f.snapshot(); len(hellos) != 1 {
		t.Fatalf("%d hellos: it reconnected", len(hellos))
	}
}

// Cancelling ctx ends Listen cleanly, with a close frame to the server;
// an unreachable server is retried until then.
func TestListenCancel(t *testing.T) {
	f := newFakeServer(t)
	subFile := filepath.Join(t.TempDir(), "sub.json")
	ctx, cancel := context.WithCancel(t.Context())
	done := startListen(t, ctx, ListenOptions{URL: f.wsURL(), SubscriptionOut: subFile, Out: &lockedBuffer{}})
	waitFile(t, subFile, nil)
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.conns:
	case <-time.After(10 * time.Second):
		t.Fatal("server socket not closed")
	}

	// Nothing listens on a closed server's port: Listen keeps retrying.
	gone := newFakeServer(t)
	url := gone.wsURL()
	gone.srv.Close()
	logs := &lockedBuffer{}
	ctx, cancel = context.WithCancel(t.Context())
	done = startListen(t, ctx, ListenOptions{URL: url, Out: &lockedBuffer{}, Logger: testLogger(t, logs)})
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), "reconnecting") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("no retries logged:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestListenOptionErrors(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	os.WriteFile(corrupt, []byte("{not json"), 0o600)
	badUAID := filepath.Join(dir, "baduaid.json")
	os.WriteFile(badUAID, []byte(`{"uaid":"xyz","channelID":"`+newChannelID()+`"}`), 0o600)
	tests := []struct {
		name string
		opts ListenOptions
		want string
	}{
		{"http url", ListenOptions{URL: "http://127.0.0.1:1/"}, "ws://"},
		{"no host", ListenOptions{URL: "ws:///"}, "ws://"},
		{"bad server key", ListenOptions{URL: "ws://127.0.0.1:1/", ServerKey: "BAAA"}, "server key"},
		{"negative count", ListenOptions{URL: "ws://127.0.0.1:1/", Count: -1}, "count"},
		{"corrupt state", ListenOptions{URL: "ws://127.0.0.1:1/", StateFile: corrupt}, "delete it"},
		{"bad uaid in state", ListenOptions{URL: "ws://127.0.0.1:1/", StateFile: badUAID}, "uaid"},
		{"state is a directory", ListenOptions{URL: "ws://127.0.0.1:1/", StateFile: dir}, "state file"},
		{"missing CA", ListenOptions{URL: "wss://127.0.0.1:1/", CAFile: filepath.Join(dir, "nope.pem")}, "ca file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Listen(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// A register refused for a client error ends Listen; a server error is
// retried on a new connection.
func TestListenRegisterStatus(t *testing.T) {
	f := newFakeServer(t)
	f.regStatus = []int{503, 400}
	err := waitDone(t, startListen(t, t.Context(), ListenOptions{URL: f.wsURL(), Out: &lockedBuffer{}}))
	if err == nil || !strings.Contains(err.Error(), "register refused with status 400") {
		t.Fatalf("err = %v", err)
	}
	if hellos, registers, _ := f.snapshot(); len(hellos) != 2 || len(registers) != 2 || hellos[1].UAID != "" {
		t.Fatalf("hellos %+v registers %+v: want one retry after the 503", hellos, registers)
	}
}

func TestVersionSetForgetsOldest(t *testing.T) {
	s := newVersionSet(2)
	for _, v := range []string{"a", "b", "b", "c"} {
		s.add(v)
	}
	if s.seen("a") || !s.seen("b") || !s.seen("c") {
		t.Fatalf("set %v", s.order)
	}
}
