package group

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func noFold(context.Context, *kgo.Client, kgo.Fetches) error { return nil }

func TestConfigDefaults(t *testing.T) {
	ok := Config{Group: "g", Topics: []string{"t"}, Fold: noFold}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"complete", func(*Config) {}, ""},
		{"no group", func(c *Config) { c.Group = "" }, "no consumer group"},
		{"no topics", func(c *Config) { c.Topics = nil }, "no topics"},
		{"no fold", func(c *Config) { c.Fold = nil }, "no Fold"},
		{"negative max records", func(c *Config) { c.MaxRecords = -1 }, "negative"},
		{"negative close timeout", func(c *Config) { c.CloseTimeout = -time.Second }, "negative"},
		{"negative poll gap", func(c *Config) { c.PollGap = -time.Millisecond }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			m, err := New(c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.cfg.Wait() != DefaultWait || m.cfg.Logger == nil {
				t.Fatalf("defaults not applied: wait %v, logger %v", m.cfg.Wait(), m.cfg.Logger)
			}
		})
	}
}

// A poll that came back with records sooner than PollGap is followed by a
// gap; an empty poll, a slow one, a full one (a backlog) or no PollGap
// is not.
func TestNextPoll(t *testing.T) {
	withRecords := func(n int) kgo.Fetches {
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: "t"}
		}
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: []kgo.FetchPartition{{Records: recs}}}}}}
	}
	const gap = 10 * time.Millisecond
	for _, tc := range []struct {
		name    string
		gap     time.Duration
		max     int
		took    time.Duration
		fs      kgo.Fetches
		wantGap bool
	}{
		{"quick poll with records", gap, 100, 0, withRecords(3), true},
		{"empty poll", gap, 100, 0, nil, false},
		{"poll that waited", gap, 100, 2 * gap, withRecords(3), false},
		{"full poll: a backlog", gap, 3, 0, withRecords(3), false},
		{"no gap configured", 0, 100, 0, withRecords(3), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Member{cfg: Config{PollGap: tc.gap, MaxRecords: tc.max}}
			now := time.Unix(1000, 0)
			want := now
			if tc.wantGap {
				want = now.Add(gap)
			}
			if next := m.nextPoll(now.Add(-tc.took), now, tc.fs); !next.Equal(want) {
				t.Fatalf("next poll %v after the return, want %v", next.Sub(now), want.Sub(now))
			}
		})
	}
}

func TestCommitErrors(t *testing.T) {
	resp := func(codes map[int32]int16) *kmsg.OffsetCommitResponse {
		r := kmsg.NewPtrOffsetCommitResponse()
		rt := kmsg.NewOffsetCommitResponseTopic()
		rt.Topic = "t"
		for _, p := range slices.Sorted(func(yield func(int32) bool) {
			for p := range codes {
				if !yield(p) {
					return
				}
			}
		}) {
			rp := kmsg.NewOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p, codes[p]
			rt.Partitions = append(rt.Partitions, rp)
		}
		r.Topics = append(r.Topics, rt)
		return r
	}
	tests := []struct {
		name  string
		codes map[int32]int16
		want  []error
		parts []string
	}{
		{"all committed", map[int32]int16{0: 0, 1: 0}, nil, nil},
		{"one refused", map[int32]int16{0: 0, 1: kerr.IllegalGeneration.Code}, []error{kerr.IllegalGeneration}, []string{"t/1"}},
		{"two refused", map[int32]int16{0: kerr.RebalanceInProgress.Code, 1: kerr.UnknownMemberID.Code},
			[]error{kerr.RebalanceInProgress, kerr.UnknownMemberID}, []string{"t/0", "t/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CommitErrors(resp(tt.codes))
			if (err == nil) != (len(tt.want) == 0) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("err %v is not %v", err, w)
				}
			}
			for _, p := range tt.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("err %v does not name %s", err, p)
				}
			}
		})
	}
}

const (
	testTopic      = "t"
	testPartitions = 2
	testPerPart    = 5
)

// testCluster is a kfake cluster whose topic holds testPerPart records in
// each of its testPartitions partitions.
func testCluster(t *testing.T) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	prod, err := kgo.NewClient(append(slices.Clone(opts), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var recs []*kgo.Record
	for p := range int32(testPartitions) {
		for i := range testPerPart {
			recs = append(recs, &kgo.Record{Topic: testTopic, Partition: p, Value: fmt.Appendf(nil, "%d-%d", p, i)})
		}
	}
	if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return opts
}

// recorder is a role that records what the member calls, in order.
type recorder struct {
	mu      sync.Mutex
	calls   []string          // "assigned", "revoked", "lost", "stop", "blocked"
	offsets map[int32][]int64 // folded records per partition
	folded  chan struct{}     // receives after each Fold that had records
}

func newRecorder() *recorder {
	return &recorder{offsets: map[int32][]int64{}, folded: make(chan struct{}, 100)}
}

func (r *recorder) call(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, what)
}

func (r *recorder) seen(what string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c == what {
			n++
		}
	}
	return n
}

func (r *recorder) folds() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, offs := range r.offsets {
		n += len(offs)
	}
	return n
}

func (r *recorder) fold(_ context.Context, _ *kgo.Client, fs kgo.Fetches) error {
	if fs.NumRecords() == 0 {
		return nil
	}
	r.mu.Lock()
	fs.EachRecord(func(rec *kgo.Record) { r.offsets[rec.Partition] = append(r.offsets[rec.Partition], rec.Offset) })
	r.mu.Unlock()
	r.folded <- struct{}{}
	return nil
}

// config is a member of group "g" wired to r.
func (r *recorder) config(opts []kgo.Opt) Config {
	return Config{
		ClientOpts: opts,
		Group:      "g",
		Topics:     []string{testTopic},
		Opts:       []kgo.Opt{kgo.HeartbeatInterval(100 * time.Millisecond)},
		Wait:       func() time.Duration { return 50 * time.Millisecond },
		Fold:       r.fold,
		Stop:       func(context.Context, *kgo.Client, kgo.Fetches) { r.call("stop") },
		Assigned:   func(context.Context, *kgo.Client, map[string][]int32) { r.call("assigned") },
		Revoked:    func(context.Context, *kgo.Client, map[string][]int32) { r.call("revoked") },
		Lost:       func(context.Context, *kgo.Client, map[string][]int32) { r.call("lost") },
		Blocked:    func() { r.call("blocked") },
	}
}

// runMember runs a member of cfg until stop is called; stop returns Run's
// error.
func runMember(t *testing.T, cfg Config) (stop func() error) {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func committed(t *testing.T, opts []kgo.Opt) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(t.Context(), "g")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) { out[o.Partition] = o.At })
	return out
}

// TestMember runs members on a kfake cluster: what they fold, commit and
// are told, for each way a role plugs in.
func TestMember(t *testing.T) {
	errFold := errors.New("fold failed")
	all := func() map[int32]int64 {
		m := map[int32]int64{}
		for p := range int32(testPartitions) {
			m[p] = testPerPart
		}
		return m
	}
	tests := []struct {
		name string
		// setup adapts the member's config; nil keeps the recorder's.
		setup func(cfg *Config, r *recorder)
		// folds is how many records the member folds before it is stopped.
		folds int
		// wantFrom is the first offset folded per partition.
		wantFrom int64
		// wantErr is Run's error; wantStop whether Stop ran.
		wantErr  error
		wantStop bool
		// wantCommitted is the group's commit after Run returned.
		wantCommitted map[int32]int64
	}{
		{
			name:     "folds from the start, commits nothing by itself",
			folds:    testPartitions * testPerPart,
			wantStop: true, wantCommitted: map[int32]int64{},
		},
		{
			name: "a fold that commits what it folded",
			setup: func(cfg *Config, r *recorder) {
				cfg.Fold = func(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) error {
					offsets := map[string]map[int32]kgo.EpochOffset{}
					fs.EachPartition(func(p kgo.FetchTopicPartition) {
						if n := len(p.Records); n > 0 {
							last := p.Records[n-1]
							if offsets[p.Topic] == nil {
								offsets[p.Topic] = map[int32]kgo.EpochOffset{}
							}
							offsets[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}
						}
					})
					if len(offsets) > 0 {
						if err := Commit(ctx, cl, offsets); err != nil {
							return err
						}
					}
					return r.fold(ctx, cl, fs)
				}
			},
			folds:    testPartitions * testPerPart,
			wantStop: true, wantCommitted: all(),
		},
		{
			name: "adjust decides where partitions start",
			setup: func(cfg *Config, _ *recorder) {
				cfg.Adjust = func(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
					for _, parts := range offsets {
						for p := range parts {
							parts[p] = kgo.NewOffset().At(3)
						}
					}
					return offsets, nil
				}
			},
			folds:    testPartitions * (testPerPart - 3),
			wantFrom: 3, wantStop: true, wantCommitted: map[int32]int64{},
		},
		{
			name: "a failing fold ends Run without Stop",
			setup: func(cfg *Config, r *recorder) {
				cfg.Fold = func(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) error {
					if fs.NumRecords() == 0 {
						return nil
					}
					r.call("failed")
					return errFold
				}
			},
			wantErr: errFold, wantCommitted: map[int32]int64{},
		},
		{
			// A gap longer than the test: the first poll that comes back
			// with records is followed by a gap the stop lands in, and
			// Stop still runs once, and promptly.
			name: "stopped during a poll gap",
			setup: func(cfg *Config, _ *recorder) {
				cfg.MaxRecords, cfg.PollGap = 0, time.Hour
			},
			folds:    1,
			wantStop: true, wantCommitted: map[int32]int64{},
		},
		{
			name: "a poll gap folds every record",
			setup: func(cfg *Config, _ *recorder) {
				cfg.PollGap = time.Millisecond
			},
			folds:    testPartitions * testPerPart,
			wantStop: true, wantCommitted: map[int32]int64{},
		},
		{
			name: "a bounded close",
			setup: func(cfg *Config, _ *recorder) {
				cfg.CloseTimeout = 5 * time.Second
			},
			folds:    testPartitions * testPerPart,
			wantStop: true, wantCommitted: map[int32]int64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testCluster(t)
			r := newRecorder()
			cfg := r.config(opts)
			if tt.setup != nil {
				tt.setup(&cfg, r)
			}
			stop := runMember(t, cfg)
			var err error
			if tt.wantErr != nil {
				waitFor(t, "the failing fold", func() bool { return r.seen("failed") > 0 })
				err = stop()
			} else {
				waitFor(t, "every record", func() bool { return r.folds() >= tt.folds })
				err = stop()
			}
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Run: %v, want %v", err, tt.wantErr)
			}
			if got := r.seen("stop"); got != map[bool]int{true: 1}[tt.wantStop] {
				t.Errorf("Stop ran %d times, want stop=%v", got, tt.wantStop)
			}
			if r.seen("assigned") != 1 {
				t.Errorf("calls %v: want one assignment", r.calls)
			}
			if tt.wantErr == nil && r.seen("revoked") != 1 {
				t.Errorf("calls %v: leaving the group must revoke once", r.calls)
			}
			if r.seen("lost") != 0 {
				t.Errorf("calls %v: nothing was lost", r.calls)
			}
			for p, offs := range r.offsets {
				want := make([]int64, 0, testPerPart)
				for o := tt.wantFrom; o < testPerPart; o++ {
					want = append(want, o)
				}
				if !slices.Equal(offs, want) {
					t.Errorf("partition %d folded %v, want %v", p, offs, want)
				}
			}
			if got := committed(t, opts); !maps.Equal(got, tt.wantCommitted) {
				t.Errorf("committed %v, want %v", got, tt.wantCommitted)
			}
		})
	}
}

// TestRebalanceWaitsForFold: a member joining while another is inside
// Fold makes the first's Blocked run, and its partitions are revoked only
// after that Fold returned, never during it.
func TestRebalanceWaitsForFold(t *testing.T) {
	opts := testCluster(t)
	first := newRecorder()
	release := make(chan struct{})
	inFold := make(chan struct{}, 1)
	var folding sync.Mutex // held while the first member is inside Fold
	cfg := first.config(opts)
	cfg.Fold = func(ctx context.Context, cl *kgo.Client, fs kgo.Fetches) error {
		if fs.NumRecords() == 0 {
			return nil
		}
		folding.Lock()
		defer folding.Unlock()
		select {
		case inFold <- struct{}{}:
			<-release // only the first fold with records waits
		default:
		}
		return first.fold(ctx, cl, fs)
	}
	cfg.Revoked = func(context.Context, *kgo.Client, map[string][]int32) {
		if !folding.TryLock() {
			first.call("revoked during fold")
			return
		}
		folding.Unlock()
		first.call("revoked")
	}
	stopFirst := runMember(t, cfg)
	<-inFold

	second := newRecorder()
	stopSecond := runMember(t, second.config(opts))
	waitFor(t, "the blocked rebalance", func() bool { return first.seen("blocked") > 0 })
	if first.seen("revoked") != 0 || first.seen("revoked during fold") != 0 {
		t.Fatalf("calls %v: revoked while a fold was running", first.calls)
	}
	close(release)
	waitFor(t, "the second member's assignment", func() bool { return second.seen("assigned") > 0 })
	if err := stopSecond(); err != nil {
		t.Fatal(err)
	}
	if err := stopFirst(); err != nil {
		t.Fatal(err)
	}
	if first.seen("revoked during fold") != 0 || first.seen("revoked") == 0 {
		t.Fatalf("calls %v: want revocations, none while a fold was running", first.calls)
	}
}
