// Package protocol is the WebSocket push protocol of Firefox's push client
// (PROTOCOL.md section 3) as a state machine without I/O, after autopush's
// UnidentifiedClient → WebPushClient.
//
// A Client is one socket's protocol state: its phase (awaiting hello,
// identifying, ready, closed), its UAID, the channels it knows, its rate
// buckets, the notifications it has delivered but not seen acked, and its
// broadcast subscriptions. Its methods take what happened (a frame from the
// client, the result of an owner call, a notification to deliver, a
// broadcast change, a full send queue, a sweep of the socket timers) and
// the time, and return an Output: the effects to perform in order (frames
// to write, events to produce, owner calls, a close with its code,
// counters) and at most one Request whose result the machine needs before
// it can go on (the owner's answer at hello, a durable write before a
// register reply). The socket layer (the connector package) performs both
// and hands the Request's Result back to Resume.
//
// The machine has no sockets, goroutines or clocks, so every transition
// is tested without a socket (machine_test.go).
//
// Files: machine.go (the client, its phases, effects and requests, the
// dispatch and the timers), hello.go, channels.go (register, unregister),
// acks.go (deliveries, ack, nack), broadcast.go, limits.go, messages.go
// (the wire format).
//
// Concurrency: Phase and Tick read only the atomic phase and may be called
// from any goroutine; Bind and UAID are ordered by the socket layer's
// registry lock (see Bind); every other method must be serialized by the
// caller (the connector holds its per-connection mutex around each call,
// which never blocks: the machine does no I/O).
package protocol

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Phase is where a client is in the protocol.
type Phase int32

const (
	AwaitHello  Phase = iota // upgraded, no hello yet
	Identifying              // the hello is being answered
	Ready                    // identified: attached to the owner
	Closed                   // the socket is closing or closed
)

func (p Phase) String() string {
	switch p {
	case AwaitHello:
		return "await-hello"
	case Identifying:
		return "identifying"
	case Ready:
		return "ready"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("phase(%d)", int32(p))
}

// WebSocket close codes the machine decides (RFC 6455 and autopush's).
const (
	CloseNormal      = 1000 // replaced by a newer connection
	CloseGoingAway   = 1001 // shutdown, dead peer, internal error
	CloseProtocol    = 1002 // bad JSON, unknown type, no or second hello
	CloseUnsupported = 1003 // binary frame
	CloseInvalidData = 1007 // text that is not UTF-8
	ClosePolicy      = 1008 // a message past a size bound
	CloseTryAgain    = 1013 // owner or Kafka unavailable, send queue full: retry
	// CloseBackoff tells Firefox not to reconnect until the network
	// changes: autopush sends it to clients that ping far too often.
	CloseBackoff = 4774
)

// Register/unregister reply statuses (autopush's, and the limits').
const (
	StatusOK         = 200
	StatusBadKey     = 400 // the application server key is not a P-256 point
	StatusBadChannel = 401 // the channelID is not a lowercase dashed UUID
	// StatusTooManyChannels: the UAID holds MaxChannels channels. Not 409,
	// which autopush answers when the channel id belongs to another UAID
	// (a client may then retry with a new id, which would only loop here);
	// 413 says "the set is at its size limit" and Firefox, like for any
	// status but 200, fails the subscription and keeps the socket.
	StatusTooManyChannels = 413
	// StatusTooManyRequests: the socket's registration rate is exhausted;
	// nothing was written, the client may retry later.
	StatusTooManyRequests = 429
	StatusError           = 500 // the registration could not be written; retry
)

// Ack and nack codes Firefox sends.
const (
	AckDelivered = 100
	AckLast      = 102 // 101 decryption failed, 102 not delivered
	NackFirst    = 301
	NackLast     = 303
)

// HelloKind says what became of the UAID a hello carried.
type HelloKind int

const (
	HelloKnown HelloKind = iota // kept: the owner knows it
	HelloNew                    // none or malformed: a new one issued
	HelloReset                  // unknown to the owner: reset, a new one issued
)

// Sealer seals endpoints and opens message ids (schema.Sealer).
type Sealer interface {
	SealEndpoint(schema.Endpoint) (string, error)
	OpenMessageID(string) (schema.MessageID, error)
}

// Env is what every client of a node shares: the settings the machine
// decides by and the pure helpers it calls. It is passed to each call
// rather than kept per client (an idle client costs no pointer to it).
type Env struct {
	PublicURL string // endpoint base: PublicURL + "/wpush/v1/" + token (v2 with a key)
	// MaxChannels bounds the channels of a UAID (register past it: 413).
	MaxChannels int
	// MaxRegistrationsPerMinute bounds the registers and unregisters a
	// client writes (past it: 429, nothing written).
	MaxRegistrationsPerMinute int
	// MaxMessagesPerMinute bounds the client's messages after hello (past
	// it: close 4774); acks of notifications it was delivered are free,
	// pings have MinClientPing.
	MaxMessagesPerMinute int
	// MinClientPing: a client sending `{}` more often is closed (4774).
	MinClientPing time.Duration
	// HelloTimeout: a client that sends no hello this long after the
	// upgrade is closed (1002).
	HelloTimeout time.Duration
	// PingInterval: a Ready socket idle this long is sent a WebSocket
	// Ping; PongTimeout: it is closed (1001) when nothing follows the Ping
	// this long.
	PingInterval, PongTimeout time.Duration
	Sealer                    Sealer
	Broadcasts                *Broadcasts
	NewUAID                   func() schema.UAID // nil: schema.RandomUAID
	Log                       *slog.Logger       // nil: no logs
	// Clock is what the rate buckets count on; its Epoch is when the
	// server started.
	Clock Clock
}

func (e *Env) newUAID() schema.UAID {
	if e.NewUAID != nil {
		return e.NewUAID()
	}
	return schema.RandomUAID()
}

func (e *Env) log() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Client is one socket's protocol state. The zero value awaits a hello.
//
// Memory matters (DESIGN.md: at most 4 KB per idle connection): an idle
// client holds its UAID by value, its channels (16 bytes each), two rate
// buckets of one number each, and no map until a notification is in
// flight.
type Client struct {
	uaid     schema.UAID
	lastPing int64 // unix nanoseconds of the client's last `{}`
	chans    chanSet
	regRate  Rate // registers and unregisters written (MaxRegistrationsPerMinute)
	msgRate  Rate // client messages (MaxMessagesPerMinute)
	unacked  map[string]*pb.MessageRef
	bcast    []string // subscribed broadcast ids (the table's shared strings)
	bgen     uint64   // the broadcast table's generation the client was told about
	phase    atomic.Int32
}

// Phase returns the client's phase; safe from any goroutine.
func (c *Client) Phase() Phase { return Phase(c.phase.Load()) }

// UAID is the client's UAID (zero before it was bound).
func (c *Client) UAID() schema.UAID { return c.uaid }

// Bind records the UAID the socket layer registered the client under. The
// socket layer calls it while it performs a Claim request, under the lock
// of its registry, so that a concurrent close finds the UAID to forget.
func (c *Client) Bind(uaid schema.UAID) { c.uaid = uaid }

// Close moves the client to Closed, drops what only a live socket needs,
// and returns the phase it was in: a client that was Ready must be
// detached from the owner and its Disconnected recorded.
func (c *Client) Close() Phase {
	c.unacked = nil
	return Phase(c.phase.Swap(int32(Closed)))
}

// EffectKind says what an Effect asks of the socket layer.
type EffectKind uint8

const (
	Send                   EffectKind = iota + 1 // write Frame to the client
	Produce                                      // write Event without waiting (no reply depends on it)
	OwnerAcked                                   // tell the owner at once that Ref was acked (Link.Acked)
	Connected                                    // record the client's presence (the Connected event)
	Disconnected                                 // record its end (the Disconnected event)
	Detach                                       // forget the session at the owner (Link.Detach)
	Close                                        // close the socket with Code and Reason
	Ping                                         // send a WebSocket Ping (the socket is idle)
	Refused                                      // count a refusal of Limit
	CountHello                                   // count a hello of HelloKind(Code)
	CountUnknownUnregister                       // count an unregister of a channel the UAID does not have
	CountAck                                     // count an ack with Code
	CountNack                                    // count a nack with Code
)

// Effect is one thing the socket layer does for the machine, in order.
type Effect struct {
	Kind   EffectKind
	Frame  []byte         // Send
	Event  *pb.Event      // Produce
	Ref    *pb.MessageRef // OwnerAcked
	Code   int            // Close: the close code; CountHello: the kind; CountAck, CountNack: the code
	Reason string         // Close
	Limit  string         // Refused
}

// RequestKind says which I/O a Request asks for.
type RequestKind uint8

const (
	// CheckUAID: ask the owner about UAID (Link.CheckUAID); Result.Info
	// or Result.Err.
	CheckUAID RequestKind = iota + 1
	// ProduceSync: write Event and wait until it is durable; Result.Err.
	ProduceSync
	// Claim: make the socket UAID's connection (closing an older one) and
	// Bind the UAID; Result.Claimed is false when the socket closed
	// meanwhile.
	Claim
	// Greet: write Frame (the hello reply); Result.Err.
	Greet
	// Attach: attach the socket to the owner of UAID, which then delivers
	// the stored messages (Link.Attach); Result.Err.
	Attach
)

// Request is I/O whose result the machine needs to go on: perform it and
// pass it back, with its Result, to Resume. The unexported fields carry the
// step to resume, so a client keeps nothing while it waits.
type Request struct {
	Kind  RequestKind
	UAID  schema.UAID
	Event *pb.Event // ProduceSync
	Frame []byte    // Greet

	then       step
	chid       string
	id         [16]byte
	endpoint   string
	info       link.UAIDInfo
	subs       []string
	bgen       uint64
	broadcasts map[string]string
}

// Result is the outcome of a Request.
type Result struct {
	Err     error
	Info    link.UAIDInfo // CheckUAID
	Claimed bool          // Claim
}

type step uint8

const (
	stepChecked      step = iota + 1 // CheckUAID answered
	stepReset                        // the unknown UAID's UserReset written
	stepClaimed                      // the socket is the UAID's
	stepGreeted                      // the hello reply written
	stepAttached                     // attached to the owner
	stepRegistered                   // ChannelRegistered written
	stepUnregistered                 // ChannelUnregistered written
)

// Output is what one step asks of the socket layer: perform Effects in
// order, then Await (if any) and Resume with its result.
type Output struct {
	Effects []Effect
	Await   *Request
}

func (o *Output) add(e Effect) { o.Effects = append(o.Effects, e) }

func (o *Output) send(frame []byte) { o.add(Effect{Kind: Send, Frame: frame}) }

func (o *Output) close(code int, reason string) {
	o.add(Effect{Kind: Close, Code: code, Reason: reason})
}

func (o *Output) refused(limit string) { o.add(Effect{Kind: Refused, Limit: limit}) }

func (o *Output) reply(v any) {
	msg, err := marshal(v)
	if err != nil {
		o.close(CloseGoingAway, "internal error")
		return
	}
	o.send(msg)
}

func closeWith(code int, reason string) Output {
	var o Output
	o.close(code, reason)
	return o
}

// Binary answers a binary frame: the protocol is JSON text only.
func (c *Client) Binary() Output {
	return closeWith(CloseUnsupported, "binary messages are not supported")
}

// QueueFull answers a socket that cannot keep up with what is sent to it:
// closed, its messages stay pending at the owner and are sent again on
// reconnect.
func (c *Client) QueueFull() Output {
	return closeWith(CloseTryAgain, "send queue full")
}

// Liveness is what the socket layer knows of a socket's traffic, in unix
// nanoseconds.
type Liveness struct {
	Since    int64 // the upgrade
	LastRecv int64 // the last byte from the client
	PingSent int64 // an unanswered WebSocket Ping; 0 if none
}

// Tick checks a socket's timers at now (unix nanoseconds): a client that
// sent no hello within HelloTimeout is closed (1002); a Ready socket idle
// for PingInterval is pinged, and closed (1001) when nothing follows the
// Ping within PongTimeout. It reads only the phase, so it may be called
// from any goroutine (one sweeper checks every socket).
func (c *Client) Tick(env *Env, now int64, l Liveness) Output {
	switch c.Phase() {
	case AwaitHello:
		if now-l.Since > int64(env.HelloTimeout) {
			return closeWith(CloseProtocol, "no hello")
		}
	case Ready:
		if l.PingSent != 0 {
			if now-l.PingSent > int64(env.PongTimeout) {
				return closeWith(CloseGoingAway, "no pong")
			}
		} else if now-l.LastRecv > int64(env.PingInterval) {
			return Output{Effects: []Effect{{Kind: Ping}}}
		}
	}
	return Output{}
}

// Receive decodes one text frame from the client and handles it.
func (c *Client) Receive(env *Env, now time.Time, data []byte) Output {
	if !utf8.Valid(data) {
		return closeWith(CloseInvalidData, "text messages must be UTF-8")
	}
	m, err := Parse(data)
	if err != nil {
		env.log().Debug("bad client message", "uaid", c.uaid, "err", err)
		return closeWith(CloseProtocol, "invalid message")
	}
	return c.Handle(env, now, &m)
}

// Handle handles one decoded client message.
func (c *Client) Handle(env *Env, now time.Time, m *Message) Output {
	switch c.Phase() {
	case AwaitHello:
		if m.MessageType != typeHello {
			return closeWith(CloseProtocol, "the first message must be a hello")
		}
		return c.hello(env, m)
	case Ready:
	default:
		return Output{}
	}
	var out Output
	// Pings have their own bound (MinClientPing); acks pay per update.
	if m.MessageType != typePing && m.MessageType != typeAck && !c.spend(env, now, 1, &out) {
		return out
	}
	switch m.MessageType {
	case typeHello:
		out.close(CloseProtocol, "second hello")
	case typeRegister:
		c.register(env, m, now, &out)
	case typeUnregister:
		c.unregister(env, m, now, &out)
	case typeAck:
		c.ack(env, m, now, &out)
	case typeNack:
		c.nack(env, m, now, &out)
	case typePing:
		c.ping(env, now, &out)
	case typeBroadcastSubscribe:
		c.broadcastSubscribe(env, m, &out)
	}
	return out
}

// Resume goes on after the socket layer performed req.
func (c *Client) Resume(env *Env, now time.Time, req *Request, res Result) Output {
	switch req.then {
	case stepChecked:
		return c.checked(env, now, req, res)
	case stepReset:
		return c.reset(env, req, res)
	case stepClaimed:
		return c.claimed(req, res)
	case stepGreeted:
		return c.greeted(env, req, res)
	case stepAttached:
		return c.attached(env, req, res)
	case stepRegistered:
		return c.registered(env, req, res)
	case stepUnregistered:
		return c.unregistered(env, req, res)
	}
	return Output{}
}

// spend takes cost tokens of the client's message rate; past it the
// socket is closed with 4774 (autopush's "back off") and spend reports
// false.
func (c *Client) spend(env *Env, now time.Time, cost int, out *Output) bool {
	if c.msgRate.Allow(env.Clock.Nanos(now), env.MaxMessagesPerMinute, time.Minute, cost) {
		return true
	}
	out.refused(LimitMessages)
	env.log().Info("client message rate exceeded; closing", "uaid", c.uaid)
	out.close(CloseBackoff, "too many messages")
	return false
}

// ping answers `{}`; a client pinging more often than MinClientPing is
// told to back off (4774), as autopush does.
func (c *Client) ping(env *Env, now time.Time, out *Output) {
	n := env.Clock.Nanos(now)
	if c.lastPing != 0 && n-c.lastPing < int64(env.MinClientPing) {
		out.close(CloseBackoff, "too many pings")
		return
	}
	c.lastPing = n
	out.send(pingReply)
}
