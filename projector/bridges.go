package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// DefaultBridgeTableEntries bounds the bridged UAIDs a BridgeTable keeps.
const DefaultBridgeTableEntries = 1_000_000

// BridgeTableConfig configures a BridgeTable.
type BridgeTableConfig struct {
	// Names are the topic names; zero means schema.DefaultNames().
	Names schema.Names
	// ClientOpts connect to Kafka; the table consumes without a group.
	ClientOpts []kgo.Opt
	Logger     *slog.Logger
	// Metrics registers pushlog_ingest_bridge_uaids and the overflow
	// counter; nil: none.
	Metrics prometheus.Registerer
	// MaxEntries bounds the bridged UAIDs kept (default 1,000,000, about
	// 400 bytes each with a few channels). Past it new bridged UAIDs are
	// not tracked (counted): their registration API calls answer 410 and
	// the device registers again, which is autopush's own answer to a
	// lost user record.
	MaxEntries int
}

// BridgeReg is a bridged UAID as the table knows it.
type BridgeReg struct {
	RouterType, AppID, Token, Aps string
	RegisteredMs                  int64    // time of the newest BridgeRegistered
	Channels                      []string // registered channel ids, sorted
}

// BridgeTable is ingest's view of the UAIDs registered through the mobile
// registration API (issue 14): which UAIDs are bridged, with which app and
// token, and their registered channels, for the API's UAID checks and its
// GET of channels. Only bridged UAIDs cost memory.
//
// It reads pushlog.registrations from its earliest offset (the last week)
// and, for the UAIDs found bridged there, their channel records in the
// compacted pushlog.channels (channels older than the registrations'
// retention); a channels record counts only when newer (by registrations
// offset) than what the log said of that channel. Then it follows
// pushlog.registrations. A BridgeRegistered older than the retention is
// gone from the log: the registration API re-appends it when it is older
// than a day on the device's daily GET (autopush's liveness check), so an
// active device never falls out.
type BridgeTable struct {
	cfg      BridgeTableConfig
	log      *slog.Logger
	mu       sync.RWMutex
	m        map[string]*bridgeEntry
	overflow prometheus.Counter
	started  atomic.Bool
	ready    chan struct{}
	done     chan struct{}
	runErr   error
}

type bridgeEntry struct {
	reg   BridgeReg // Channels unused here: chans is the truth
	chans map[string]int64
	// unreg: channels unregistered in the log (registrations offset),
	// kept during the bootstrap only, so an older channels record does not
	// bring them back.
	unreg map[string]int64
}

// NewBridgeTable builds a table; Run fills it.
func NewBridgeTable(cfg BridgeTableConfig) (*BridgeTable, error) {
	if cfg.Names.Registrations == "" {
		cfg.Names = schema.DefaultNames()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultBridgeTableEntries
	}
	t := &BridgeTable{cfg: cfg, log: cfg.Logger, m: map[string]*bridgeEntry{},
		ready: make(chan struct{}), done: make(chan struct{})}
	t.overflow = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pushlog_ingest_bridge_table_overflow_total",
		Help: "Bridged UAIDs not tracked because the bridge table held --bridge-table-entries.",
	})
	if cfg.Metrics != nil {
		size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushlog_ingest_bridge_uaids",
			Help: "Bridged UAIDs (FCM/APNs registrations) this ingest node knows.",
		}, func() float64 { return float64(t.Len()) })
		for _, c := range []prometheus.Collector{size, t.overflow} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("bridge table metrics: %w", err)
			}
		}
	}
	return t, nil
}

// Len is the number of bridged UAIDs known.
func (t *BridgeTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// Lookup returns a bridged UAID's registration.
func (t *BridgeTable) Lookup(uaid string) (BridgeReg, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.m[uaid]
	if !ok {
		return BridgeReg{}, false
	}
	r := e.reg
	r.Channels = slices.Sorted(maps.Keys(e.chans))
	return r, true
}

// Apply folds an event this node has just written (its offset is not
// known here: it is folded again when read back).
func (t *BridgeTable) Apply(ev *pb.Event) { t.apply(ev, -1, false) }

// apply folds one registrations event at offset (-1: a local write).
func (t *BridgeTable) apply(ev *pb.Event, off int64, bootstrap bool) {
	uaid := ev.GetUaid()
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[uaid]
	switch b := ev.GetBody().(type) {
	case *pb.Event_BridgeRegistered:
		if e == nil {
			if len(t.m) >= t.cfg.MaxEntries {
				t.overflow.Inc()
				return
			}
			e = &bridgeEntry{chans: map[string]int64{}}
			t.m[uaid] = e
		}
		br := b.BridgeRegistered
		e.reg = BridgeReg{RouterType: br.GetRouterType(), AppID: br.GetAppId(), Token: br.GetToken(), Aps: br.GetAps(),
			RegisteredMs: max(e.reg.RegisteredMs, ev.GetTimeMs())}
	case *pb.Event_ChannelRegistered:
		if e != nil {
			e.chans[b.ChannelRegistered.GetChannelId()] = off
		}
	case *pb.Event_ChannelUnregistered:
		if e != nil {
			ch := b.ChannelUnregistered.GetChannelId()
			delete(e.chans, ch)
			if bootstrap {
				if e.unreg == nil {
					e.unreg = map[string]int64{}
				}
				e.unreg[ch] = off
			}
		}
	case *pb.Event_UserReset:
		delete(t.m, uaid)
	}
}

// applyChannels adds a registered channel from pushlog.channels to a
// bridged UAID unless the log said something newer of it.
func (t *BridgeTable) applyChannels(f schema.ChannelsFact) {
	if f.Kind != schema.ChannelsChannel || f.Deleted || f.Entry == nil || f.Entry.GetUnregistered() {
		return
	}
	uaid := schema.UAID(f.UAID).String()
	ch := schema.FormatChannelID(f.Channel[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[uaid]
	if e == nil {
		return
	}
	at := f.RegOffset - 1 // the registrations offset of the event it folded
	if off, ok := e.unreg[ch]; ok && off >= at {
		return
	}
	if _, ok := e.chans[ch]; !ok {
		e.chans[ch] = at
	}
}

// Ready reports whether the bootstrap is done.
func (t *BridgeTable) Ready() bool {
	select {
	case <-t.ready:
		return true
	default:
		return false
	}
}

// WaitReady returns once the bootstrap is done, or when ctx ends or Run
// stopped first.
func (t *BridgeTable) WaitReady(ctx context.Context) error {
	select {
	case <-t.ready:
		return nil
	case <-t.done:
		return fmt.Errorf("bridge table stopped before it was ready: %w", cmpErr(t.runErr))
	case <-ctx.Done():
		return fmt.Errorf("bridge table not ready: %w", ctx.Err())
	}
}

func cmpErr(err error) error {
	if err == nil {
		return errors.New("stopped")
	}
	return err
}

// Run bootstraps the table and follows pushlog.registrations until ctx
// ends (then it returns nil). It may be called once.
func (t *BridgeTable) Run(ctx context.Context) (err error) {
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("bridge table: Run called twice")
	}
	defer func() {
		t.runErr = err
		close(t.done)
	}()
	parent := ctx
	stopped := func(err error) error {
		if parent.Err() != nil {
			return nil
		}
		return fmt.Errorf("bridge table: %w", err)
	}
	regs, err := t.reader(t.cfg.Names.Registrations)
	if err != nil {
		return err
	}
	defer regs.Close()
	adm := kadm.NewClient(regs)
	var regTargets, chTargets map[int32]int64
	err = retryKafka(ctx, t.log.Warn, "list high watermarks", func() (err error) {
		if regTargets, err = channelTargets(ctx, adm, t.cfg.Names.Registrations, nil); err != nil {
			return err
		}
		chTargets, err = channelTargets(ctx, adm, t.cfg.Names.Channels, nil)
		return err
	})
	if err != nil {
		return stopped(err)
	}
	if err := t.consume(ctx, regs, regTargets, true); err != nil {
		return stopped(fmt.Errorf("load registrations: %w", err))
	}
	chans, err := t.reader(t.cfg.Names.Channels)
	if err != nil {
		return err
	}
	err = t.consume(ctx, chans, chTargets, true)
	chans.Close()
	if err != nil {
		return stopped(fmt.Errorf("load channels: %w", err))
	}
	t.mu.Lock()
	for _, e := range t.m {
		e.unreg = nil
	}
	t.mu.Unlock()
	close(t.ready)
	t.log.Info("bridge table ready", "bridged_uaids", t.Len())
	return stopped(t.consume(ctx, regs, nil, false))
}

func (t *BridgeTable) reader(topic string) (*kgo.Client, error) {
	return startReader(t.cfg.ClientOpts, "bridge table", topic)
}

// consume folds records until every partition in targets is reached (nil
// targets: until ctx ends).
func (t *BridgeTable) consume(ctx context.Context, cl *kgo.Client, targets map[int32]int64, bootstrap bool) error {
	return consumeRecords(ctx, cl, t.log, targets, func(r *kgo.Record) { t.applyRecord(r, bootstrap) }, nil)
}

func (t *BridgeTable) applyRecord(r *kgo.Record, bootstrap bool) {
	if r.Topic == t.cfg.Names.Channels {
		f, err := schema.DecodeChannels(r)
		if err != nil {
			channelLogSkip(t.log, r, err)
			return
		}
		t.applyChannels(f)
		return
	}
	ev, err := schema.Decode(r)
	if err != nil {
		channelLogSkip(t.log, r, err)
		return
	}
	t.apply(ev, r.Offset, bootstrap)
}
