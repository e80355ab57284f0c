package ops

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// TestCheckTopicsCreateBrokerDefaultReplication: `topics --create` with
// --replication -1 on a cluster whose default replication is 3 sets
// min.insync.replicas 2 and so does not flag its own creation.
func TestCheckTopicsCreateBrokerDefaultReplication(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names, _ := schema.NamesFor("rfdefault")
	reps, err := CheckTopics(ctx(t), adm, TopicCheck{Names: names, MaxTTL: time.Hour, Partitions: 2, Create: true, Replication: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !OK(reps) {
		t.Fatalf("created topics flagged: %+v", reps)
	}
	for _, r := range reps {
		if r.Replicas != 3 || r.MinInsync != 2 {
			t.Errorf("%s: replicas %d, min.insync.replicas %d; want 3 and 2", r.Topic, r.Replicas, r.MinInsync)
		}
	}
}
