package remote

import (
	"sort"

	"github.com/pushlog/pushlog/schema/metrics"
)

// Breakers returns the state of each peer's circuit breaker, by peer
// link address (pushlog_breaker_state{component="link"}).
func (n *Node) Breakers() []metrics.Breaker {
	n.mu.Lock()
	out := make([]metrics.Breaker, 0, len(n.peers))
	for addr, p := range n.peers {
		out = append(out, metrics.Breaker{Name: addr, State: p.cb.State()})
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
