package console

import (
	"net/http"
	"time"

	"github.com/pushlog/pushlog/cmd/ops"
)

// overview is GET /api/overview: the cluster as `pushlog status` sees it
// plus the health of Kafka and ClickHouse. Fields are only ever added.
type overview struct {
	Version    string               `json:"version"`
	Time       time.Time            `json:"time"`
	Kafka      health               `json:"kafka"`
	ClickHouse health               `json:"clickhouse"`
	Nodes      []ops.Node           `json:"nodes"`
	Owners     []ops.PartitionOwner `json:"partition_owners"`
	Groups     []groupSummary       `json:"groups"`
	Metrics    []ops.NodeMetrics    `json:"node_metrics"`
	// Totals over the scraped processes.
	Connections float64 `json:"connections"`
	Pending     float64 `json:"pending_messages"`
	// Breakers maps "component/breaker" to the worst state any process
	// reports (open > half-open > closed).
	Breakers map[string]string `json:"breakers"`
	// Process is how far behind this process is, from its own series.
	Process processFigures `json:"process"`
}

// processFigures are this process's pushlog_consumer_group_head_lag,
// pushlog_owner_oldest_pending_age_seconds and
// pushlog_projector_delay_seconds (absent where the role does not run).
type processFigures struct {
	HeadLag          map[string]float64 `json:"head_lag"`
	OldestPendingAge *float64           `json:"oldest_pending_age_seconds"`
	ProjectorDelay   map[string]float64 `json:"projector_delay_seconds"`
}

type health struct {
	Configured bool   `json:"configured"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
	Hint       string `json:"hint,omitempty"`
}

// groupSummary is one consumer group's lag without the per-partition rows.
type groupSummary struct {
	Role    string `json:"role"`
	Group   string `json:"group"`
	State   string `json:"state"`
	Members int    `json:"members"`
	Lag     int64  `json:"lag"`
	// HeadLag is the records the group has not read yet, as this process
	// measures it (connectors: over the partitions this process owns).
	HeadLag *float64 `json:"head_lag,omitempty"`
}

func (c *Console) serveOverview(w http.ResponseWriter, r *http.Request) {
	ov := overview{Version: c.cfg.Version, Time: time.Now().UTC(), Kafka: health{Configured: true}, Breakers: map[string]string{}}
	st, err := c.status.get(r.Context())
	if err != nil {
		ov.Kafka.Error = err.Error()
	} else {
		ov.Kafka.OK = true
		fillOverview(&ov, st)
	}
	ov.Process = processOf(c.sampler.last())
	for i, g := range ov.Groups {
		if v, ok := ov.Process.HeadLag[g.Group]; ok {
			ov.Groups[i].HeadLag = &v
		}
	}
	ov.ClickHouse = c.analytics.health(r.Context())
	writeJSON(w, http.StatusOK, ov)
}

func fillOverview(ov *overview, st *ops.Status) {
	ov.Nodes, ov.Owners, ov.Metrics = st.Nodes, st.Owners, st.Metrics
	for _, g := range st.Groups {
		ov.Groups = append(ov.Groups, groupSummary{Role: g.Role, Group: g.Group, State: g.State, Members: g.Members, Lag: g.Total})
	}
	rank := map[string]int{"closed": 0, "half-open": 1, "open": 2}
	for _, m := range st.Metrics {
		if m.Connections != nil {
			ov.Connections += *m.Connections
		}
		if m.Pending != nil {
			ov.Pending += *m.Pending
		}
		for k, v := range m.Breakers {
			if old, ok := ov.Breakers[k]; !ok || rank[v] > rank[old] {
				ov.Breakers[k] = v
			}
		}
	}
}

func processOf(sm sample) processFigures {
	pf := processFigures{HeadLag: map[string]float64{}, ProjectorDelay: map[string]float64{}}
	for k, v := range sm.process["head_lag"] {
		pf.HeadLag[k] = v
	}
	for k, v := range sm.process["projector_delay"] {
		pf.ProjectorDelay[k] = v
	}
	if v, ok := sm.process["oldest_pending_age"][""]; ok {
		pf.OldestPendingAge = &v
	}
	return pf
}
