package projector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMetricsRegistered: the channel projector and the gone set register
// their series on the given registry and read them at scrape time.
func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	opts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	p, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: opts, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewGoneSet(GoneSetConfig{ClientOpts: opts, Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	p.stats.batches.Add(2)
	p.stats.records.Add(7)
	p.stats.snapshots.Add(3)
	want := `
# HELP pushlog_ingest_gone_aged_total UAIDs whose gone facts aged out of ingest's gone set (unchanged for the UAID expiry).
# TYPE pushlog_ingest_gone_aged_total counter
pushlog_ingest_gone_aged_total 0
# HELP pushlog_ingest_gone_capped_total Unregistered channels forgotten by ingest's gone set past its per-UAID bound (they then get 201, the owner drops what it knows is gone).
# TYPE pushlog_ingest_gone_capped_total counter
pushlog_ingest_gone_capped_total 0
# HELP pushlog_ingest_gone_entries UAIDs with gone facts (reset, or unregistered channels) in ingest's gone set.
# TYPE pushlog_ingest_gone_entries gauge
pushlog_ingest_gone_entries 0
# HELP pushlog_projector_batches_total Batches a projector completely stored (and committed).
# TYPE pushlog_projector_batches_total counter
pushlog_projector_batches_total{projector="channels"} 2
# HELP pushlog_projector_expired_total Reset UAIDs whose record left the channels topic after the UAID expiry.
# TYPE pushlog_projector_expired_total counter
pushlog_projector_expired_total{projector="channels"} 0
# HELP pushlog_projector_migrated_total UAIDs whose format-1 channel snapshot was rewritten as format-2 records.
# TYPE pushlog_projector_migrated_total counter
pushlog_projector_migrated_total{projector="channels"} 0
# HELP pushlog_projector_quarantined_total Records or states a projector skipped as poison (oversized, refused by Kafka); each is logged as an error.
# TYPE pushlog_projector_quarantined_total counter
pushlog_projector_quarantined_total{projector="channels"} 0
# HELP pushlog_projector_records_total Records a projector polled.
# TYPE pushlog_projector_records_total counter
pushlog_projector_records_total{projector="channels"} 7
# HELP pushlog_projector_rows_total Rows (analytics) or snapshots (channels) a projector wrote.
# TYPE pushlog_projector_rows_total counter
pushlog_projector_rows_total{projector="channels"} 3
# HELP pushlog_projector_unregistered_capped_total Unregistered channels forgotten (tombstoned) because their UAID has more than 1024 newer ones (register/unregister churn).
# TYPE pushlog_projector_unregistered_capped_total counter
pushlog_projector_unregistered_capped_total{projector="channels"} 0
# HELP pushlog_projector_unregistered_expired_total Unregistered channels forgotten (tombstoned) after the UAID expiry: their endpoints stop answering 410.
# TYPE pushlog_projector_unregistered_expired_total counter
pushlog_projector_unregistered_expired_total{projector="channels"} 0
# HELP pushlog_projector_written_bytes_total Bytes (keys + values) the channel projector wrote to the channels topic.
# TYPE pushlog_projector_written_bytes_total counter
pushlog_projector_written_bytes_total{projector="channels"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Batches != 2 || s.Records != 7 || s.Snapshots != 3 {
		t.Fatalf("Stats %+v", s)
	}
	// A second projector on the same registry is refused, not silently merged.
	if _, err := NewChannelProjector(ChannelProjectorConfig{ClientOpts: opts, Metrics: reg}); err == nil {
		t.Fatal("duplicate registration accepted")
	}
}
