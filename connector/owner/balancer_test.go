package owner

import (
	"fmt"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type testMember struct {
	id    string
	owned []int32 // partition numbers, claimed on every group topic
	gen   int32
}

// balance runs the balancer as a group leader would and returns member ->
// topic -> partitions.
func balance(t *testing.T, n int32, members ...testMember) map[string]map[string][]int32 {
	t.Helper()
	b := copartitionBalancer{}
	var join []kmsg.JoinGroupResponseMember
	for _, m := range members {
		owned := map[string][]int32{}
		if len(m.owned) > 0 {
			for _, topic := range groupTopics {
				owned[topic] = m.owned
			}
		}
		meta := b.JoinGroupMetadata(groupTopics[:], owned, m.gen)
		join = append(join, kmsg.JoinGroupResponseMember{MemberID: m.id, ProtocolMetadata: meta})
	}
	gmb, topics, err := b.MemberBalancer(join)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int32{}
	for topic := range topics {
		counts[topic] = n
	}
	into, err := gmb.(kgo.GroupMemberBalancerOrError).BalanceOrError(counts)
	if err != nil {
		t.Fatal(err)
	}
	// Round-trip through the wire form, as members receive it.
	out := map[string]map[string][]int32{}
	for _, a := range into.IntoSyncAssignment() {
		m, err := b.ParseSyncAssignment(a.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		out[a.MemberID] = m
	}
	return out
}

// numbers checks that every group topic got the same partitions and
// returns them.
func numbers(t *testing.T, assigned map[string][]int32) []int32 {
	t.Helper()
	var first []int32
	for i, topic := range groupTopics {
		ps := slices.Clone(assigned[topic])
		slices.Sort(ps)
		if i == 0 {
			first = ps
		} else if !slices.Equal(ps, first) {
			t.Fatalf("not co-partitioned: %v", assigned)
		}
	}
	return first
}

func seq(from, to int32) []int32 {
	var out []int32
	for p := from; p < to; p++ {
		out = append(out, p)
	}
	return out
}

func TestBalancer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int32
		members []testMember
		want    map[string][]int32
	}{
		{"single member gets all", 12, []testMember{{id: "a"}}, map[string][]int32{"a": seq(0, 12)}},
		{"two fresh members split", 12, []testMember{{id: "a"}, {id: "b"}}, map[string][]int32{"a": {0, 2, 4, 6, 8, 10}, "b": {1, 3, 5, 7, 9, 11}}},
		{"uneven split", 4, []testMember{{id: "a"}, {id: "b"}, {id: "c"}}, map[string][]int32{"a": {0, 3}, "b": {1}, "c": {2}}},
		{"more members than partitions", 2, []testMember{{id: "a"}, {id: "b"}, {id: "c"}}, map[string][]int32{"a": {0}, "b": {1}, "c": nil}},
		{
			// a owned everything: it keeps half, and the other half is
			// only revoked this round (still owned by a), not yet b's.
			"cooperative: moves are revoked first", 12,
			[]testMember{{id: "a", owned: seq(0, 12), gen: 5}, {id: "b"}},
			map[string][]int32{"a": seq(0, 6), "b": nil},
		},
		{
			"second round assigns the revoked", 12,
			[]testMember{{id: "a", owned: seq(0, 6), gen: 6}, {id: "b", gen: 6}},
			map[string][]int32{"a": seq(0, 6), "b": seq(6, 12)},
		},
		{
			"sticky on member leave", 6,
			[]testMember{{id: "b", owned: []int32{2, 3}, gen: 7}, {id: "c", owned: []int32{4, 5}, gen: 7}},
			map[string][]int32{"b": {0, 2, 3}, "c": {1, 4, 5}},
		},
		{
			// a missed rebalances and still claims 0 and 1 (gen 3); b
			// owns them now (gen 5): b's claim wins, a's is ignored.
			"stale claim loses", 2,
			[]testMember{{id: "a", owned: []int32{0, 1}, gen: 3}, {id: "b", owned: []int32{0, 1}, gen: 5}},
			map[string][]int32{"a": nil, "b": {0}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := balance(t, tc.n, tc.members...)
			seen := map[int32]string{}
			for _, m := range tc.members {
				ps := numbers(t, got[m.id])
				if !slices.Equal(ps, tc.want[m.id]) {
					t.Errorf("%s got %v, want %v", m.id, ps, tc.want[m.id])
				}
				for _, p := range ps {
					if o, dup := seen[p]; dup {
						t.Errorf("partition %d assigned to %s and %s", p, o, m.id)
					}
					seen[p] = m.id
				}
			}
		})
	}
}

func TestBalancerConverges(t *testing.T) {
	// Simulate cooperative rounds: members report what they kept; within
	// a few rounds the assignment is complete, balanced and stable.
	members := []testMember{{id: "a", owned: seq(0, 12), gen: 1}, {id: "b", gen: 1}, {id: "c", gen: 1}}
	var got map[string]map[string][]int32
	for round := range 4 {
		got = balance(t, 12, members...)
		for i := range members {
			members[i].owned = numbers(t, got[members[i].id])
			members[i].gen = int32(round + 2)
		}
	}
	total := 0
	for _, m := range members {
		if len(m.owned) != 4 {
			t.Fatalf("unbalanced: %v", fmt.Sprint(members))
		}
		total += len(m.owned)
	}
	if total != 12 {
		t.Fatalf("assigned %d of 12", total)
	}
	if !slices.Equal(members[0].owned, seq(0, 4)) {
		t.Fatalf("a did not keep its first partitions: %v", members[0].owned)
	}
}
