package protocol

import (
	"reflect"
	"sort"
	"testing"
)

func TestBroadcastDelta(t *testing.T) {
	b := NewBroadcasts(map[string]string{"a": "1", "b": "2"})
	tests := []struct {
		name   string
		client map[string]string
		reply  map[string]any
		subs   []string
	}{
		{"nothing asked", nil, map[string]any{}, nil},
		{"up to date", map[string]string{"a": "1"}, map[string]any{}, []string{"a"}},
		{"outdated", map[string]string{"a": "0", "b": "2"}, map[string]any{"a": "1"}, []string{"a", "b"}},
		{"unknown", map[string]string{"z": "1"}, map[string]any{"errors": map[string]string{"z": "Broadcast not found"}}, nil},
		{"mixed", map[string]string{"b": "1", "z": "1"}, map[string]any{"b": "2", "errors": map[string]string{"z": "Broadcast not found"}}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, subs := b.delta(tt.client)
			sort.Strings(subs)
			if !reflect.DeepEqual(reply, tt.reply) || !reflect.DeepEqual(subs, tt.subs) {
				t.Fatalf("got %v %v, want %v %v", reply, subs, tt.reply, tt.subs)
			}
		})
	}
}

func TestBroadcastSet(t *testing.T) {
	b := NewBroadcasts(map[string]string{"a": "1", "b": "2"})
	changed := b.Set(map[string]string{"a": "1", "b": "3", "c": "1"})
	if want := map[string]string{"b": "3", "c": "1"}; !reflect.DeepEqual(changed, want) {
		t.Fatalf("changed %v, want %v", changed, want)
	}
	if reply, _ := b.delta(map[string]string{"b": "2"}); reply["b"] != "3" {
		t.Fatalf("after set: %v", reply)
	}
	if got := mergeSubscriptions([]string{"a"}, []string{"a", "b", "b"}); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("merge %v", got)
	}
}
