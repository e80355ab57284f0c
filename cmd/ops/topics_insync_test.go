package ops

import (
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/schema"
)

// TestInsyncMismatch covers the min.insync.replicas rules: impossible
// values always, the explicit setting exactly, and with the default a
// replicated topic acknowledged by one broker or stopped by one failure.
func TestInsyncMismatch(t *testing.T) {
	tests := []struct {
		name    string
		setting int16
		rf, got int
		problem string // "" when fine
		fix     string
	}{
		{"auto, single broker", schema.MinInsyncAuto, 1, 1, "", ""},
		{"auto, rf 3 isr 2", schema.MinInsyncAuto, 3, 2, "", ""},
		{"auto, rf 5 isr 3", schema.MinInsyncAuto, 5, 3, "", ""},
		{"auto, rf 3 isr 1", schema.MinInsyncAuto, 3, 1, "single broker", "min.insync.replicas=2"},
		{"auto, rf 3 isr 3", schema.MinInsyncAuto, 3, 3, "one broker down stops every push", "min.insync.replicas=2"},
		{"auto, rf 2 isr 1", schema.MinInsyncAuto, 2, 1, "", ""},
		{"auto, isr above rf", schema.MinInsyncAuto, 1, 2, "every append fails", "min.insync.replicas=1"},
		{"broker, rf 3 isr 1", schema.MinInsyncBroker, 3, 1, "", ""},
		{"broker, isr above rf", schema.MinInsyncBroker, 3, 4, "every append fails", "min.insync.replicas=2"},
		{"explicit match", 3, 5, 3, "", ""},
		{"explicit differs", 3, 5, 2, "--min-insync-replicas is 3", "min.insync.replicas=3"},
		{"explicit, rf 3 isr 3", 3, 3, 3, "", ""},
		{"explicit above rf", 3, 2, 1, "every append would fail", "--min-insync-replicas 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := TopicCheck{MinInsyncReplicas: tt.setting, Bootstrap: "k:9092"}
			m, bad := insyncMismatch("t.messages", tt.rf, tt.got, c)
			if tt.problem == "" {
				if bad {
					t.Fatalf("unexpected mismatch: %+v", m)
				}
				return
			}
			alter := strings.Contains(m.Fix, "kafka-configs.sh")
			if !bad || !strings.Contains(m.Problem, tt.problem) || !strings.Contains(m.Fix, tt.fix) ||
				alter && (!strings.Contains(m.Fix, "k:9092") || !strings.Contains(m.Fix, "--entity-name t.messages")) {
				t.Fatalf("got %v %+v, want a problem with %q and a fix with %q", bad, m, tt.problem, tt.fix)
			}
		})
	}
}

// TestCheckTopicsMinInsync: created topics carry the setting and verify;
// a later check with another setting reports every topic with the fix.
func TestCheckTopicsMinInsync(t *testing.T) {
	_, adm := newAdmin(t)
	names, _ := schema.NamesFor("isr")
	reps, err := CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour, Partitions: 2, Create: true, Replication: 1, MinInsyncReplicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !OK(reps) {
		t.Fatalf("created topics: %+v", reps)
	}
	for _, r := range reps {
		if r.Replicas != 1 || r.MinInsync != 1 {
			t.Errorf("%s: replicas %d, min.insync.replicas %d; want 1 and 1", r.Topic, r.Replicas, r.MinInsync)
		}
	}
	reps, err = CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour, MinInsyncReplicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		// A setting of 2 differs from the topics' 1 and is impossible
		// with 1 replica: the impossible one is what needs fixing.
		if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Problem, "every append would fail") {
			t.Errorf("%s: %+v", r.Topic, r.Problems)
		}
	}
}
