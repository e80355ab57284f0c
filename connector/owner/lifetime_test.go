package owner

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema/pb"
)

// TestProduceBeforeRun: the owner's producers live on Run's ctx; before
// Run there is none, and a produce is refused instead of sent on a
// context nobody can cancel.
func TestProduceBeforeRun(t *testing.T) {
	e := newTestEnv(t)
	o, err := New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		produce func(onErr func(error))
	}{
		{"event", func(onErr func(error)) {
			o.produce(&pb.Event{Uaid: uaidIn(0), Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{}}}}, onErr)
		}},
		{"record", func(onErr func(error)) { o.produceRecord(&kgo.Record{Topic: "t"}, onErr) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got error
			tt.produce(func(err error) { got = err })
			if got == nil || !strings.Contains(got.Error(), "not running") {
				t.Fatalf("before Run: %v, want a refusal", got)
			}
		})
	}
}
