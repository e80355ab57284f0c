package ops

import (
	"slices"
	"testing"
)

// TestScrapeTargets: every announced metrics address, then the --node
// URLs, each URL once.
func TestScrapeTargets(t *testing.T) {
	nodes := []Node{
		{NodeID: "a", MetricsAddr: "10.0.0.1:8080"},
		{NodeID: "b"}, // announced none (older version, wildcard listener)
		{NodeID: "c", MetricsAddr: "10.0.0.3:9100"},
	}
	tests := []struct {
		name     string
		nodes    []Node
		explicit []string
		want     []scrapeTarget
	}{
		{"nothing", nil, nil, nil},
		{"explicit only", nil, []string{"h:1", "https://h:2/m"}, []scrapeTarget{{"http://h:1/metrics", ""}, {"https://h:2/m", ""}}},
		{"discovered", nodes, nil, []scrapeTarget{{"http://10.0.0.1:8080/metrics", "a"}, {"http://10.0.0.3:9100/metrics", "c"}}},
		{"both, duplicates once", nodes, []string{"http://10.0.0.1:8080/metrics", "10.0.0.2:8082", "10.0.0.2:8082"}, []scrapeTarget{
			{"http://10.0.0.1:8080/metrics", "a"}, {"http://10.0.0.3:9100/metrics", "c"}, {"http://10.0.0.2:8082/metrics", ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scrapeTargets(tt.nodes, tt.explicit); !slices.Equal(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
