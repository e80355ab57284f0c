package remote

import "github.com/sony/gobreaker/v2"

// Breakers returns the state of each peer's circuit breaker, by peer link
// address. The process reports them as
// pushlog_breaker_state{component="link",breaker=PEER}, beside every other
// role's breakers (the series is assembled where the registry is built).
func (n *Node) Breakers() map[string]gobreaker.State {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]gobreaker.State, len(n.peers))
	for addr, p := range n.peers {
		out[addr] = p.cb.State()
	}
	return out
}
