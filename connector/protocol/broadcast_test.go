package protocol

import (
	"reflect"
	"slices"
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

// bstep is one input of the broadcast transitions: a machine input, or a
// change of the shared table.
type bstep struct {
	input
	set    map[string]string // the table is replaced (Broadcasts.Replace), then the client told
	quiet  bool              // with set: the client is not told (an announcement still on its way)
	replay bool              // the last change is announced to the client again (late or twice)
}

// TestBroadcastTransitions: live broadcast changes (the table changes
// while clients are connected) and hello's delta, as table rows like
// TestMachine's.
func TestBroadcastTransitions(t *testing.T) {
	b1 := func(v string) string { return `send {"messageType":"broadcast","broadcasts":{"b1":"` + v + `"}}` }
	greet := func(b string) string {
		return `await greet {"messageType":"hello","uaid":"N1","status":200,"use_webpush":true,"broadcasts":` + b + `}`
	}
	tests := []struct {
		name  string
		from  start
		steps []bstep
		phase Phase
	}{
		{"a change of a subscribed id is sent", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b1": "v1"})}},
			{set: map[string]string{"b1": "v2", "b2": "v2"}, input: input{want: []string{b1("v2")}}},
		}, Ready},
		{"a change of an id not subscribed sends nothing", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b1": "v1"})}},
			{set: map[string]string{"b1": "v1", "b2": "v3"}},
			{set: map[string]string{"b1": "v1", "b2": "v3", "b3": "new"}},
		}, Ready},
		{"a client without subscriptions gets nothing", ready, []bstep{
			{set: map[string]string{"b1": "v2", "b2": "v3"}},
		}, Ready},
		{"one change announced twice is sent once", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b1": "v1"})}},
			{set: map[string]string{"b1": "v2", "b2": "v2"}, input: input{want: []string{b1("v2")}}},
			{replay: true},
		}, Ready},
		{"hello with current versions: an empty delta", fresh, []bstep{
			{input: input{in: helloWith(map[string]string{"b1": "v1", "b2": "v2"}), want: []string{"count-hello new", "await claim N1"}}},
			{input: input{resume: claimed, want: []string{"connected", greet(`{}`)}}},
			{input: input{resume: ok, want: []string{"await attach N1"}}},
			{set: map[string]string{"b1": "v1", "b2": "v3"}, input: input{want: []string{`send {"messageType":"broadcast","broadcasts":{"b2":"v3"}}`}}},
		}, Ready},
		{"hello with stale versions: only those", fresh, []bstep{
			{input: input{in: helloWith(map[string]string{"b1": "old", "b2": "v2"}), want: []string{"count-hello new", "await claim N1"}}},
			{input: input{resume: claimed, want: []string{"connected", greet(`{"b1":"v1"}`)}}},
		}, Identifying},
		{"hello after a change: the new version", fresh, []bstep{
			{set: map[string]string{"b1": "v5", "b2": "v2"}},
			{input: input{in: helloWith(map[string]string{"b1": "v1", "b2": "v2"}), want: []string{"count-hello new", "await claim N1"}}},
			{input: input{resume: claimed, want: []string{"connected", greet(`{"b1":"v5"}`)}}},
			{input: input{resume: ok, want: []string{"await attach N1"}}}, // nothing new at Ready
		}, Ready},
		{"a change before the claim is sent at Ready", fresh, []bstep{
			{input: input{in: helloWith(map[string]string{"b1": "v1"}), want: []string{"count-hello new", "await claim N1"}}},
			{set: map[string]string{"b1": "v6", "b2": "v2"}}, // not registered yet: not announced
			{input: input{resume: claimed, want: []string{"connected", greet(`{}`)}}},
			{input: input{resume: ok, want: []string{b1("v6"), "await attach N1"}}},
		}, Ready},
		{"a change while the reply is written is sent at Ready, once", fresh, []bstep{
			{input: input{in: helloWith(map[string]string{"b1": "v1"}), want: []string{"count-hello new", "await claim N1"}}},
			{input: input{resume: claimed, want: []string{"connected", greet(`{}`)}}},
			{set: map[string]string{"b1": "v7", "b2": "v2"}}, // announced, but the client is not Ready
			{input: input{resume: ok, want: []string{b1("v7"), "await attach N1"}}},
			{replay: true}, // a late announcement of the same change
		}, Ready},
		{"broadcast_subscribe carries what earlier subscriptions missed", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b1": "v1"})}},
			{set: map[string]string{"b1": "v8", "b2": "v2"}, quiet: true},
			{input: input{in: subscribe(map[string]string{"b2": "v2"}), want: []string{b1("v8")}}},
			{replay: true},
		}, Ready},
		{"a removed id is not announced; once back it is", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b1": "v1"})}},
			{set: map[string]string{"b2": "v2"}},
			{set: map[string]string{"b1": "v9", "b2": "v2"}, input: input{want: []string{b1("v9")}}},
		}, Ready},
		{"an id created later is unknown to an earlier subscribe", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b3": "v1"}), want: []string{`send {"messageType":"broadcast","broadcasts":{"errors":{"b3":"Broadcast not found"}}}`}}},
			{set: map[string]string{"b1": "v1", "b2": "v2", "b3": "v2"}},
		}, Ready},
		{"a change after close is not sent", ready, []bstep{
			{input: input{in: subscribe(map[string]string{"b1": "v1"})}},
			{input: input{close: true, want: []string{"closed-from ready"}}},
			{set: map[string]string{"b1": "v2", "b2": "v2"}},
		}, Closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t, tt.from)
			var last Change
			for i, s := range tt.steps {
				var got []string
				switch {
				case s.set != nil:
					last = r.env.Broadcasts.Replace(s.set)
					if !s.quiet {
						got = r.render(r.c.BroadcastsChangedAt(r.env, last))
					}
				case s.replay:
					got = r.render(r.c.BroadcastsChangedAt(r.env, last))
				default:
					got = r.step(s.input)
				}
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d: got %q, want %q", i, got, s.want)
				}
			}
			if p := r.c.Phase(); p != tt.phase {
				t.Fatalf("phase %v, want %v", p, tt.phase)
			}
		})
	}
}

func TestBroadcastGenerations(t *testing.T) {
	b := NewBroadcasts(map[string]string{"a": "1", "b": "2"})
	if ch := b.Replace(map[string]string{"a": "1", "b": "2"}); len(ch.Versions) != 0 || ch.Gen != 0 {
		t.Fatalf("no change bumped: %+v", ch)
	}
	ch := b.Replace(map[string]string{"a": "2", "b": "2"})
	if ch.Gen != 1 || !reflect.DeepEqual(ch.Versions, map[string]string{"a": "2"}) {
		t.Fatalf("change %+v", ch)
	}
	if got, gen := b.since([]string{"a", "b", "zz"}, 0); gen != 1 || !reflect.DeepEqual(got, map[string]any{"a": "2"}) {
		t.Fatalf("since 0: %v %d", got, gen)
	}
	if got, _ := b.since([]string{"a", "b"}, 1); len(got) != 0 {
		t.Fatalf("since 1: %v", got)
	}
}
