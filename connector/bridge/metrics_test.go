package bridge

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fixed Result

func (f fixed) Send(context.Context, string, Message) Result { return Result(f) }
func (fixed) Check(Message) error                            { return nil }
func (fixed) MaxPayload() int                                { return 4096 }

func TestInstrument(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := m.Instrument("fcm", "org.mozilla.firefox", fixed{Outcome: Gone, Reason: "UNREGISTERED", Status: 404})
	for range 2 {
		if r := s.Send(t.Context(), "t", Message{}); r.Outcome != Gone {
			t.Fatal(r)
		}
	}
	if s.MaxPayload() != 4096 {
		t.Fatal("MaxPayload not passed through")
	}
	if n := testutil.ToFloat64(m.sends.WithLabelValues("fcm", "org.mozilla.firefox", "gone", "UNREGISTERED")); n != 2 {
		t.Fatalf("sends %v", n)
	}
	if n := testutil.CollectAndCount(m.latency); n != 1 {
		t.Fatalf("latency series %d", n)
	}
}
