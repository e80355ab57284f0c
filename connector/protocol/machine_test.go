package protocol

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Every transition of PROTOCOL.md section 3, without a socket: a client in
// some phase is fed client frames, request results, notifications and
// broadcast changes at an injected time, and each step's output (effects in
// order, then the request awaited) is compared with what the protocol
// says. Each row names the PROTOCOL bullet it covers ("§3 hello", ...).
//
// What the socket layer decides itself is tested with a socket
// (connector/server_test.go): the subprotocol echo, WebSocket Ping/Pong and
// the hello timeout, the replacement of an older connection by a newer one
// (the machine only asks for a Claim), frames past MaxMessage.

// Fixed identifiers. Rendered outputs name them (U1, N1, CH1...) instead
// of their hex.
var (
	u1 = mustUAID("0123456789abcdef0123456789abcdef") // known to the owner
	u9 = mustUAID("99999999999999999999999999999999") // another UAID
)

const (
	ch1 = "aaaaaaaa-1111-4111-8111-111111111111"
	ch2 = "bbbbbbbb-2222-4222-8222-222222222222"
	ch3 = "cccccccc-3333-4333-8333-333333333333"
	// A valid application server key: the P-256 generator.
	appKey = "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
	t0     = 1_000_000 // seconds: the tests' start time
)

func mustUAID(s string) schema.UAID {
	u, err := schema.ParseUAID(s)
	if err != nil {
		panic(err)
	}
	return u
}

func chanID(s string) [16]byte {
	id, err := schema.ParseChannelID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// newUAIDs returns N1, N2, ... : UAIDs issued at hello.
func newUAIDs() func() schema.UAID {
	n := byte(0)
	return func() schema.UAID {
		n++
		return schema.UAID{0: 0xaa, 15: n}
	}
}

// fakeSealer seals endpoints as readable tokens and opens versions of the
// form "msg/<uaid>/<channel>/<partition>/<offset>".
type fakeSealer struct{ sealErr error }

func (f *fakeSealer) SealEndpoint(e schema.Endpoint) (string, error) {
	if f.sealErr != nil {
		return "", f.sealErr
	}
	v := "v1"
	if e.KeyHash != nil {
		v = fmt.Sprintf("v2.%x", e.KeyHash[:2])
	}
	return "tok." + e.UAID + "." + e.ChannelID + "." + v, nil
}

func (f *fakeSealer) OpenMessageID(s string) (schema.MessageID, error) {
	var id schema.MessageID
	parts := strings.Split(s, "/")
	if len(parts) != 5 || parts[0] != "msg" {
		return id, errors.New("bad token")
	}
	id.UAID, id.ChannelID = parts[1], parts[2]
	if _, err := fmt.Sscan(parts[3]+" "+parts[4], &id.Partition, &id.Offset); err != nil {
		return id, err
	}
	return id, nil
}

func version(u schema.UAID, ch string, off int) string {
	return fmt.Sprintf("msg/%s/%s/3/%d", u, ch, off)
}

func testEnv() *Env {
	return &Env{
		PublicURL:                 "https://push.example",
		MaxChannels:               3,
		MaxRegistrationsPerMinute: 3,
		MaxMessagesPerMinute:      6,
		MinClientPing:             45 * time.Second,
		HelloTimeout:              5 * time.Second,
		PingInterval:              300 * time.Second,
		PongTimeout:               30 * time.Second,
		Sealer:                    &fakeSealer{},
		Broadcasts:                NewBroadcasts(map[string]string{"b1": "v1", "b2": "v2"}),
		NewUAID:                   newUAIDs(),
		Log:                       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// input is one input to the machine and the output wanted.
type input struct {
	after   time.Duration      // the clock moves this much first
	in      string             // a client text frame
	binary  bool               // a client binary frame
	resume  *Result            // the result of the awaited request
	deliver *link.Notification // a notification queued for the client
	changed map[string]string  // broadcast versions changed
	full    bool               // the send queue overflowed
	close   bool               // the socket closed (another goroutine)
	want    []string           // effects, then "await ..."
}

// Shorthands for results.
var (
	ok      = &Result{}
	claimed = &Result{Claimed: true}
	failed  = &Result{Err: errors.New("kafka down")}
)

func checked(valid bool, chans ...string) *Result {
	info := link.UAIDInfo{Valid: valid}
	for _, c := range chans {
		info.Channels = append(info.Channels, chanID(c))
	}
	return &Result{Info: info}
}

// Starting points.
type start int

const (
	fresh          start = iota // upgraded, no hello
	ready                       // hello'd as U1, which has CH1 registered
	readyPartial                // as ready, but the owner's channel list is partial
	readyFull                   // as ready, with CH1..CH3 (MaxChannels) registered
	closed                      // closed after hello
	readySealFails              // as ready, but endpoints cannot be sealed
	identifying                 // hello'd, waiting for the claim
)

func TestMachine(t *testing.T) {
	helloReply := `send-greet {"messageType":"hello","uaid":"U1","status":200,"use_webpush":true,"broadcasts":{}}`
	tooManyBroadcasts := map[string]string{}
	for i := range MaxBroadcastEntries + 1 {
		tooManyBroadcasts[fmt.Sprint("id", i)] = "v"
	}
	tests := []struct {
		name  string
		from  start
		steps []input
		phase Phase // after the last step
	}{
		// §3 framing: "Text frames of JSON only; a binary frame closes
		// with 1003, bad JSON or an unknown messageType with 1002."
		{"binary frame before hello", fresh, []input{{binary: true, want: []string{"close 1003 binary messages are not supported"}}}, AwaitHello},
		{"binary frame after hello", ready, []input{{binary: true, want: []string{"close 1003 binary messages are not supported"}}}, Ready},
		{"bad JSON before hello", fresh, []input{{in: `{"messageType":`, want: []string{"close 1002 invalid message"}}}, AwaitHello},
		{"bad JSON after hello", ready, []input{{in: `not json`, want: []string{"close 1002 invalid message"}}}, Ready},
		{"JSON array", ready, []input{{in: `[]`, want: []string{"close 1002 invalid message"}}}, Ready},
		{"unknown messageType", ready, []input{{in: `{"messageType":"urgency"}`, want: []string{"close 1002 invalid message"}}}, Ready},
		{"no messageType", ready, []input{{in: `{"channelID":"x"}`, want: []string{"close 1002 invalid message"}}}, Ready},
		{"wrong field type", ready, []input{{in: `{"messageType":"register","channelID":5}`, want: []string{"close 1002 invalid message"}}}, Ready},
		{"text that is not UTF-8", ready, []input{{in: "{\"messageType\":\"ping\",\"x\":\"\xff\"}", want: []string{"close 1007 text messages must be UTF-8"}}}, Ready},

		// §3 hello: "hello must be the first message".
		{"ping before hello", fresh, []input{{in: `{}`, want: []string{"close 1002 the first message must be a hello"}}}, AwaitHello},
		{"register before hello", fresh, []input{{in: register(ch1), want: []string{"close 1002 the first message must be a hello"}}}, AwaitHello},
		{"ack before hello", fresh, []input{{in: `{"messageType":"ack","updates":[]}`, want: []string{"close 1002 the first message must be a hello"}}}, AwaitHello},

		// §3 hello: "a missing ... or malformed one gets a new UAID
		// without error"; the reply, then Ready, then the owner attaches
		// ("After hello the stored messages are sent").
		{"hello without uaid", fresh, []input{
			{in: `{"messageType":"hello","use_webpush":true,"broadcasts":{}}`, want: []string{"count-hello new", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{}}`}},
			{resume: ok, want: []string{"await attach N1"}},
			{resume: ok},
		}, Ready},
		{"hello with an empty uaid", fresh, []input{{in: `{"messageType":"hello","uaid":""}`, want: []string{"count-hello new", "await claim N1"}}}, Identifying},
		{"hello with a malformed uaid", fresh, []input{{in: `{"messageType":"hello","uaid":"not-a-uaid"}`, want: []string{"count-hello new", "await claim N1"}}}, Identifying},
		{"hello with a uaid that is not a string", fresh, []input{{in: `{"messageType":"hello","uaid":42}`, want: []string{"count-hello new", "await claim N1"}}}, Identifying},
		// §3 hello: "A known UAID is kept" (any case, dashes tolerated).
		{"hello with a known uaid", fresh, []input{
			{in: hello(strings.ToUpper(u1.String())), want: []string{"await check-uaid U1"}},
			{resume: checked(true, ch1), want: []string{"count-hello known", "await claim U1"}},
			{resume: claimed, want: []string{"connected", strings.Replace(helloReply, "send-greet", "await greet", 1)}},
			{resume: ok, want: []string{"await attach U1"}},
			{resume: ok},
			// The owner's channels are known: an unregister of CH1 writes.
			{in: unregister(ch1, 200), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch1 + " code=200"}},
		}, Ready},
		// §3 hello: "an unknown [or] reset ... one gets a new UAID": the
		// old one is reset first (its endpoints then answer 410).
		{"hello with an unknown uaid", fresh, []input{
			{in: hello(u1.String()), want: []string{"await check-uaid U1"}},
			{resume: checked(false), want: []string{"await produce-sync user_reset U1 reason=unknown uaid at hello"}},
			{resume: ok, want: []string{"count-hello reset", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{}}`}},
		}, Identifying},
		{"hello: the reset is not written", fresh, []input{
			{in: hello(u1.String()), want: []string{"await check-uaid U1"}},
			{resume: checked(false), want: []string{"await produce-sync user_reset U1 reason=unknown uaid at hello"}},
			{resume: failed, want: []string{"close 1013 try again later"}},
		}, Identifying},
		{"hello: the owner cannot answer (never a reset)", fresh, []input{
			{in: hello(u1.String()), want: []string{"await check-uaid U1"}},
			{resume: failed, want: []string{"close 1013 try again later"}},
		}, Identifying},
		{"hello: closed before the claim", fresh, []input{
			{in: hello(""), want: []string{"count-hello new", "await claim N1"}},
			{resume: &Result{Claimed: false}},
		}, Identifying},
		{"hello: the reply cannot be written", fresh, []input{
			{in: hello(""), want: []string{"count-hello new", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{}}`}},
			{resume: failed, want: []string{"disconnected"}},
		}, Identifying},
		{"hello: closed while answering", fresh, []input{
			{in: hello(""), want: []string{"count-hello new", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{}}`}},
			{close: true, want: []string{"closed-from identifying"}},
			{resume: ok, want: []string{"disconnected"}},
		}, Closed},
		{"hello: the owner cannot attach", fresh, []input{
			{in: hello(""), want: []string{"count-hello new", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{}}`}},
			{resume: ok, want: []string{"await attach N1"}},
			{resume: failed, want: []string{"close 1013 try again later"}},
		}, Ready},
		{"hello: closed while attaching", fresh, []input{
			{in: hello(""), want: []string{"count-hello new", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{}}`}},
			{resume: ok, want: []string{"await attach N1"}},
			{close: true, want: []string{"closed-from ready"}},
			{resume: ok, want: []string{"detach"}},
		}, Closed},
		// §3 hello: "A second hello on the same socket closes it."
		{"second hello", ready, []input{{in: hello(""), want: []string{"close 1002 second hello"}}}, Ready},
		{"a message while identifying is ignored", fresh, []input{
			{in: hello(""), want: []string{"count-hello new", "await claim N1"}},
			{in: `{}`},
			{in: hello("")},
		}, Identifying},
		{"a message after close is ignored", closed, []input{{in: register(ch2)}, {in: `{}`}, {in: hello("")}}, Closed},
		// §3 broadcasts: "hello answers only the ids whose version
		// differs from the client's"; unknown ids under "errors".
		{"hello with broadcasts", fresh, []input{
			{in: `{"messageType":"hello","broadcasts":{"b1":"v1","b2":"old","zz":"1"}}`, want: []string{"count-hello new", "await claim N1"}},
			{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":{"b2":"v2","errors":{"zz":"Broadcast not found"}}}`}},
			{resume: ok, want: []string{"await attach N1"}},
			{resume: ok},
			{changed: map[string]string{"b1": "v3", "b9": "1"}, want: []string{`send {"messageType":"broadcast","broadcasts":{"b1":"v3"}}`}},
		}, Ready},
		// §3 limits: broadcasts are bounded (64 entries, 128 bytes).
		{"hello with too many broadcasts", fresh, []input{{in: helloWith(tooManyBroadcasts), want: []string{"refused broadcasts", "close 1008 too many or too long broadcasts"}}}, Identifying},
		{"hello with a long broadcast id", fresh, []input{{in: helloWith(map[string]string{strings.Repeat("i", MaxBroadcastField+1): "v"}), want: []string{"refused broadcasts", "close 1008 too many or too long broadcasts"}}}, Identifying},

		// §3 register: the reply is sent only after the registration
		// event is durable; v1 endpoint without a key, v2 with one.
		{"register", ready, []input{
			{in: register(ch2), want: []string{"await produce-sync channel_registered U1 ch=" + ch2 + " key=none"}},
			{resume: ok, want: []string{`send {"messageType":"register","channelID":"` + ch2 + `","status":200,"pushEndpoint":"https://push.example/wpush/v1/tok.U1.` + ch2 + `.v1"}`}},
			// Now known: its unregister writes.
			{in: unregister(ch2, 201), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch2 + " code=201"}},
		}, Ready},
		{"register with a key", ready, []input{
			{in: registerKey(ch2, appKey), want: []string{"await produce-sync channel_registered U1 ch=" + ch2 + " key=sha256"}},
			{resume: ok, want: []string{`send {"messageType":"register","channelID":"` + ch2 + `","status":200,"pushEndpoint":"https://push.example/wpush/v2/tok.U1.` + ch2 + `.v2.` + keyHashPrefix(appKey) + `"}`}},
		}, Ready},
		// §3 register: "a bad key: status 400".
		{"register with a bad key", ready, []input{{in: registerKey(ch2, "BAAA"), want: []string{
			`send {"messageType":"register","channelID":"` + ch2 + `","status":400,"reason":"key must be an uncompressed P-256 public key (65 bytes, base64url)"}`}}}, Ready},
		// §3 register: channelID is a lowercase dashed UUID (401 otherwise).
		{"register a channel id that is no UUID", ready, []input{{in: register("nope"), want: []string{
			`send {"messageType":"register","channelID":"nope","status":401,"reason":"channelID must be a lowercase dashed UUID"}`}}}, Ready},
		{"register an uppercase channel id", ready, []input{{in: register(strings.ToUpper(ch2)), want: []string{
			`send {"messageType":"register","channelID":"` + strings.ToUpper(ch2) + `","status":401,"reason":"channelID must be a lowercase dashed UUID"}`}}}, Ready},
		{"register an undashed channel id", ready, []input{{in: register(strings.ReplaceAll(ch2, "-", "")), want: []string{
			`send {"messageType":"register","channelID":"` + strings.ReplaceAll(ch2, "-", "") + `","status":401,"reason":"channelID must be a lowercase dashed UUID"}`}}}, Ready},
		// §3 register: "Registering the same channel again is idempotent
		// (200)" (written again: the endpoint may carry a new key).
		{"register a registered channel", ready, []input{
			{in: register(ch1), want: []string{"await produce-sync channel_registered U1 ch=" + ch1 + " key=none"}},
			{resume: ok, want: []string{`send {"messageType":"register","channelID":"` + ch1 + `","status":200,"pushEndpoint":"https://push.example/wpush/v1/tok.U1.` + ch1 + `.v1"}`}},
		}, Ready},
		{"register: not durable", ready, []input{
			{in: register(ch2), want: []string{"await produce-sync channel_registered U1 ch=" + ch2 + " key=none"}},
			{resume: failed, want: []string{`send {"messageType":"register","channelID":"` + ch2 + `","status":500,"reason":"try again later"}`}},
			// Not added: its unregister writes nothing.
			{in: unregister(ch2, 200), want: []string{"count-unknown-unregister", `send {"messageType":"unregister","channelID":"` + ch2 + `","status":200}`}},
		}, Ready},
		// §3 limits: "a register past it gets an error status; the socket
		// stays open" (413); a registered channel may register again.
		{"register past MaxChannels", readyFull, []input{
			{in: register("44444444-4444-4444-8444-444444444444"), want: []string{"refused channels",
				`send {"messageType":"register","channelID":"44444444-4444-4444-8444-444444444444","status":413,"reason":"too many channels (at most 3); unregister some first"}`}},
			{in: register(ch3), want: []string{"await produce-sync channel_registered U1 ch=" + ch3 + " key=none"}},
		}, Ready},
		// §3 limits: "registration rates per socket are bounded" (429,
		// nothing written; one token back every period/n).
		{"registration rate", ready, []input{
			{in: register(ch2), want: []string{"await produce-sync channel_registered U1 ch=" + ch2 + " key=none"}},
			{resume: ok, want: []string{`send {"messageType":"register","channelID":"` + ch2 + `","status":200,"pushEndpoint":"https://push.example/wpush/v1/tok.U1.` + ch2 + `.v1"}`}},
			{in: unregister(ch2, 200), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch2 + " code=200"}},
			{resume: ok, want: []string{`send {"messageType":"unregister","channelID":"` + ch2 + `","status":200}`}},
			{in: register(ch2), want: []string{"await produce-sync channel_registered U1 ch=" + ch2 + " key=none"}},
			{resume: ok, want: []string{`send {"messageType":"register","channelID":"` + ch2 + `","status":200,"pushEndpoint":"https://push.example/wpush/v1/tok.U1.` + ch2 + `.v1"}`}},
			{in: register(ch3), want: []string{"refused registration_rate", `send {"messageType":"register","channelID":"` + ch3 + `","status":429,"reason":"too many registrations; retry later"}`}},
			{in: unregister(ch1, 200), want: []string{"refused registration_rate", `send {"messageType":"unregister","channelID":"` + ch1 + `","status":429,"reason":"too many registrations; retry later"}`}},
			{after: 20 * time.Second, in: register(ch3), want: []string{"await produce-sync channel_registered U1 ch=" + ch3 + " key=none"}},
		}, Ready},
		{"register: the endpoint cannot be sealed", readySealFails, []input{
			{in: register(ch2), want: []string{`send {"messageType":"register","channelID":"` + ch2 + `","status":500}`}},
		}, Ready},

		// §3 unregister: "always 200"; "unregistering an unknown channel
		// leaves nothing behind".
		{"unregister a registered channel", ready, []input{
			{in: unregister(ch1, 202), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch1 + " code=202"}},
			{resume: ok, want: []string{`send {"messageType":"unregister","channelID":"` + ch1 + `","status":200}`}},
			{in: unregister(ch1, 202), want: []string{"count-unknown-unregister", `send {"messageType":"unregister","channelID":"` + ch1 + `","status":200}`}},
		}, Ready},
		{"unregister an unknown channel writes nothing", ready, []input{
			{in: unregister(ch2, 200), want: []string{"count-unknown-unregister", `send {"messageType":"unregister","channelID":"` + ch2 + `","status":200}`}},
		}, Ready},
		{"unregister an unknown channel of a partial list writes", readyPartial, []input{
			{in: unregister(ch2, 200), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch2 + " code=200"}},
		}, Ready},
		{"unregister in another form names the canonical channel", ready, []input{
			{in: unregister(strings.ToUpper(ch1), 200), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch1 + " code=200"}},
			{resume: ok, want: []string{`send {"messageType":"unregister","channelID":"` + strings.ToUpper(ch1) + `","status":200}`}},
		}, Ready},
		{"unregister without a code", ready, []input{
			{in: `{"messageType":"unregister","channelID":"` + ch1 + `"}`, want: []string{"await produce-sync channel_unregistered U1 ch=" + ch1 + " code=0"}},
		}, Ready},
		{"unregister a channel id that is no UUID", ready, []input{
			{in: unregister("nope", 200), want: []string{`send {"messageType":"unregister","channelID":"nope","status":401,"reason":"invalid channelID"}`}},
		}, Ready},
		{"unregister: not durable", ready, []input{
			{in: unregister(ch1, 200), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch1 + " code=200"}},
			{resume: failed, want: []string{`send {"messageType":"unregister","channelID":"` + ch1 + `","status":500,"reason":"try again later"}`}},
			{in: unregister(ch1, 200), want: []string{"await produce-sync channel_unregistered U1 ch=" + ch1 + " code=200"}}, // still registered
		}, Ready},

		// §3 ack: "An acked message is never sent again": the Acked event
		// and the owner told at once. Acks of notifications delivered on
		// this socket are free; others cost a token each.
		{"ack a delivered notification", ready, []input{
			{deliver: notification(ch1, 7)},
			{in: ack(version(u1, ch1, 7), 100), want: []string{"produce acked U1 p=3 o=7 ch=" + ch1 + " code=100", "count-ack 100", "owner-acked p=3 o=7"}},
			// Taken: acking it again opens the version (costs a token).
			{in: ack(version(u1, ch1, 7), 100), want: []string{"produce acked U1 p=3 o=7 ch=" + ch1 + " code=100", "count-ack 100", "owner-acked p=3 o=7"}},
		}, Ready},
		{"ack a message of an earlier connection", ready, []input{
			{in: ack(version(u1, ch1, 5), 102), want: []string{"produce acked U1 p=3 o=5 ch=" + ch1 + " code=102", "count-ack 102", "owner-acked p=3 o=5"}},
		}, Ready},
		{"ack codes: 101 kept, others count as delivered", ready, []input{
			{in: ack(version(u1, ch1, 5), 101), want: []string{"produce acked U1 p=3 o=5 ch=" + ch1 + " code=101", "count-ack 101", "owner-acked p=3 o=5"}},
			{in: ack(version(u1, ch1, 6), 7), want: []string{"produce acked U1 p=3 o=6 ch=" + ch1 + " code=100", "count-ack 100", "owner-acked p=3 o=6"}},
			{in: `{"messageType":"ack","updates":[{"version":"` + version(u1, ch1, 8) + `"}]}`, want: []string{"produce acked U1 p=3 o=8 ch=" + ch1 + " code=100", "count-ack 100", "owner-acked p=3 o=8"}},
		}, Ready},
		{"ack of another uaid's or an undecodable version is ignored", ready, []input{
			{in: ack(version(u9, ch1, 5), 100)},
			{in: ack("garbage", 100)},
			{in: `{"messageType":"ack","updates":[{"version":""}]}`},
		}, Ready},
		// §3 limits: an ack carries at most 100 updates (1008).
		{"ack with too many updates", ready, []input{
			{in: ackN(MaxAckUpdates + 1), want: []string{"refused ack_updates", "close 1008 too many ack updates"}},
		}, Ready},

		// §3 nack: "no reply, recorded"; the message stays unacked.
		{"nack", ready, []input{
			{deliver: notification(ch1, 7)},
			{in: nack(version(u1, ch1, 7), 302), want: []string{"produce nacked U1 p=3 o=7 ch=" + ch1 + " code=302", "count-nack 302"}},
			{in: nack(version(u1, ch1, 7), 999), want: []string{"produce nacked U1 p=3 o=7 ch=" + ch1 + " code=0", "count-nack 0"}},
			// Still delivered here: its ack is free and needs no opening.
			{in: ack(version(u1, ch1, 7), 100), want: []string{"produce acked U1 p=3 o=7 ch=" + ch1 + " code=100", "count-ack 100", "owner-acked p=3 o=7"}},
		}, Ready},
		{"nack of an unknown version is ignored", ready, []input{{in: nack("garbage", 301)}, {in: nack(version(u9, ch1, 1), 301)}}, Ready},

		// §3 ping: `{}` (or messageType ping) is answered `{}`; more often
		// than MinClientPing closes with 4774.
		{"ping", ready, []input{
			{in: `{}`, want: []string{"send {}"}},
			{after: 45 * time.Second, in: `{"messageType":"ping"}`, want: []string{"send {}"}},
			{after: 44 * time.Second, in: " { } ", want: []string{"close 4774 too many pings"}},
		}, Ready},

		// §3 broadcasts: broadcast_subscribe; unknown ids under "errors";
		// a change of a subscribed id is sent to the client.
		{"broadcast_subscribe", ready, []input{
			{in: subscribe(map[string]string{"b1": "old", "zz": "1"}), want: []string{`send {"messageType":"broadcast","broadcasts":{"b1":"v1","errors":{"zz":"Broadcast not found"}}}`}},
			{in: subscribe(map[string]string{"b2": "v2"})}, // up to date: no reply
			{changed: map[string]string{"b1": "v9", "b2": "v8", "zz": "2"}, want: []string{`send {"messageType":"broadcast","broadcasts":{"b1":"v9","b2":"v8"}}`}},
			{changed: map[string]string{"b3": "1"}},
		}, Ready},
		{"broadcast_subscribe too big", ready, []input{{in: subscribe(tooManyBroadcasts), want: []string{"refused broadcasts", "close 1008 too many or too long broadcasts"}}}, Ready},
		{"a broadcast change before hello is not sent", fresh, []input{{changed: map[string]string{"b1": "v9"}}}, AwaitHello},

		// §3 limits: "message ... rates per socket are bounded" (4774):
		// every message but pings and acks of delivered notifications
		// takes a token; an ack takes one per update it opens, or one when
		// it matches nothing delivered.
		{"message rate", ready, []input{
			{in: nack("garbage", 301)}, {in: nack("garbage", 301)}, {in: nack("garbage", 301)},
			{in: nack("garbage", 301)}, {in: nack("garbage", 301)}, {in: nack("garbage", 301)},
			{in: `{}`, want: []string{"send {}"}}, // pings are not counted
			{in: nack("garbage", 301), want: []string{"refused message_rate", "close 4774 too many messages"}},
		}, Ready},
		{"message rate: a token back every period/n", ready, []input{
			{in: ack("garbage", 100)}, {in: ack("garbage", 100)}, {in: ack("garbage", 100)},
			{in: ack("garbage", 100)}, {in: ack("garbage", 100)}, {in: ack("garbage", 100)},
			{after: 10 * time.Second, in: ack("garbage", 100)},
			{in: ack("garbage", 100), want: []string{"refused message_rate", "close 4774 too many messages"}},
		}, Ready},
		{"message rate: acks of delivered notifications are free", ready, deliveredAcks(10), Ready},
		{"message rate: an ack pays per update it opens", ready, []input{
			{in: acks(version(u1, ch1, 1), version(u1, ch1, 2), version(u1, ch1, 3), version(u1, ch1, 4), version(u1, ch1, 5), version(u1, ch1, 6), version(u1, ch1, 7)), want: slices.Concat(
				acked(1), acked(2), acked(3), acked(4), acked(5), acked(6),
				[]string{"refused message_rate", "close 4774 too many messages"})},
		}, Ready},

		// A socket that cannot keep up is closed (1013); its messages stay
		// pending at the owner.
		{"send queue full", ready, []input{{full: true, want: []string{"close 1013 send queue full"}}}, Ready},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t, tt.from)
			for i, s := range tt.steps {
				got := r.step(s)
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d:\n got  %q\n want %q", i, got, s.want)
				}
			}
			if p := r.c.Phase(); p != tt.phase {
				t.Fatalf("phase %v, want %v", p, tt.phase)
			}
		})
	}
}

// TestMachineTick: the socket timers, decided for the one sweeper that
// checks every socket. §3 hello: "hello must be the first message (within
// 5 s, configurable)"; §3 ping: "The server also sends WebSocket Ping
// frames on idle sockets (default every 300 s, close when the Pong does not
// come)". Any data from the client resets LastRecv and PingSent (the
// socket layer's part).
func TestMachineTick(t *testing.T) {
	s := int64(time.Second)
	since := int64(t0) * s
	tests := []struct {
		name string
		from start
		now  int64
		l    Liveness
		want []string
	}{
		{"no hello yet, in time", fresh, since + 5*s, Liveness{Since: since, LastRecv: since}, nil},
		{"no hello in time", fresh, since + 5*s + 1, Liveness{Since: since, LastRecv: since}, []string{"close 1002 no hello"}},
		{"identifying: the hello is being answered", identifying, since + 60*s, Liveness{Since: since, LastRecv: since}, nil},
		{"ready, not idle", ready, since + 300*s, Liveness{Since: since, LastRecv: since}, nil},
		{"ready, idle: ping", ready, since + 300*s + 1, Liveness{Since: since, LastRecv: since}, []string{"ping"}},
		{"pinged, pong not yet due", ready, since + 330*s, Liveness{Since: since, LastRecv: since, PingSent: since + 300*s}, nil},
		{"pinged, no pong", ready, since + 330*s + 1, Liveness{Since: since, LastRecv: since, PingSent: since + 300*s}, []string{"close 1001 no pong"}},
		{"closed", closed, since + 3600*s, Liveness{Since: since, LastRecv: since, PingSent: since}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t, tt.from)
			if got := r.render(r.c.Tick(r.env, tt.now, tt.l)); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMachineClose: closing returns the phase it left (a Ready client is
// detached and its Disconnected recorded by the socket layer) and drops the
// unacked notifications.
func TestMachineClose(t *testing.T) {
	for _, from := range []start{fresh, ready, closed} {
		r := newRunner(t, from)
		want := r.c.Phase()
		r.c.Delivered(*notification(ch1, 1))
		if got := r.c.Close(); got != want {
			t.Errorf("Close from %v returned %v", want, got)
		}
		if r.c.Phase() != Closed || r.c.unacked != nil {
			t.Errorf("after Close from %v: phase %v, unacked %v", want, r.c.Phase(), r.c.unacked)
		}
	}
}

// TestMachineUnackedBound: at most MaxUnacked notifications are
// remembered; acks of the others open their version.
func TestMachineUnackedBound(t *testing.T) {
	r := newRunner(t, ready)
	for i := range MaxUnacked + 10 {
		r.c.Delivered(*notification(ch1, i))
	}
	r.c.Delivered(link.Notification{ChannelID: ch1, Version: "no-ref"})
	if len(r.c.unacked) != MaxUnacked {
		t.Fatalf("%d unacked remembered, want %d", len(r.c.unacked), MaxUnacked)
	}
}

// TestNotificationFrames: §3 notification: data base64url and its content
// headers; no data/headers for an empty body; never TTL, Topic, Urgency or
// VAPID.
func TestNotificationFrames(t *testing.T) {
	tests := []struct {
		name string
		n    link.Notification
		want string
	}{
		{"aes128gcm", link.Notification{UAID: u1.String(), ChannelID: ch1, Version: "v", Data: []byte{0xfb, 0xff}, Encoding: "aes128gcm"},
			`{"messageType":"notification","channelID":"` + ch1 + `","version":"v","data":"-_8","headers":{"encoding":"aes128gcm"}}`},
		{"aesgcm", link.Notification{ChannelID: ch1, Version: "v", Data: []byte{1}, Encoding: "aesgcm", Encryption: "salt=x", CryptoKey: "dh=y"},
			`{"messageType":"notification","channelID":"` + ch1 + `","version":"v","data":"AQ","headers":{"encoding":"aesgcm","encryption":"salt=x","crypto_key":"dh=y"}}`},
		// Issue 13: the sender's headers as ingest forwarded them, verbatim:
		// keyid on both, several sections, rs, p256ecdsa, spaces.
		{"aesgcm as forwarded", link.Notification{ChannelID: ch1, Version: "v", Data: []byte{1}, Encoding: "aesgcm",
			Encryption: "keyid=b; salt=x;rs=4096", CryptoKey: "keyid=a;dh=y,keyid=b;dh=z,p256ecdsa=k"},
			`{"messageType":"notification","channelID":"` + ch1 + `","version":"v","data":"AQ","headers":{"encoding":"aesgcm","encryption":"keyid=b; salt=x;rs=4096","crypto_key":"keyid=a;dh=y,keyid=b;dh=z,p256ecdsa=k"}}`},
		{"empty body", link.Notification{ChannelID: ch1, Version: "v", Encoding: "aes128gcm", Ref: &pb.MessageRef{Offset: 1}},
			`{"messageType":"notification","channelID":"` + ch1 + `","version":"v"}`},
	}
	for _, tt := range tests {
		b, err := EncodeNotification(tt.n)
		if err != nil || string(b) != tt.want {
			t.Errorf("%s: %s, %v\nwant %s", tt.name, b, err, tt.want)
		}
	}
}

// FuzzMachine: no sequence of client frames makes the machine panic, and
// whatever it asks is well formed (a close has a code; a request has a
// kind), whichever result its requests get.
func FuzzMachine(f *testing.F) {
	for _, s := range []string{
		hello(""), hello(u1.String()), register(ch1), registerKey(ch2, appKey), unregister(ch1, 200),
		ack(version(u1, ch1, 1), 100), nack("x", 301), `{}`, subscribe(map[string]string{"b1": "x"}), "\xff", `[`,
	} {
		f.Add([]byte(s), []byte(`{}`), uint8(0))
	}
	f.Fuzz(func(t *testing.T, first, second []byte, results uint8) {
		env := testEnv()
		var c Client
		now := time.Unix(t0, 0)
		for i, data := range [][]byte{first, second, first} {
			out := c.Receive(env, now, data)
			for n := 0; ; n++ {
				for _, e := range out.Effects {
					if e.Kind == 0 || (e.Kind == Close && e.Code == 0) {
						t.Fatalf("frame %d: bad effect %+v", i, e)
					}
				}
				if out.Await == nil {
					break
				}
				if out.Await.Kind == 0 || n > 10 {
					t.Fatalf("frame %d: bad request %+v", i, out.Await)
				}
				res := Result{Claimed: results&1 == 0, Info: link.UAIDInfo{Valid: results&2 == 0}}
				if results&4 != 0 {
					res.Err = errors.New("fail")
				}
				if out.Await.Kind == Claim && res.Claimed {
					c.Bind(out.Await.UAID)
				}
				out = c.Resume(env, now, out.Await, res)
			}
			now = now.Add(time.Second)
		}
	})
}

// runner drives one client through steps, as the socket layer would.
type runner struct {
	t       *testing.T
	env     *Env
	c       *Client
	now     time.Time
	pending *Request
	names   *strings.Replacer
}

func newRunner(t *testing.T, from start) *runner {
	t.Helper()
	r := &runner{t: t, env: testEnv(), c: &Client{}, now: time.Unix(t0, 0)}
	var pairs []string
	pairs = append(pairs, u1.String(), "U1", u9.String(), "U9")
	for n := byte(1); n < 5; n++ {
		pairs = append(pairs, schema.UAID{0: 0xaa, 15: n}.String(), fmt.Sprint("N", n))
	}
	r.names = strings.NewReplacer(pairs...)
	if from == fresh {
		return r
	}
	if from == identifying {
		if got := r.step(input{in: hello("")}); !slices.Equal(got, []string{"count-hello new", "await claim N1"}) {
			t.Fatalf("hello: got %q", got)
		}
		return r
	}
	chans := []string{ch1}
	if from == readyFull {
		chans = []string{ch1, ch2, ch3}
	}
	res := checked(true, chans...)
	res.Info.Partial = from == readyPartial
	for _, s := range []input{
		{in: hello(u1.String()), want: []string{"await check-uaid U1"}},
		{resume: res, want: []string{"count-hello known", "await claim U1"}},
		{resume: claimed, want: []string{"connected", `await greet {"messageType":"hello","uaid":"U1","status":200,"use_webpush":true,"broadcasts":{}}`}},
		{resume: ok, want: []string{"await attach U1"}},
		{resume: ok},
	} {
		if got := r.step(s); !slices.Equal(got, s.want) {
			t.Fatalf("hello: got %q, want %q", got, s.want)
		}
	}
	if from == closed {
		r.c.Close()
	}
	if from == readySealFails {
		r.env.Sealer = &fakeSealer{sealErr: errors.New("no key")}
	}
	// The clock moves on: the hello's time is not the tests'.
	r.now = r.now.Add(time.Hour)
	return r
}

func (r *runner) step(s input) []string {
	r.t.Helper()
	r.now = r.now.Add(s.after)
	var out Output
	switch {
	case s.binary:
		out = r.c.Binary()
	case s.resume != nil:
		if r.pending == nil {
			r.t.Fatal("resume without a pending request")
		}
		if r.pending.Kind == Claim && s.resume.Claimed {
			r.c.Bind(r.pending.UAID) // what the socket layer's claim does
		}
		out = r.c.Resume(r.env, r.now, r.pending, *s.resume)
	case s.deliver != nil:
		r.c.Delivered(*s.deliver)
		return nil
	case s.changed != nil:
		out = r.c.BroadcastsChanged(r.env, s.changed)
	case s.full:
		out = r.c.QueueFull()
	case s.close:
		return []string{"closed-from " + r.c.Close().String()}
	default:
		out = r.c.Receive(r.env, r.now, []byte(s.in))
	}
	r.pending = out.Await
	return r.render(out)
}

func (r *runner) render(out Output) []string {
	var lines []string
	for _, e := range out.Effects {
		var l string
		switch e.Kind {
		case Send:
			l = "send " + string(e.Frame)
		case Produce:
			l = "produce " + renderEvent(e.Event)
		case OwnerAcked:
			l = fmt.Sprintf("owner-acked p=%d o=%d", e.Ref.GetPartition(), e.Ref.GetOffset())
		case Connected:
			l = "connected"
		case Disconnected:
			l = "disconnected"
		case Detach:
			l = "detach"
		case Close:
			l = fmt.Sprintf("close %d %s", e.Code, e.Reason)
		case Ping:
			l = "ping"
		case Refused:
			l = "refused " + e.Limit
		case CountHello:
			l = "count-hello " + [...]string{"known", "new", "reset"}[e.Code]
		case CountUnknownUnregister:
			l = "count-unknown-unregister"
		case CountAck:
			l = fmt.Sprint("count-ack ", e.Code)
		case CountNack:
			l = fmt.Sprint("count-nack ", e.Code)
		default:
			l = fmt.Sprintf("unknown effect %+v", e)
		}
		lines = append(lines, r.names.Replace(l))
	}
	if q := out.Await; q != nil {
		var l string
		switch q.Kind {
		case CheckUAID:
			l = "await check-uaid " + q.UAID.String()
		case ProduceSync:
			l = "await produce-sync " + renderEvent(q.Event)
		case Claim:
			l = "await claim " + q.UAID.String()
		case Greet:
			l = "await greet " + string(q.Frame)
		case Attach:
			l = "await attach " + q.UAID.String()
		default:
			l = fmt.Sprintf("unknown request %+v", q)
		}
		lines = append(lines, r.names.Replace(l))
	}
	return lines
}

// renderEvent names an event's type, UAID and the fields that matter (the
// text format of protobuf is deliberately unstable, so not that).
func renderEvent(ev *pb.Event) string {
	s := schema.TypeName(ev) + " " + ev.GetUaid()
	switch b := ev.GetBody().(type) {
	case *pb.Event_ChannelRegistered:
		key := "none"
		if len(b.ChannelRegistered.GetKeyHash()) == 32 {
			key = "sha256"
		}
		s += fmt.Sprintf(" ch=%s key=%s", b.ChannelRegistered.GetChannelId(), key)
	case *pb.Event_ChannelUnregistered:
		s += fmt.Sprintf(" ch=%s code=%d", b.ChannelUnregistered.GetChannelId(), b.ChannelUnregistered.GetCode())
	case *pb.Event_UserReset:
		s += " reason=" + b.UserReset.GetReason()
	case *pb.Event_Acked:
		m := b.Acked.GetMsg()
		s += fmt.Sprintf(" p=%d o=%d ch=%s code=%d", m.GetPartition(), m.GetOffset(), m.GetChannelId(), b.Acked.GetCode())
	case *pb.Event_Nacked:
		m := b.Nacked.GetMsg()
		s += fmt.Sprintf(" p=%d o=%d ch=%s code=%d", m.GetPartition(), m.GetOffset(), m.GetChannelId(), b.Nacked.GetCode())
	}
	if len(ev.GetId()) != 16 {
		s += " (no event id)"
	}
	return s
}

// Client frames.

func hello(uaid string) string {
	if uaid == "" {
		return `{"messageType":"hello","use_webpush":true}`
	}
	return `{"messageType":"hello","use_webpush":true,"uaid":"` + uaid + `"}`
}

func helloWith(b map[string]string) string {
	return `{"messageType":"hello","use_webpush":true,"broadcasts":` + jsonMap(b) + `}`
}

func subscribe(b map[string]string) string {
	return `{"messageType":"broadcast_subscribe","broadcasts":` + jsonMap(b) + `}`
}

func jsonMap(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%q:%q", k, v))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func register(ch string) string { return `{"messageType":"register","channelID":"` + ch + `"}` }

func registerKey(ch, key string) string {
	return `{"messageType":"register","channelID":"` + ch + `","key":"` + key + `"}`
}

func unregister(ch string, code int) string {
	return fmt.Sprintf(`{"messageType":"unregister","channelID":%q,"code":%d}`, ch, code)
}

func ack(version string, code int) string {
	return fmt.Sprintf(`{"messageType":"ack","updates":[{"channelID":%q,"version":%q,"code":%d}]}`, ch1, version, code)
}

func acks(versions ...string) string {
	var ups []string
	for _, v := range versions {
		ups = append(ups, fmt.Sprintf(`{"channelID":%q,"version":%q,"code":100}`, ch1, v))
	}
	return `{"messageType":"ack","updates":[` + strings.Join(ups, ",") + `]}`
}

func ackN(n int) string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = "garbage"
	}
	return acks(vs...)
}

func nack(version string, code int) string {
	return fmt.Sprintf(`{"messageType":"nack","version":%q,"code":%d}`, version, code)
}

func notification(ch string, off int) *link.Notification {
	return &link.Notification{UAID: u1.String(), ChannelID: ch, Version: version(u1, ch, off),
		Ref: &pb.MessageRef{Partition: 3, Offset: int64(off), ChannelId: ch}}
}

// acked is what the ack of offset off of CH1 produces.
func acked(off int) []string {
	return []string{fmt.Sprintf("produce acked U1 p=3 o=%d ch=%s code=100", off, ch1), "count-ack 100", fmt.Sprintf("owner-acked p=3 o=%d", off)}
}

// deliveredAcks delivers n notifications (more than MaxMessagesPerMinute)
// and acks each: none is refused.
func deliveredAcks(n int) []input {
	var steps []input
	for i := range n {
		steps = append(steps, input{deliver: notification(ch1, i)})
	}
	for i := range n {
		steps = append(steps, input{in: ack(version(u1, ch1, i), 100), want: acked(i)})
	}
	return steps
}

func keyHashPrefix(key string) string {
	raw, err := parseAppServerKey(key)
	if err != nil {
		panic(err)
	}
	sum := sha256Sum(raw)
	return fmt.Sprintf("%x", sum[:2])
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
