package attack

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxReconnects bounds how often a flood comes back after the server
// closed its socket.
const maxReconnects = 5

// flood sends Count messages made by mk on one socket, keeping Window
// requests in flight, and counts the replies of replyType by status
// ("register 200"). replyType "" means the messages get no reply. When the
// server closes the socket the flood records why, reconnects as the same
// UAID (at most maxReconnects times) and goes on.
//
// With ping, the flood ends with a client ping: "ping answered" when the
// socket still works, else why it ended.
func (r *Runner) flood(ctx context.Context, res *Result, replyType string, ping bool, mk func(i int) any) error {
	c, err := dialHello(ctx, r.opts.WSURL, "")
	if err != nil {
		return err
	}
	defer func() { c.close() }()
	uaid := c.uaid
	window := r.opts.Window
	inflight, reconnects := 0, 0
	count := func(f frame) {
		if replyType != "" && f.MessageType == replyType {
			kind := replyType
			if f.Status != 0 { // broadcast replies carry no status
				kind += " " + strconv.Itoa(f.Status)
			}
			res.Answers[kind]++
			inflight--
		}
	}
	// lost records the socket's end and comes back as the same UAID.
	lost := func() error {
		res.Answers[c.closeReason()]++
		addNoReply(res, inflight)
		inflight = 0
		c.close()
		if reconnects >= maxReconnects {
			return fmt.Errorf("server closed the socket %d times", reconnects+1)
		}
		reconnects++
		nc, err := redial(ctx, r.opts.WSURL, uaid)
		if err != nil {
			return err
		}
		if nc.uaid != uaid {
			res.Answers["uaid reset"]++
			uaid = nc.uaid
		}
		c = nc
		return nil
	}
	for i := 0; i < r.opts.Count; {
		if ctx.Err() != nil {
			break
		}
		if inflight < window {
			if err := c.send(mk(i)); err != nil {
				if !c.waitClosed(time.Second) {
					return err
				}
				drain(c, count)
				if err := lost(); err != nil {
					return err
				}
				continue
			}
			res.Sent++
			i++
			if replyType != "" {
				inflight++
			}
			drain(c, count)
			continue
		}
		select {
		case f := <-c.replies:
			count(f)
		case <-c.done:
			drain(c, count)
			if err := lost(); err != nil {
				return err
			}
		case <-ctx.Done():
		case <-time.After(replyWait):
			addNoReply(res, inflight)
			inflight = 0
		}
	}
	if ping {
		r.pingAfter(ctx, c, res, count)
		return nil
	}
	// Collect the answers still in flight.
	for inflight > 0 && replyType != "" {
		f, err := c.reply(ctx, replyWait)
		if err != nil {
			if c.closed() {
				res.Answers[c.closeReason()]++
			}
			addNoReply(res, inflight)
			break
		}
		count(f)
	}
	return nil
}

// addNoReply counts n requests whose answer did not come.
func addNoReply(res *Result, n int) {
	if n > 0 {
		res.Answers["no reply"] += n
	}
}

// drain counts the replies already read, without waiting.
func drain(c *wsClient, count func(frame)) {
	for {
		select {
		case f := <-c.replies:
			count(f)
		default:
			return
		}
	}
}

// pingAfter sends `{}` and waits for `{}`, counting other replies that
// are still coming.
func (r *Runner) pingAfter(ctx context.Context, c *wsClient, res *Result, count func(frame)) {
	if err := c.sendRaw([]byte("{}")); err != nil {
		c.waitClosed(time.Second)
		res.Answers["ping: "+c.closeReason()]++
		return
	}
	for {
		f, err := c.reply(ctx, replyWait)
		if err != nil {
			res.Answers["ping: "+shortErr(err)]++
			return
		}
		if string(f.raw) == "{}" {
			res.Answers["ping answered"]++
			return
		}
		count(f)
	}
}

// redial comes back as uaid, waiting while the server says to try again.
func redial(ctx context.Context, wsURL, uaid string) (*wsClient, error) {
	for {
		c, err := dialHello(ctx, wsURL, uaid)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("reconnect: %w (last: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func channelFlood(ctx context.Context, r *Runner, res *Result) error {
	return r.flood(ctx, res, "register", false, func(int) any {
		return map[string]any{"messageType": "register", "channelID": newChannelID()}
	})
}

func unregisterFlood(ctx context.Context, r *Runner, res *Result) error {
	return r.flood(ctx, res, "unregister", false, func(int) any {
		return map[string]any{"messageType": "unregister", "channelID": newChannelID(), "code": 200}
	})
}

// ackFlood acks versions that were never delivered (they do not open), 50
// per message (about 7 KB, under the default 16 KiB message limit), then
// checks the socket still answers a ping.
func ackFlood(ctx context.Context, r *Runner, res *Result) error {
	return r.flood(ctx, res, "", true, func(int) any {
		updates := make([]map[string]any, 50)
		for i := range updates {
			updates[i] = map[string]any{"channelID": newChannelID(), "version": randomHex(32), "code": 100}
		}
		return map[string]any{"messageType": "ack", "updates": updates}
	})
}

// broadcastFlood subscribes to 50 unknown broadcast ids per message.
func broadcastFlood(ctx context.Context, r *Runner, res *Result) error {
	return r.flood(ctx, res, "broadcast", true, func(int) any {
		ids := make(map[string]string, 50)
		for range 50 {
			ids["attack/"+randomHex(8)] = "v1"
		}
		return map[string]any{"messageType": "broadcast_subscribe", "broadcasts": ids}
	})
}

// helloFlood makes Count new UAIDs, Concurrency at a time: each says
// hello, registers one channel and leaves, as an abandoned browser profile
// would.
func helloFlood(ctx context.Context, r *Runner, res *Result) error {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next int
	)
	answer := func(kind string) {
		mu.Lock()
		res.Answers[kind]++
		mu.Unlock()
	}
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if next >= r.opts.Count || ctx.Err() != nil {
			return false
		}
		next++
		res.Sent++
		return true
	}
	for range r.opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for take() {
				c, err := dialHello(ctx, r.opts.WSURL, "")
				if err != nil {
					answer("hello failed: " + shortErr(err))
					continue
				}
				f, err := c.register(ctx, newChannelID())
				if err != nil {
					answer("register failed: " + shortErr(err))
				} else {
					answer("register " + strconv.Itoa(f.Status))
				}
				c.close()
			}
		}()
	}
	wg.Wait()
	return nil
}

// shortErr keeps answer kinds few: the close code or a generic word.
func shortErr(err error) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "timeout"
	}
	s := err.Error()
	for _, k := range []string{"closed 1013", "closed 1008", "closed 4774", "closed 1002", "no reply", "refused"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	return "error"
}
