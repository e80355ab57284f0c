package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// quantiles returns the nearest-rank quantiles qs (0 < q <= 1) of d; q = 1
// is the maximum. It sorts a copy.
func quantiles(d []time.Duration, qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	if len(d) == 0 {
		return out
	}
	s := slices.Clone(d)
	slices.Sort(s)
	for i, q := range qs {
		rank := int(q*float64(len(s)) + 0.999999999) // ceil without float surprises at exact ranks
		rank = min(max(rank, 1), len(s))
		out[i] = s[rank-1]
	}
	return out
}

// due returns when the i-th push of an open-loop schedule of rate pushes
// per second starting at start is to be sent. Computing each time from i
// (not by adding intervals) keeps rounding from drifting.
func due(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// ms formats a duration in milliseconds with three decimals.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

// report is one RESULT line: ordered key=value pairs.
type report struct {
	kv []string
}

func (r *report) add(key string, value any) {
	var v string
	switch x := value.(type) {
	case time.Duration:
		v = ms(x)
	case float64:
		v = fmt.Sprintf("%.3f", x)
	default:
		v = fmt.Sprint(x)
	}
	r.kv = append(r.kv, key+"="+strings.ReplaceAll(v, " ", "_"))
}

// String is the machine-readable line the bench scripts parse.
func (r *report) String() string { return "RESULT " + strings.Join(r.kv, " ") }

// statusCounts formats status counts as "201:123,429:4" in status order.
func statusCounts(m map[int]int64) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := fmt.Sprint(k)
		if k == 0 {
			name = "err"
		}
		parts = append(parts, fmt.Sprintf("%s:%d", name, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// get returns the value of key ("" if absent).
func (r *report) get(key string) string {
	for _, kv := range r.kv {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}
