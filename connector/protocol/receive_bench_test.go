package protocol

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkReceiveAck is the machine's share of each push to a connected
// client: a notification is delivered and its ack received.
func BenchmarkReceiveAck(b *testing.B) {
	env := testEnv()
	c := &Client{}
	c.Bind(u1)
	c.phase.Store(int32(Ready))
	now := time.Unix(t0, 0)
	n := notification(ch1, 1)
	frame := []byte(fmt.Sprintf(`{"messageType":"ack","updates":[{"channelID":%q,"version":%q,"code":100}]}`, ch1, n.Version))
	b.ReportAllocs()
	for b.Loop() {
		c.Delivered(*n)
		out := c.Receive(env, now, frame)
		if len(out.Effects) != 3 {
			b.Fatalf("effects %+v", out.Effects)
		}
	}
}
