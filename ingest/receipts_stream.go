package ingest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pushlog/pushlog/schema"
)

// hdrReceiptPush carries the one-time nonce of a request this process
// synthesised for an HTTP/2 server push of a receipt: the receipt
// middleware answers it from memory, never a route.
const hdrReceiptPush = "Pushlog-Receipt-Push"

// receiptWriteTimeout bounds each write of a receipt stream (the server's
// WriteTimeout would end the stream after 30s; this is per write).
const receiptWriteTimeout = 10 * time.Second

type receiptMode int

const (
	modePush receiptMode = iota
	modeSSE
	modeNDJSON
)

// negotiateReceipts chooses how a GET gets its receipts: Accept
// text/event-stream or application/x-ndjson asks for a stream; otherwise
// an HTTP/2 client gets server push (RFC 8030 §6.2) and an HTTP/1 one SSE.
func negotiateReceipts(accept string, h2 bool) receiptMode {
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "text/event-stream":
			return modeSSE
		case "application/x-ndjson", "application/ndjson", "application/jsonl":
			return modeNDJSON
		}
	}
	if h2 {
		return modePush
	}
	return modeSSE
}

// receiptCursor is where a reconnecting client resumes: Last-Event-ID (SSE)
// or ?since= (time_ms of the last receipt it has); receipts at or after it
// are sent again (at least once: clients drop duplicates by message).
func receiptCursor(req *http.Request) (int64, *apiError) {
	v := req.Header.Get("Last-Event-ID")
	if q := req.URL.Query().Get("since"); q != "" {
		v = q
	}
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, badRequest(errnoInvalidReceipt, "Last-Event-ID or since must be a receipt's time_ms")
	}
	return ms, nil
}

// handleReceipts serves GET of a receipt subscription.
func (s *Server) handleReceipts(c echo.Context) error {
	req := c.Request()
	if !s.receipts.enabled {
		return newError(http.StatusNotImplemented, errnoInvalidReceipt, "Push receipts are not enabled on this service")
	}
	sub, err := s.cfg.Sealer.OpenReceiptSub(c.Param("token"))
	if err != nil {
		s.receipts.met.refused.WithLabelValues("forged").Inc()
		return newError(http.StatusNotFound, errnoInvalidReceipt, "No such receipt subscription (unknown or forged)")
	}
	if len(sub.KeyHash) > 0 {
		// A key-bound subscription is read by its key's holder only.
		if _, aerr := s.authenticate(req.Header, schema.Endpoint{KeyHash: sub.KeyHash}); aerr != nil {
			s.receipts.met.refused.WithLabelValues("key_mismatch").Inc()
			return aerr
		}
	}
	from, aerr := receiptCursor(req)
	if aerr != nil {
		return aerr
	}
	if ok, perSub := s.receipts.acquireStream(sub.ID); !ok {
		if perSub {
			s.receipts.met.refused.WithLabelValues("streams_per_subscription").Inc()
			return newError(http.StatusTooManyRequests, errnoInvalidReceipt,
				fmt.Sprintf("Too many streams open for this receipt subscription (limit %d); close one first", receiptStreamsPerSub))
		}
		s.receipts.met.refused.WithLabelValues("streams").Inc()
		return unavailable(fmt.Sprintf("Too many receipt streams open on this node (limit %d)", s.receipts.cfg.MaxStreams), 5)
	}
	defer s.receipts.releaseStream(sub.ID)
	w := c.Response().Writer
	mode := negotiateReceipts(req.Header.Get("Accept"), req.ProtoMajor == 2)
	pusher, _ := w.(http.Pusher)
	if mode == modePush && pusher == nil {
		mode = modeNDJSON
	}
	rc := http.NewResponseController(w)
	// The server's read and write timeouts bound requests, not this
	// stream (HTTP/1 cancels a request at its read deadline): the idle
	// timer and a deadline per write do.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		switch mode {
		case modeSSE:
			h.Set("Content-Type", "text/event-stream")
		case modeNDJSON:
			h.Set("Content-Type", "application/x-ndjson")
		}
		if mode != modePush {
			w.WriteHeader(http.StatusOK)
			_ = rc.Flush()
		}
	}
	if mode != modePush {
		start()
	}
	var seq uint64
	idle := time.NewTimer(s.receipts.cfg.Idle)
	defer idle.Stop()
	for {
		rs, notify := s.receipts.fold.since(sub.ID, seq, from)
		for _, r := range rs {
			seq = r.seq
			_ = rc.SetWriteDeadline(time.Now().Add(receiptWriteTimeout))
			if err := s.sendReceipt(w, pusher, &mode, r, start); err != nil {
				return nil // the client went away; it resumes with its cursor
			}
		}
		if len(rs) > 0 {
			if mode != modePush { // a flush would answer the GET (200) while pushing
				_ = rc.Flush()
			}
			idle.Reset(s.receipts.cfg.Idle)
		}
		// Between receipts only the idle timer ends the stream (an HTTP/2
		// write deadline left set would reset it).
		_ = rc.SetWriteDeadline(time.Time{})
		select {
		case <-notify:
		case <-idle.C:
			s.receipts.met.idleEnds.Inc()
			if mode == modePush && !started {
				// RFC 8030 §6.2: the push service does not answer the GET
				// while it pushes; an idle one ends with 204.
				w.WriteHeader(http.StatusNoContent)
			}
			return nil
		case <-req.Context().Done():
			return nil
		}
	}
}

// sendReceipt delivers one receipt in the stream's mode; a server push the
// client refuses falls back to NDJSON for the rest.
func (s *Server) sendReceipt(w http.ResponseWriter, pusher http.Pusher, mode *receiptMode, r Receipt, start func()) error {
	id, err := s.cfg.Sealer.SealMessageID(schema.MessageID{UAID: r.uaid, ChannelID: r.channel, Partition: r.key.partition, Offset: r.key.offset})
	if err != nil {
		return fmt.Errorf("seal message id: %w", err)
	}
	r.Message = s.base + "/m/" + id
	if *mode == modePush {
		err := s.pushReceipt(pusher, id, r)
		if err == nil {
			s.receipts.met.pushed.WithLabelValues("h2_push").Inc()
			return nil
		}
		if !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		*mode = modeNDJSON // SETTINGS_ENABLE_PUSH=0: the body carries them
	}
	start()
	body, _ := json.Marshal(r)
	var line string
	if *mode == modeSSE {
		line = "id: " + strconv.FormatInt(r.TimeMs, 10) + "\nevent: receipt\ndata: " + string(body) + "\n\n"
		s.receipts.met.pushed.WithLabelValues("sse").Inc()
	} else {
		line = string(body) + "\n"
		s.receipts.met.pushed.WithLabelValues("ndjson").Inc()
	}
	_, err = w.Write([]byte(line))
	return err
}

// pushReceipt sends a PUSH_PROMISE of the message resource; the pushed
// request is answered 410 with the receipt by receiptPushes.
func (s *Server) pushReceipt(p http.Pusher, id string, r Receipt) error {
	var n [16]byte
	_, _ = rand.Read(n[:])
	nonce := hex.EncodeToString(n[:])
	s.receipts.pushedReceipts.Store(nonce, r)
	base, _ := url.Parse(s.base)
	err := p.Push(strings.TrimRight(base.Path, "/")+"/m/"+id, &http.PushOptions{Header: http.Header{hdrReceiptPush: {nonce}}})
	if err != nil {
		s.receipts.pushedReceipts.Delete(nonce)
		return err
	}
	// A promise whose request is never served (the connection died after
	// Push returned) must not hold its receipt forever.
	time.AfterFunc(time.Minute, func() { s.receipts.pushedReceipts.Delete(nonce) })
	return nil
}

// receiptPushes answers the requests synthesised for receipt server pushes
// (RFC 8030 §6.2: the message resource, 410 Gone: it was acknowledged,
// expired or dropped) before any route sees them.
func (s *Server) receiptPushes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		nonce := req.Header.Get(hdrReceiptPush)
		if nonce == "" {
			next.ServeHTTP(w, req)
			return
		}
		v, ok := s.receipts.pushedReceipts.LoadAndDelete(nonce)
		if !ok {
			http.Error(w, `{"code":404,"errno":131,"error":"Not Found","message":"No such receipt push"}`, http.StatusNotFound)
			return
		}
		r := v.(Receipt)
		body, _ := json.Marshal(r)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Pushlog-Receipt-Outcome", r.Outcome)
		if r.Reason != "" {
			h.Set("Pushlog-Receipt-Reason", r.Reason)
		}
		h.Set("Date", time.UnixMilli(r.TimeMs).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusGone)
		_, _ = w.Write(body)
	})
}
