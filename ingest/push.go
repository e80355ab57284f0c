package ingest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// Canonical header keys, looked up directly in the header map (net/http and
// its HTTP/2 server canonicalise incoming names, so "ttl" arrives as "Ttl").
const (
	hdrTTL             = "Ttl"
	hdrUrgency         = "Urgency"
	hdrTopic           = "Topic"
	hdrAuthorization   = "Authorization"
	hdrContentEncoding = "Content-Encoding"
	hdrEncryption      = "Encryption"
	hdrCryptoKey       = "Crypto-Key"
	hdrEncryptionKey   = "Encryption-Key"
	hdrLocation        = "Location"
)

// errClientGone marks a produce abandoned because the sender went away; it
// says nothing about Kafka, so the breaker ignores it.
var errClientGone = errors.New("client went away during produce")

func firstHeader(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// handlePush serves POST /wpush/v{version}/{token} (and autopush's
// /wpush/{token}: autopushLegacyVersion).
func (s *Server) handlePush(version int) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		ep, err := s.openEndpoint(version, c.Param("token"))
		if err != nil {
			return err
		}
		if req.ContentLength > int64(s.cfg.MaxBody) {
			return s.refuse(reasonBody, errTooLarge)
		}
		if aerr := s.checkCryptoSize(req.Header); aerr != nil {
			return aerr
		}
		auth, aerr := s.authenticate(req.Header, ep)
		if aerr != nil {
			return aerr
		}
		if aerr := s.checkGone(ep); aerr != nil {
			return aerr
		}
		if aerr := s.checkQuota(req, ep, auth); aerr != nil { // quota.go: 429, never written
			return aerr
		}
		ae, aerr := s.parseNotification(req.Header)
		if aerr != nil {
			return aerr
		}
		msg := &ae.msg
		msg.ChannelId, msg.KeyBound = ep.ChannelID, version == 2
		if auth.ok {
			msg.VapidSub, msg.VapidKeyHash = auth.sub, auth.keyHash[:]
		}
		receiptSub, receiptLink, aerr := s.receiptRequest(req, auth) // receipts.go: RFC 8030 §5.1
		if aerr != nil {
			return aerr
		}
		msg.ReceiptSub = receiptSub
		if receiptLink != "" { // unset reads as "": no map per push
			c.Set(ctxReceiptLink, receiptLink)
		}
		rec, key, aerr := s.messageRecord(req, ep, ae)
		if aerr != nil {
			return aerr
		}
		if key == nil {
			// Bodiless pushes are not deduplicated: two of them are
			// indistinguishable from a retry, and cost nothing twice.
			if aerr := s.produce(req.Context(), rec, nil); aerr != nil {
				return aerr
			}
			return s.created(c, ep, rec.Partition, rec.Offset, msg.TtlS)
		}
		return s.produceOnce(c, ep, rec, *key, msg.TtlS)
	}
}

// produceOnce appends a push with a body unless it is a retry of one this
// process already appended or is still appending (same UAID, channel and
// byte-identical body, within the original's TTL): then it answers 201
// with the original's Location, waiting up to ProduceTimeout for an append
// still in flight. Encrypted bodies are never identical by chance.
func (s *Server) produceOnce(c echo.Context, ep schema.Endpoint, rec *kgo.Record, key dedupKey, ttl int64) error {
	ctx := c.Request().Context()
	deadline := time.Now().Add(s.cfg.ProduceTimeout)
	// Twice at most: when the copy waited on turns out not written, this
	// request appends its own, once.
	for range 2 {
		// A push that would be refused claims no entry, but a retry of one
		// appended (or in flight) is still answered while Kafka is out.
		if aerr := s.refusedNow(); aerr != nil && !s.dedup.live(key) {
			return aerr
		}
		e, done, owner := s.dedup.claim(key, ttl)
		if owner {
			settle := func(r *kgo.Record, err error) { s.dedup.settle(key, e, r.Partition, r.Offset, err) }
			if aerr := s.produce(ctx, rec, settle); aerr != nil {
				return aerr
			}
			return s.created(c, ep, rec.Partition, rec.Offset, ttl)
		}
		if done != nil {
			if aerr := waitSettled(ctx, done, deadline); aerr != nil {
				return aerr
			}
		}
		if ok, partition, offset, origTTL := s.dedup.result(e); ok {
			s.dedup.hits.Add(1)
			return s.created(c, ep, partition, offset, origTTL)
		}
	}
	return unavailable("Service temporarily unavailable: the message was not written", 1)
}

// waitSettled waits for an identical push's append to settle, until
// deadline.
func waitSettled(ctx context.Context, done <-chan struct{}, deadline time.Time) *apiError {
	wait := time.NewTimer(time.Until(deadline))
	defer wait.Stop()
	select {
	case <-done:
		return nil
	case <-wait.C:
		return unavailable("An identical message is still being written and may have been written: retry later", 1)
	case <-ctx.Done():
		return unavailable("Request cancelled while an identical message was being written", 1)
	}
}

// checkCryptoSize bounds the crypto headers together, before any parsing:
// they are stored with (and delivered beside) the body, so without a bound
// they bypass the body limit (issue 10 finding 3).
func (s *Server) checkCryptoSize(h http.Header) *apiError {
	n := 0
	for _, k := range []string{hdrEncryption, hdrCryptoKey, hdrEncryptionKey} {
		for _, v := range h[k] {
			n += len(v)
		}
	}
	if n > s.cfg.MaxCryptoHeaders {
		return s.refuse(reasonCryptoHeaders, newError(http.StatusRequestEntityTooLarge, errnoPayloadTooLarge,
			fmt.Sprintf("Encryption and Crypto-Key headers too large: %d bytes, limit %d", n, s.cfg.MaxCryptoHeaders)))
	}
	return nil
}

// messageRecord reads the body, checks its content coding and encodes the
// MessageAccepted event; for a non-empty body it also returns the retry
// index key. The pooled body buffer is released as soon as the event is
// encoded, not held while Kafka is awaited.
func (s *Server) messageRecord(req *http.Request, ep schema.Endpoint, ae *acceptedEvent) (*kgo.Record, *dedupKey, *apiError) {
	msg := &ae.msg
	bufp := s.bodyPool.Get().(*[]byte)
	defer s.bodyPool.Put(bufp)
	body, aerr := s.readBody(req.Body, *bufp)
	if aerr != nil {
		return nil, nil, aerr
	}
	enc, aerr := checkEncoding(encodingHeaders{
		contentEncoding: req.Header[hdrContentEncoding],
		encryption:      firstHeader(req.Header, hdrEncryption),
		cryptoKey:       firstHeader(req.Header, hdrCryptoKey),
		encryptionKey:   firstHeader(req.Header, hdrEncryptionKey),
	}, len(body) > 0)
	if aerr != nil {
		return nil, nil, aerr
	}
	var key *dedupKey
	if len(body) > 0 {
		msg.Payload = body // copied by proto.Marshal in schema.Record
		k := dedupKeyOf(ep.UAID, ep.ChannelID, body)
		key = &k
	}
	msg.Encoding, msg.Encryption, msg.CryptoKey = enc.name, enc.encryption, enc.cryptoKey
	if aerr := s.checkBridgePayload(ep, msg); aerr != nil { // bridge_api.go: a bridge's limit, at ingest
		msg.Payload = nil
		return nil, nil, aerr
	}
	rec, err := s.cfg.Names.Record(ae.event(ep.UAID, s.now()))
	msg.Payload = nil // the buffer goes back to the pool
	if err != nil {
		s.log.Error("encode message", "uaid", ep.UAID, "err", err)
		return nil, nil, newError(http.StatusInternalServerError, errnoUnknown, "Could not encode the message")
	}
	if n := recordSize(rec); n > s.cfg.MaxEvent {
		// Unreachable with validated limits; kept so that no future field
		// can make a record the log refuses.
		s.log.Error("message record above MaxEvent", "uaid", ep.UAID, "bytes", n, "max", s.cfg.MaxEvent)
		return nil, nil, s.refuse(reasonEvent, newError(http.StatusRequestEntityTooLarge, errnoPayloadTooLarge,
			fmt.Sprintf("Message too large for the log: %d bytes", n)))
	}
	return rec, key, nil
}

// recordSize is the bytes a record takes in a Kafka batch, give or take
// varint framing.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// created answers 201 with the message's Location and the applied TTL.
func (s *Server) created(c echo.Context, ep schema.Endpoint, partition int32, offset int64, ttl int64) error {
	// The Location is built in one buffer (base, "/m/", id): one
	// allocation, the string, instead of four.
	var buf [256]byte
	loc := append(append(buf[:0], s.base...), "/m/"...)
	loc, err := s.cfg.Sealer.AppendMessageID(loc, schema.MessageID{
		UAID: ep.UAID, ChannelID: ep.ChannelID, Partition: partition, Offset: offset,
	})
	if err != nil {
		// The event is durable; the sender just cannot delete it.
		s.log.Error("seal message id", "uaid", ep.UAID, "err", err)
		return newError(http.StatusInternalServerError, errnoUnknown, "Could not seal the message id")
	}
	h := c.Response().Header()
	vals := []string{string(loc), strconv.FormatInt(ttl, 10)} // one backing array
	h[hdrLocation], h[hdrTTL] = vals[0:1:1], vals[1:2:2]
	c.Response().WriteHeader(receiptAccepted(c)) // 202 with a receipt (receipts.go)
	return nil
}

// authResult is the outcome of VAPID authentication.
type authResult struct {
	ok      bool // a VAPID header was present and verified
	sub     string
	keyHash [sha256.Size]byte
}

// authenticate verifies the VAPID Authorization header when present; a v2
// (key-bound) endpoint requires it, with the key the subscription was
// registered with.
func (s *Server) authenticate(h http.Header, ep schema.Endpoint) (authResult, *apiError) {
	raw := firstHeader(h, hdrAuthorization)
	if raw == "" {
		if ep.Version() == 2 {
			return authResult{}, unauthorized("Missing VAPID public key")
		}
		return authResult{}, nil
	}
	if len(raw) > s.cfg.MaxVAPIDToken+authHeaderSlack {
		return authResult{}, s.refuse(reasonVAPIDToken, errTokenTooLong)
	}
	a, aerr := parseAuthorization(raw)
	if aerr != nil {
		return authResult{}, aerr
	}
	if len(a.token) > s.cfg.MaxVAPIDToken {
		return authResult{}, s.refuse(reasonVAPIDToken, errTokenTooLong)
	}
	keyStr := a.key
	if keyStr == "" {
		// Legacy (draft) VAPID: the key travels in Crypto-Key: p256ecdsa=.
		ck, err := parseCryptoHeader(firstHeader(h, hdrCryptoKey))
		if err != nil {
			return authResult{}, unauthorized("Invalid Crypto-Key header")
		}
		v, ok := ck.get("p256ecdsa")
		if !ok {
			return authResult{}, unauthorized("Missing VAPID public key")
		}
		keyStr = v
	}
	key, err := decodeKey(keyStr)
	if err != nil {
		return authResult{}, unauthorized("Invalid VAPID public key")
	}
	if len(ep.KeyHash) > 0 {
		// Checked before the signature: a wrong key needs no verification.
		sum := sha256.Sum256(key[:])
		if subtle.ConstantTimeCompare(sum[:], ep.KeyHash) != 1 {
			return authResult{}, unauthorized("VAPID public key mismatch")
		}
	}
	res, aerr := s.vapid.verify(a.token, key)
	if aerr == errSubTooLong {
		return authResult{}, s.refuse(reasonVAPIDSub, aerr)
	}
	if aerr != nil {
		return authResult{}, aerr
	}
	return authResult{ok: true, sub: res.sub, keyHash: res.keyHash}, nil
}

func (s *Server) checkGone(ep schema.Endpoint) *apiError {
	if s.cfg.Gone == nil {
		return nil
	}
	channelGone, uaidReset := s.cfg.Gone.Gone(ep.UAID, ep.ChannelID)
	switch {
	case uaidReset:
		return errUAIDReset
	case channelGone:
		return errNoSubscription
	}
	return nil
}

// parseNotification validates TTL, Urgency and Topic into a MessageAccepted.
func (s *Server) parseNotification(h http.Header) (*acceptedEvent, *apiError) {
	ttl, aerr := parseTTL(h[hdrTTL], s.cfg.MaxTTL)
	if aerr != nil {
		return nil, aerr
	}
	topic, aerr := parseTopic(h[hdrTopic])
	if aerr != nil {
		return nil, aerr
	}
	urgency, aerr := parseUrgency(h[hdrUrgency])
	if aerr != nil {
		return nil, aerr
	}
	ae := new(acceptedEvent)
	ae.msg.TtlS, ae.msg.Topic, ae.msg.Urgency = ttl, topic, urgency
	return ae, nil
}

// acceptedEvent is a push's event, its oneof wrapper, body and id in one
// allocation instead of four: parseNotification fills msg, event the rest.
type acceptedEvent struct {
	msg  pb.MessageAccepted
	body pb.Event_MessageAccepted
	ev   pb.Event
	id   [16]byte
}

// event is schema.NewEvent(uaid, now) with the body msg.
func (e *acceptedEvent) event(uaid string, now time.Time) *pb.Event {
	_, _ = rand.Read(e.id[:]) // as schema.NewEventID
	e.body.MessageAccepted = &e.msg
	e.ev.Id, e.ev.TimeMs, e.ev.Uaid = e.id[:], now.UnixMilli(), uaid
	e.ev.Body = &e.body
	return &e.ev
}

// readBody reads at most MaxBody+1 bytes into buf (len MaxBody+1): one byte
// more than allowed proves the body too large without reading it all.
func (s *Server) readBody(r io.Reader, buf []byte) ([]byte, *apiError) {
	n, err := io.ReadFull(r, buf)
	switch {
	case err == nil:
		return nil, s.refuse(reasonBody, errTooLarge)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return buf[:n], nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, s.refuse(reasonBody, errTooLarge)
	}
	return nil, badRequest(errnoUnknown, "Could not read the request body")
}

// produce writes rec through the circuit breaker and waits until it is
// durable (acks=all). While the breaker is open it fails at once. promise,
// when set, learns the record's final outcome: called from kgo's promise
// (possibly after produce returned 503 on a timeout), or at once with an
// error when the record is never handed to Kafka.
func (s *Server) produce(ctx context.Context, rec *kgo.Record, promise func(*kgo.Record, error)) *apiError {
	if s.inFlight.Add(1) > int64(s.cfg.MaxInFlight) {
		s.inFlight.Add(-1)
		notProduced(promise, rec)
		return errOverloaded
	}
	defer s.inFlight.Add(-1)
	t, ok := s.breaker.allow()
	if !ok {
		notProduced(promise, rec)
		return s.errBreakerOpen()
	}
	if t.probe {
		// The producer may still hold the failed leader and, after a
		// failure, waits MetadataMinAge (kgo: 5s) before asking again;
		// an immediate refresh lets this probe find a moved leader.
		s.cfg.Producer.ForceMetadataRefresh()
	}
	s.produceCalls.Add(1)
	err := s.produceWait(ctx, rec, promise)
	s.breaker.done(t, err, errors.Is(err, errClientGone))
	if err == nil {
		if want := schema.Partition(rec.Key, s.cfg.Partitions); rec.Partition != want {
			// Owners would never see this record: the producer does not
			// partition like Kafka's default partitioner.
			s.log.Error("record landed on an unexpected partition", "topic", rec.Topic,
				"partition", rec.Partition, "want", want)
		}
		return nil
	}
	if errors.Is(err, errClientGone) {
		return unavailable("Request cancelled before the message was written", 1)
	}
	s.log.Warn("produce failed", "topic", rec.Topic, "err", err)
	if errors.Is(err, context.DeadlineExceeded) {
		return unavailable("Service temporarily unavailable: the message may have been written; a retry of the same message is recognised", s.openSecs)
	}
	return unavailable("Service temporarily unavailable: the message was not written", s.openSecs)
}

var errNotProduced = errors.New("record not handed to Kafka")

var errOverloaded = unavailable("Service overloaded: too many messages waiting on Kafka", 1)

func (s *Server) errBreakerOpen() *apiError {
	return unavailable("Service temporarily unavailable: Kafka is unreachable", s.openSecs)
}

// refusedNow is the answer produce would give at once (breaker open, too
// many appends waiting) or nil. Checked before the retry index is touched,
// so a refused push claims no entry; produce checks again (this is only a
// fast path, racing with other requests).
func (s *Server) refusedNow() *apiError {
	if s.inFlight.Load() >= int64(s.cfg.MaxInFlight) {
		return errOverloaded
	}
	if s.breaker.refusing() {
		return s.errBreakerOpen()
	}
	return nil
}

func notProduced(promise func(*kgo.Record, error), rec *kgo.Record) {
	if promise != nil {
		promise(rec, errNotProduced)
	}
}

// produceWait produces rec and waits for its acknowledgement, at most
// ProduceTimeout. It does not rely on kgo honouring the context: an
// idempotent producer keeps a record it has already sent until the broker
// answers (failing it could break sequence numbers), so ProduceSync may
// block for as long as Kafka is down. Here the wait ends on time; a record
// answered 503 may still be written later. That is why promise sees the
// final outcome: the retry index then answers the sender's retry with the
// original's Location instead of appending a duplicate.
//
// The record carries the request's own context, not one with the timeout:
// a derived context cost four allocations and a child map in the
// request's per push. A record not yet sent when the wait times out is
// still failed by kgo, a moment later: the request's context ends when the
// handler returns its 503. TryProduce keeps the wait bounded when kgo's
// buffer is full (Produce would block on the context): the push fails at
// once with ErrMaxBuffered instead.
func (s *Server) produceWait(ctx context.Context, rec *kgo.Record, promise func(*kgo.Record, error)) error {
	if s.met != nil {
		start := time.Now()
		defer func() { s.met.observeProduce(time.Since(start)) }()
	}
	w, _ := s.waiters.Get().(*produceWaiter)
	if w == nil {
		w = newProduceWaiter()
	}
	w.promise = promise
	if w.timeout == nil {
		w.timeout = time.NewTimer(s.cfg.ProduceTimeout)
	} else {
		w.timeout.Reset(s.cfg.ProduceTimeout) // stopped and drained: Go 1.23 timers
	}
	s.cfg.Producer.TryProduce(ctx, rec, w.finish)
	var err error
	settled := false
	select {
	case err = <-w.done:
		settled = true
	case <-w.timeout.C:
		err = fmt.Errorf("produce to %s: %w", rec.Topic, context.DeadlineExceeded)
	case <-ctx.Done():
		err = fmt.Errorf("produce to %s: %w", rec.Topic, ctx.Err())
	}
	w.timeout.Stop()
	if settled {
		// Only a waiter whose promise has run is reused: a late promise
		// still holds the others.
		w.promise = nil
		s.waiters.Put(w)
	}
	if err != nil && ctx.Err() != nil {
		return errClientGone
	}
	return err
}

// produceWaiter is one produce's wait (its channel, timer and kgo promise),
// reused across pushes: a closure, a channel and a timer per push
// otherwise.
type produceWaiter struct {
	done    chan error // buffered: a late promise never blocks
	timeout *time.Timer
	promise func(*kgo.Record, error)
	finish  func(*kgo.Record, error) // bound once: a method value allocates
}

func newProduceWaiter() *produceWaiter {
	w := &produceWaiter{done: make(chan error, 1)}
	w.finish = func(r *kgo.Record, err error) {
		if w.promise != nil {
			w.promise(r, err)
		}
		w.done <- err
	}
	return w
}

// handleDelete serves DELETE /m/{id}: it appends a MessageDeleted event so
// the owner never delivers the message afterwards.
func (s *Server) handleDelete(c echo.Context) error {
	m, err := s.cfg.Sealer.OpenMessageID(c.Param("id"))
	if err != nil || m.Partition >= s.cfg.Partitions || schema.PartitionOf(m.UAID, s.cfg.Partitions) != m.Partition {
		return errInvalidMsgID
	}
	ev := schema.NewEvent(m.UAID, s.now())
	ev.Body = &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{
		Msg: &pb.MessageRef{Partition: m.Partition, Offset: m.Offset, ChannelId: m.ChannelID},
	}}
	rec, err := s.cfg.Names.Record(ev)
	if err != nil {
		return newError(http.StatusInternalServerError, errnoUnknown, "Could not encode the deletion")
	}
	if aerr := s.produce(c.Request().Context(), rec, nil); aerr != nil {
		return aerr
	}
	return c.NoContent(http.StatusNoContent)
}
