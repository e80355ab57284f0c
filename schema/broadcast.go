package schema

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Broadcasts ("megaphone") live in the compacted topic <namespace>.broadcasts
// as a small record encoding of their own, not as an Event: they are keyed
// by broadcast id, not by a UAID.
//
//	key:     the broadcast id (ValidBroadcastID)
//	value:   the version, as bytes (ValidBroadcastVersion); a tombstone
//	         (null value) removes the id
//	headers: pushlog-type=broadcast, pushlog-v=1, pushlog-source=SOURCE
//	         (cli, admin, megaphone, seed: for logs and metrics only)
//
// Compaction keeps the latest version of every id; a reader folds the
// topic from its start (every partition) into id -> version.
const (
	BroadcastType = "broadcast"
	HeaderSource  = "pushlog-source"
)

// Bounds of a broadcast id and version. MaxBroadcastField matches what a
// client may name in a hello (connector/protocol MaxBroadcastField), so
// every id in the table can be subscribed to.
const (
	MaxBroadcastField = 128
	// MaxBroadcasts bounds the ids a broadcast table holds: every node
	// keeps the whole table, and a hello's reply can name all of them.
	MaxBroadcasts = 1000
)

// ErrBroadcast marks an id or version outside the format.
var ErrBroadcast = errors.New("invalid broadcast")

// ValidBroadcastID checks a broadcast id: Megaphone's "<broadcaster>/<channel>"
// form (e.g. remote-settings/monitor_changes), or a single segment; each
// segment is [A-Za-z0-9_.~-]+, segments are joined by single slashes, at most
// MaxBroadcastField bytes. "errors" is reserved: a hello reply lists unknown
// ids under it.
func ValidBroadcastID(id string) error {
	if id == "" || len(id) > MaxBroadcastField {
		return fmt.Errorf("%w: id must be 1 to %d bytes", ErrBroadcast, MaxBroadcastField)
	}
	if id == "errors" {
		return fmt.Errorf("%w: id %q is reserved", ErrBroadcast, id)
	}
	prev := byte('/')
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c == '/':
			if prev == '/' {
				return fmt.Errorf("%w: id %q has an empty segment", ErrBroadcast, id)
			}
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '~', c == '-':
		default:
			return fmt.Errorf("%w: id %q: want segments of [A-Za-z0-9_.~-] joined by /", ErrBroadcast, id)
		}
		prev = c
	}
	if prev == '/' {
		return fmt.Errorf("%w: id %q ends with /", ErrBroadcast, id)
	}
	return nil
}

// ValidBroadcastVersion checks a version: 1 to MaxBroadcastField bytes of
// printable ASCII without spaces (remote-settings versions are quoted
// ETags like "1596654367015", quotes included).
func ValidBroadcastVersion(v string) error {
	if v == "" || len(v) > MaxBroadcastField {
		return fmt.Errorf("%w: version must be 1 to %d bytes", ErrBroadcast, MaxBroadcastField)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return fmt.Errorf("%w: version %q: want printable ASCII without spaces", ErrBroadcast, v)
		}
	}
	return nil
}

// BroadcastRecord encodes id -> version on the broadcasts topic of n.
func (n Names) BroadcastRecord(id, version, source string) (*kgo.Record, error) {
	if err := ValidBroadcastID(id); err != nil {
		return nil, err
	}
	if err := ValidBroadcastVersion(version); err != nil {
		return nil, err
	}
	return &kgo.Record{
		Topic: n.Broadcasts,
		Key:   []byte(id),
		Value: []byte(version),
		Headers: []kgo.RecordHeader{
			{Key: HeaderType, Value: []byte(BroadcastType)},
			{Key: HeaderVersion, Value: []byte(EncodingVersion)},
			{Key: HeaderSource, Value: []byte(source)},
		},
		Timestamp: time.Now(),
	}, nil
}

// Broadcast is one decoded broadcast record.
type Broadcast struct {
	ID      string
	Version string // "" when Removed
	Removed bool   // a tombstone
	Source  string
}

// DecodeBroadcast decodes a record written by BroadcastRecord (or a
// tombstone). Records of a newer encoding return ErrUnknownType; an id or
// version outside the format ErrCorrupt.
func DecodeBroadcast(r *kgo.Record) (Broadcast, error) {
	var b Broadcast
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderVersion:
			if string(h.Value) != EncodingVersion {
				return b, fmt.Errorf("%w: encoding version %q", ErrUnknownType, h.Value)
			}
		case HeaderSource:
			b.Source = string(h.Value)
		}
	}
	b.ID = string(r.Key)
	if err := ValidBroadcastID(b.ID); err != nil {
		return b, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if r.Value == nil {
		b.Removed = true
		return b, nil
	}
	b.Version = string(r.Value)
	if err := ValidBroadcastVersion(b.Version); err != nil {
		return b, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return b, nil
}
