package analytics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEventDelay: the delay is the age of the oldest unstored record, 0
// once the batch is stored or given up; the newest stored time only moves
// forward.
func TestEventDelay(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ms := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	type step struct {
		name       string
		do         func(d *eventDelay)
		now        time.Duration
		wantDelay  float64
		wantStored float64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"nothing polled", []step{{"idle", func(*eventDelay) {}, time.Hour, 0, 0}}},
		{"a batch ages until stored", []step{
			{"two records", func(d *eventDelay) { d.added(ms(10 * time.Second)); d.added(ms(5 * time.Second)) }, 20 * time.Second, 15, 0},
			{"ClickHouse down: it grows", func(*eventDelay) {}, 80 * time.Second, 75, 0},
			{"stored", func(d *eventDelay) { d.flushed() }, 81 * time.Second, 0, float64(ms(10*time.Second)) / 1000},
			{"idle afterwards: no delay", func(*eventDelay) {}, time.Hour, 0, float64(ms(10*time.Second)) / 1000},
		}},
		{"a given-up batch", []step{
			{"one record", func(d *eventDelay) { d.added(ms(0)) }, 3 * time.Second, 3, 0},
			{"abandoned", func(d *eventDelay) { d.dropped() }, 4 * time.Second, 0, 0},
		}},
		{"an older batch stored later keeps the newest", []step{
			{"new", func(d *eventDelay) { d.added(ms(time.Minute)); d.flushed() }, time.Minute, 0, float64(ms(time.Minute)) / 1000},
			{"replayed older", func(d *eventDelay) { d.added(ms(0)); d.flushed() }, time.Minute, 0, float64(ms(time.Minute)) / 1000},
		}},
		{"record time ahead of the clock", []step{
			{"future", func(d *eventDelay) { d.added(ms(time.Minute)) }, 0, 0, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d eventDelay
			for _, s := range tt.steps {
				s.do(&d)
				if got := d.delay(t0.Add(s.now)); got != s.wantDelay {
					t.Errorf("%s: delay %v, want %v", s.name, got, s.wantDelay)
				}
				if got := d.newestStored(); got != s.wantStored {
					t.Errorf("%s: newest stored %v, want %v", s.name, got, s.wantStored)
				}
			}
		})
	}
}

// TestDelayMetrics: the projector exposes its delay and newest stored
// time beside its counters.
func TestDelayMetrics(t *testing.T) {
	p := &Projector{}
	reg := prometheus.NewPedanticRegistry()
	if err := register(reg, p.collectors()...); err != nil {
		t.Fatal(err)
	}
	p.delay.added(time.Now().Add(-time.Hour).UnixMilli())
	p.delay.flushed()
	want := `
# HELP pushlog_projector_delay_seconds Event-time delay: now minus the time of the oldest record polled but not yet stored in ClickHouse; 0 when everything polled is stored.
# TYPE pushlog_projector_delay_seconds gauge
pushlog_projector_delay_seconds{projector="analytics"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushlog_projector_delay_seconds"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "pushlog_projector_newest_stored_event_timestamp_seconds"); err != nil || n != 1 {
		t.Fatalf("newest stored series: %d, %v", n, err)
	}
	p.delay.added(time.Now().Add(-time.Minute).UnixMilli())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pushlog_projector_delay_seconds" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 59 || v > 70 {
				t.Fatalf("delay %v, want about 60s", v)
			}
		}
	}
}
