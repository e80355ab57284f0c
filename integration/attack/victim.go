package attack

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pushlog/pushlog/ingest/webpush"
)

// victim is another user: a user agent connected before the attacks,
// whose pushes must keep getting 201 and arriving.
type victim struct {
	r        *Runner
	c        *wsClient
	uaid     string
	channel  string
	endpoint string // as issued
	url      string // on the push URL
	keys     *webpush.ReceiverKeys
	vapid    *webpush.VAPIDKey
}

func newVictim(ctx context.Context, r *Runner) (*victim, error) {
	keys, err := webpush.GenerateReceiverKeys()
	if err != nil {
		return nil, err
	}
	vk, err := webpush.GenerateVAPIDKey()
	if err != nil {
		return nil, err
	}
	v := &victim{r: r, keys: keys, vapid: vk}
	if err := v.connect(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// connect (re)connects as the victim's UAID and registers its channel
// when it has none (first time, or the server reset the UAID).
func (v *victim) connect(ctx context.Context) error {
	c, err := redial(ctx, v.r.opts.WSURL, v.uaid)
	if err != nil {
		return err
	}
	if v.uaid != "" && c.uaid == v.uaid {
		v.c = c
		return nil
	}
	f, err := c.register(ctx, newChannelID())
	if err != nil {
		c.close()
		return err
	}
	if f.Status != 200 || f.PushEndpoint == "" {
		c.close()
		return fmt.Errorf("register answered %s", f.raw)
	}
	target, err := v.r.target(f.PushEndpoint)
	if err != nil {
		c.close()
		return err
	}
	v.c, v.uaid, v.channel, v.endpoint, v.url = c, c.uaid, f.ChannelID, f.PushEndpoint, target
	return nil
}

// probe pushes an encrypted message to the victim and waits until it
// arrives; the user agent acks what it receives.
func (v *victim) probe(ctx context.Context) error {
	if v.c == nil || v.c.closed() {
		if v.c != nil {
			v.c.close()
		}
		if err := v.connect(ctx); err != nil {
			return fmt.Errorf("reconnect: %w", err)
		}
	}
	text := "probe " + randomHex(8)
	m, err := webpush.Encrypt(v.keys.Subscription(v.endpoint), []byte(text), webpush.EncryptOptions{})
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	auth, err := v.vapid.Authorization(v.endpoint, "mailto:victim@example.com", time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	st, h, err := v.r.do(ctx, pushReq{URL: v.url, Body: m.Body, Headers: [][2]string{
		{"TTL", "600"}, {"Content-Encoding", m.Encoding}, {"Authorization", auth},
	}})
	if err != nil {
		return err
	}
	if st != http.StatusCreated {
		return fmt.Errorf("push answered %d", st)
	}
	loc := h.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	for {
		select {
		case n := <-v.c.notes:
			_ = v.c.send(map[string]any{"messageType": "ack", "updates": []map[string]any{
				{"channelID": n.ChannelID, "version": n.Version, "code": 100}}})
			if n.Version == id {
				return nil
			}
		case <-v.c.done:
			return fmt.Errorf("connection %s before the push arrived", v.c.closeReason())
		case <-ctx.Done():
			return fmt.Errorf("push %s got 201 but did not arrive: %w", id, ctx.Err())
		}
	}
}

func (v *victim) close() {
	if v.c != nil {
		v.c.close()
	}
}
