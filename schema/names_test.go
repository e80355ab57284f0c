package schema

import (
	"testing"
	"time"

	"github.com/pushlog/pushlog/schema/pb"
)

func TestNames(t *testing.T) {
	def := DefaultNames()
	if def.Messages != TopicMessages || def.Acks != TopicAcks || def.Registrations != TopicRegistrations ||
		def.Channels != TopicChannels || def.Presence != TopicPresence {
		t.Fatalf("default names differ from the constants: %+v", def)
	}
	n, err := NamesFor("it-42")
	if err != nil {
		t.Fatal(err)
	}
	if n.Messages != "it-42.messages" || n.Group("connectors") != "it-42-connectors" {
		t.Fatalf("names: %+v", n)
	}
	ev := NewEvent(NewUAID(), time.Now())
	ev.Body = &pb.Event_Acked{Acked: &pb.Acked{}}
	r, err := n.Record(ev)
	if err != nil || r.Topic != "it-42.acks" {
		t.Fatalf("record topic %v %v", r, err)
	}
	for _, s := range n.Specs(time.Hour) {
		if s.Name[:6] != "it-42." {
			t.Fatalf("spec %q not in namespace", s.Name)
		}
	}
	for _, bad := range []string{"has space", "a/b", ".", string(make([]byte, 200))} {
		if _, err := NamesFor(bad); err == nil {
			t.Errorf("namespace %q accepted", bad)
		}
	}
}

func TestNamesMapping(t *testing.T) {
	n, _ := NamesFor("x")
	for _, def := range DefaultNames().All() {
		real := n.FromDefault(def)
		if real == def || n.ToDefault(real) != def {
			t.Errorf("%s -> %s -> %s", def, real, n.ToDefault(real))
		}
	}
	if n.FromDefault("other") != "other" || n.ToDefault("other") != "other" {
		t.Error("unknown names must pass through")
	}
}
