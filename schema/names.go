package schema

import (
	"fmt"
	"regexp"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema/pb"
)

// DefaultNamespace prefixes every topic and consumer group.
const DefaultNamespace = "pushlog"

// Names are the topic names of one pushlog deployment. A namespace lets
// several deployments (or test runs) share one Kafka cluster without seeing
// each other's events or consumer groups.
type Names struct {
	Namespace     string
	Messages      string
	Acks          string
	Registrations string
	Channels      string
	Presence      string
	Broadcasts    string // keyed by broadcast id, not UAID (broadcast.go)
}

var namespaceRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,100}$`)

// NamesFor returns the names in namespace ns ("" means the default).
func NamesFor(ns string) (Names, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	if !namespaceRE.MatchString(ns) {
		return Names{}, fmt.Errorf("namespace %q: want up to 100 of [A-Za-z0-9._-]", ns)
	}
	return Names{
		Namespace:     ns,
		Messages:      ns + ".messages",
		Acks:          ns + ".acks",
		Registrations: ns + ".registrations",
		Channels:      ns + ".channels",
		Presence:      ns + ".presence",
		Broadcasts:    ns + ".broadcasts",
	}, nil
}

// DefaultNames are the names in the default namespace (the Topic* constants).
func DefaultNames() Names {
	n, _ := NamesFor(DefaultNamespace)
	return n
}

// Group returns the consumer group name of a role ("connectors",
// "channels", "analytics") in this namespace.
func (n Names) Group(role string) string { return n.Namespace + "-" + role }

// All returns every topic name.
func (n Names) All() []string {
	return []string{n.Messages, n.Acks, n.Registrations, n.Channels, n.Presence, n.Broadcasts}
}

// Topic returns the topic of an event type in this namespace.
func (n Names) Topic(ev *pb.Event) string {
	if t := TopicOf(ev); t != "" {
		return n.FromDefault(t)
	}
	return ""
}

// Record encodes ev as a record on its topic in this namespace.
func (n Names) Record(ev *pb.Event) (*kgo.Record, error) {
	r, err := Record(ev)
	if err != nil {
		return nil, err
	}
	r.Topic = n.Topic(ev)
	return r, nil
}

// Specs returns the topic specs in this namespace.
func (n Names) Specs(maxTTL time.Duration) []TopicSpec {
	specs := Topics(maxTTL)
	for i := range specs {
		specs[i].Name = n.FromDefault(specs[i].Name)
	}
	return specs
}

// FromDefault maps a default topic name (a Topic* constant) to this
// namespace; other names are returned unchanged.
func (n Names) FromDefault(defaultName string) string {
	switch defaultName {
	case TopicMessages:
		return n.Messages
	case TopicAcks:
		return n.Acks
	case TopicRegistrations:
		return n.Registrations
	case TopicChannels:
		return n.Channels
	case TopicPresence:
		return n.Presence
	case TopicBroadcasts:
		return n.Broadcasts
	}
	return defaultName
}

// ToDefault maps a topic of this namespace to its default name (a Topic*
// constant); other names are returned unchanged.
func (n Names) ToDefault(name string) string {
	def := DefaultNames()
	switch name {
	case n.Messages:
		return def.Messages
	case n.Acks:
		return def.Acks
	case n.Registrations:
		return def.Registrations
	case n.Channels:
		return def.Channels
	case n.Presence:
		return def.Presence
	case n.Broadcasts:
		return def.Broadcasts
	}
	return name
}
