package owner

import (
	"slices"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// balancerProtocol names the co-partitioned assignment protocol. Every
// member of the group must speak it (the group picks a protocol common to
// all members).
const balancerProtocol = "pushlog-copartitioned-v1"

// copartitionBalancer is a cooperative, sticky group balancer that assigns
// partitions by NUMBER: whoever gets partition p gets p of every topic the
// group consumes, because the owner of p is the single authority for the
// UAIDs hashed to p and folds all their topics together.
//
// Decisions are made per partition number, like cooperative-sticky does per
// topic partition: members keep what they own up to their fair share, the
// rest goes to the least loaded members, and a number that moves from one
// member to another is first only revoked (the member that owns it drops it
// and rejoins), and assigned in the following round. So no two members ever
// fold the same partition at the same time.
//
// userData (the member's node-link and metrics addresses, see members.go)
// travels in the member metadata, so routers can map partitions to nodes
// and operator tools find the nodes with a DescribeGroups.
type copartitionBalancer struct{ userData []byte }

var _ kgo.GroupBalancer = copartitionBalancer{}

func (copartitionBalancer) ProtocolName() string { return balancerProtocol }
func (copartitionBalancer) IsCooperative() bool  { return true }

// JoinGroupMetadata encodes our interests and what we own now, with the
// generation, so that the leader can tell current claims from stale ones.
func (b copartitionBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 2
	meta.UserData = b.userData
	meta.Topics = slices.Clone(interests)
	sort.Strings(meta.Topics)
	meta.Generation = generation
	topics := make([]string, 0, len(current))
	for t := range current {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		owned := kmsg.NewConsumerMemberMetadataOwnedPartition()
		owned.Topic = t
		owned.Partitions = slices.Clone(current[t])
		slices.Sort(owned.Partitions)
		meta.OwnedPartitions = append(meta.OwnedPartitions, owned)
	}
	return meta.AppendTo(nil)
}

func (copartitionBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(assignment)
}

func (b copartitionBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	if err != nil {
		return nil, nil, err
	}
	return cb, cb.MemberTopics(), nil
}

// balanceMember is one member as the balancing sees it.
type balanceMember struct {
	member    *kmsg.JoinGroupResponseMember
	interests map[string]bool
	owned     []int32 // partition numbers it validly owns now
	plan      []int32
}

// Balance implements kgo.ConsumerBalancerBalance.
func (copartitionBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	members, owner := collectMembers(cb)
	n := int32(0)
	for _, c := range topics {
		n = max(n, c)
	}
	assignNumbers(members, n)

	plan := cb.NewPlan()
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	for i, m := range members {
		for _, p := range m.plan {
			// Cooperative: a number still owned by another member is
			// only revoked this round; it is assigned in the next.
			if o, ok := owner[p]; ok && o != i {
				continue
			}
			for _, t := range names {
				if m.interests[t] && p < topics[t] {
					plan.AddPartition(m.member, t, p)
				}
			}
		}
	}
	return plan
}

// collectMembers reads every member's interests and claims. A partition
// number is owned by the member claiming it with the highest generation
// (KIP-792: a member that missed rebalances may still claim a partition
// that has moved on); owner maps number -> index into members.
func collectMembers(cb *kgo.ConsumerBalancer) ([]*balanceMember, map[int32]int) {
	var members []*balanceMember
	owner := make(map[int32]int)
	ownerGen := make(map[int32]int32)
	cb.EachMember(func(member *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		m := &balanceMember{member: member, interests: make(map[string]bool, len(meta.Topics))}
		for _, t := range meta.Topics {
			m.interests[t] = true
		}
		idx := len(members)
		members = append(members, m)
		for _, op := range meta.OwnedPartitions {
			for _, p := range op.Partitions {
				if g, ok := ownerGen[p]; ok && g >= meta.Generation {
					continue
				}
				owner[p] = idx
				ownerGen[p] = meta.Generation
			}
		}
	})
	for p, idx := range owner {
		members[idx].owned = append(members[idx].owned, p)
	}
	for _, m := range members {
		slices.Sort(m.owned)
	}
	return members, owner
}

// assignNumbers fills every member's plan with partition numbers 0..n-1:
// each member gets n/len or n/len+1 numbers (the larger shares go to the
// members owning the most, so fewer move), keeps as many of its current
// numbers as its share allows, and the free numbers go to the least
// loaded members in order.
func assignNumbers(members []*balanceMember, n int32) {
	if len(members) == 0 {
		return
	}
	order := make([]int, len(members))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return len(members[order[a]].owned) > len(members[order[b]].owned)
	})
	quota := make([]int, len(members))
	base, extra := int(n)/len(members), int(n)%len(members)
	for rank, i := range order {
		quota[i] = base
		if rank < extra {
			quota[i]++
		}
	}
	taken := make([]bool, n)
	for i, m := range members {
		for _, p := range m.owned {
			if p >= n || len(m.plan) >= quota[i] {
				continue
			}
			m.plan = append(m.plan, p)
			taken[p] = true
		}
	}
	for p := range n {
		if taken[p] {
			continue
		}
		best := -1
		for i, m := range members {
			if len(m.plan) >= quota[i] {
				continue
			}
			if best < 0 || len(m.plan) < len(members[best].plan) {
				best = i
			}
		}
		if best < 0 {
			break // cannot happen: the quotas add up to n
		}
		members[best].plan = append(members[best].plan, p)
	}
	for _, m := range members {
		slices.Sort(m.plan)
	}
}
