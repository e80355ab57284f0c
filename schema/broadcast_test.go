package schema

import (
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestValidBroadcast(t *testing.T) {
	ids := []struct {
		id string
		ok bool
	}{
		{"remote-settings/monitor_changes", true},
		{"b1", true},
		{"a.b~c_d-e/F9", true},
		{"a/b/c", true},
		{strings.Repeat("i", MaxBroadcastField), true},
		{"", false},
		{"errors", false},
		{strings.Repeat("i", MaxBroadcastField+1), false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"a b", false},
		{"a\"b", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tc := range ids {
		if err := ValidBroadcastID(tc.id); (err == nil) != tc.ok {
			t.Errorf("id %q: %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
	versions := []struct {
		v  string
		ok bool
	}{
		{"v1", true},
		{`"1596654367015"`, true},
		{strings.Repeat("v", MaxBroadcastField), true},
		{"", false},
		{"a b", false},
		{"a\n", false},
		{strings.Repeat("v", MaxBroadcastField+1), false},
		{"é", false},
	}
	for _, tc := range versions {
		if err := ValidBroadcastVersion(tc.v); (err == nil) != tc.ok {
			t.Errorf("version %q: %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
}

func TestBroadcastRecordRoundTrip(t *testing.T) {
	n, _ := NamesFor("bt")
	r, err := n.BroadcastRecord("remote-settings/monitor_changes", `"42"`, "cli")
	if err != nil {
		t.Fatal(err)
	}
	if r.Topic != "bt.broadcasts" || string(r.Key) != "remote-settings/monitor_changes" {
		t.Fatalf("record %+v", r)
	}
	b, err := DecodeBroadcast(r)
	if err != nil || b != (Broadcast{ID: "remote-settings/monitor_changes", Version: `"42"`, Source: "cli"}) {
		t.Fatalf("decoded %+v %v", b, err)
	}
	if _, err := n.BroadcastRecord("errors", "1", "cli"); !errors.Is(err, ErrBroadcast) {
		t.Fatalf("reserved id encoded: %v", err)
	}
	tomb, err := DecodeBroadcast(&kgo.Record{Key: []byte("b1")})
	if err != nil || !tomb.Removed || tomb.ID != "b1" {
		t.Fatalf("tombstone %+v %v", tomb, err)
	}
	for name, rec := range map[string]*kgo.Record{
		"bad id":      {Key: []byte("a b"), Value: []byte("1")},
		"bad version": {Key: []byte("a"), Value: []byte("")},
	} {
		if _, err := DecodeBroadcast(rec); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	newer := &kgo.Record{Key: []byte("a"), Value: []byte("1"), Headers: []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte("2")}}}
	if _, err := DecodeBroadcast(newer); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("newer encoding: %v", err)
	}
}

// FuzzDecodeBroadcast: a broadcasts record from the topic (anyone with
// write access to Kafka) never crashes a reader, and what decodes is in
// the format.
func FuzzDecodeBroadcast(f *testing.F) {
	f.Add([]byte("remote-settings/monitor_changes"), []byte(`"1"`), false)
	f.Add([]byte("errors"), []byte("1"), false)
	f.Add([]byte("a"), []byte(nil), true)
	f.Fuzz(func(t *testing.T, key, value []byte, tomb bool) {
		if tomb {
			value = nil
		}
		b, err := DecodeBroadcast(&kgo.Record{Key: key, Value: value})
		if err != nil {
			return
		}
		if ValidBroadcastID(b.ID) != nil || (!b.Removed && ValidBroadcastVersion(b.Version) != nil) {
			t.Fatalf("decoded out of format: %+v", b)
		}
	})
}
