package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pushlog/pushlog/ingest"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// importCmd brings users of another push service into pushlog.
type importCmd struct {
	Autopush importAutopushCmd `cmd:"" help:"Import the users, channels and stored messages of Mozilla autopush-rs's Redis backend, so browsers keep their UAID and subscriptions (idempotent)."`
}

// importAutopushCmd reads autopush-rs's Redis layout (autopush-common
// src/db/redis):
//
//	autopush/user/{uaid}      JSON user record (uaid, connected_at, router_type, ...)
//	autopush/channels/{uaid}  list of the channel ids (dashed UUIDs)
//	autopush/timestamp/{uaid} messages scored below it were delivered and acked
//	autopush/msgs/{uaid}      sorted set of pending message ids, scored by storage time (s)
//	autopush/msg/{uaid}/{id}  JSON stored notification (channelID, version, timestamp, ttl, topic, data, headers)
//
// with {uaid} the dashed UUID. Each channel becomes a ChannelRegistered
// and each pending message a MessageAccepted with its remaining TTL. A
// mobile user (router_type fcm or apns) first gets the BridgeRegistered
// its router_data describes, unless pushlog already has one for the UAID.
// Idempotent: pushlog's state is read first (the channels and
// registrations topics; the messages topic for the import's own event ids,
// which are derived from the record they come from), and a channel or
// message already there is not written again. A channel pushlog knows as
// unregistered, or a UAID it reset, is left alone: the browser has moved on.
type importAutopushCmd struct {
	kafkaFlags `embed:""`
	Redis      string        `required:"" env:"AUTOPUSH_REDIS_URL" help:"autopush's Redis (its db_dsn): redis://[user:password@]host:port[/db] or rediss://."`
	MaxTTL     time.Duration `default:"720h" env:"PUSHLOG_MAX_TTL" help:"The deployment's --max-ttl: longer remaining TTLs are clamped."`
	Batch      int           `default:"500" help:"Users read from Redis per round trip."`
	DryRun     bool          `help:"Read everything and print what would be imported; write nothing."`
}

// Bounds on what a Redis record may hold (it came from senders through
// autopush, which allows 4096-byte bodies): larger records are counted and
// skipped, never written.
const (
	importMaxRecord   = 64 << 10 // one user or message record, as stored
	importMaxPayload  = 8 << 10  // a decoded message body
	importMaxHeaders  = 4 << 10  // encryption + crypto_key
	importMaxChannels = 10000    // channels read per user
	importMaxMessages = 1000     // pending messages read per user
	importMaxTopic    = 32       // autopush's own topic bound
	// importIDMarker starts the id of every event the import writes; the
	// other 12 bytes are a hash of the record it comes from, so a second
	// run recognises what the first wrote.
	importIDMarker = "apim"
)

// importStats is what an import did, for its summary line.
type importStats struct {
	Users, UsersImported, Channels, Messages            int
	BridgeUsers, BridgesPresent                         int
	NoChannels, NotWebpush, UAIDReset, BadRecords       int
	ChannelsPresent, ChannelsGone                       int
	MessagesPresent, MessagesExpired, MessagesNoChannel int
	BadMessages                                         int
}

func (s importStats) String() string {
	// The bridge counts come last: the line's start is what scripts read.
	return fmt.Sprintf("import autopush: %d users read, %d imported: %d channels registered, %d messages stored; "+
		"skipped: %d users without channels, %d users of other routers, %d users reset in pushlog, %d unreadable users; "+
		"%d channels already in pushlog, %d unregistered in pushlog; "+
		"%d messages already imported, %d expired, %d for channels not registered, %d unreadable messages; "+
		"%d bridge users imported, %d already bridged in pushlog",
		s.Users, s.UsersImported, s.Channels, s.Messages,
		s.NoChannels, s.NotWebpush, s.UAIDReset, s.BadRecords,
		s.ChannelsPresent, s.ChannelsGone,
		s.MessagesPresent, s.MessagesExpired, s.MessagesNoChannel, s.BadMessages,
		s.BridgeUsers, s.BridgesPresent)
}

func (c *importAutopushCmd) Run(ctx context.Context) error {
	if c.Batch <= 0 {
		return fmt.Errorf("--batch: %d must be positive", c.Batch)
	}
	if c.MaxTTL < time.Second {
		return fmt.Errorf("--max-ttl: %s is below 1s", c.MaxTTL)
	}
	names, err := c.resolve() // the brokers given, else the embedded serve's on --data-dir
	if err != nil {
		return err
	}
	ropts, err := redis.ParseURL(c.Redis)
	if err != nil {
		return fmt.Errorf("--redis: %w", err)
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", ropts.Addr, err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.KafkaBrokers...), kgo.ClientID("pushlog-import"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	partitions, err := importPartitions(ctx, kadm.NewClient(cl), names)
	if err != nil {
		return err
	}
	existing, err := readPushlogState(ctx, cl, names)
	if err != nil {
		return err
	}
	im := &autopushImport{
		rdb: rdb, names: names, partitions: partitions, existing: existing,
		maxTTL: int64(c.MaxTTL / time.Second), now: time.Now(), dryRun: c.DryRun,
	}
	if !c.DryRun {
		im.produce = func(ctx context.Context, recs []*kgo.Record) error {
			return cl.ProduceSync(ctx, recs...).FirstErr()
		}
	}
	keys, err := scanUsers(ctx, rdb)
	if err != nil {
		return err
	}
	prog := newProgress(os.Stderr, "users", int64(len(keys)))
	for batch := range slices.Chunk(keys, c.Batch) {
		if err := im.importBatch(ctx, batch); err != nil {
			return err
		}
		prog.Add(int64(len(batch)))
	}
	prog.Finish()
	line := im.stats.String()
	if c.DryRun {
		line += " (dry run: nothing written)"
	}
	fmt.Println(line)
	return nil
}

// importPartitions returns the deployment's partition count; its topics
// must exist (a serve created them).
func importPartitions(ctx context.Context, adm *kadm.Client, names schema.Names) (int32, error) {
	details, err := adm.ListTopics(ctx, names.Registrations, names.Messages, names.Channels)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	var n int32
	for _, t := range []string{names.Registrations, names.Messages, names.Channels} {
		d, ok := details[t]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("topic %s is missing (wrong --namespace, or start pushlog serve once first)", t)
		}
		if n != 0 && int32(len(d.Partitions)) != n {
			return 0, fmt.Errorf("topic %s has %d partitions, others %d: topics must be co-partitioned", t, len(d.Partitions), n)
		}
		n = int32(len(d.Partitions))
	}
	return n, nil
}

// pushlogState is what the deployment already holds: every UAID's channel
// state, the UAIDs with a bridge registration, and the ids of the messages
// earlier imports wrote.
type pushlogState struct {
	channels map[schema.UAID]string // packed channel states (packState)
	bridged  map[schema.UAID]bool   // a BridgeRegistered is on the registrations topic
	imported map[[16]byte]bool      // event ids starting with importIDMarker
}

// A UAID's channel state is kept packed, since a migration may read
// millions: the registrations offset folded (8 bytes), the reset flag (1),
// then per channel its id (16) and an unregistered flag (1); key hashes
// and times are not needed to decide what to import. Every fold goes
// through schema's functions on the UAID's state unpacked and packed
// again, so the semantics stay schema's.
func packState(st *pb.ChannelState) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9+17*len(st.GetChannels())), uint64(st.GetRegistrationsOffset()))
	b = append(b, boolByte(st.GetUaidReset()))
	for _, ch := range st.GetChannels() {
		id, err := schema.ParseChannelID(ch.GetChannelId())
		if err != nil {
			continue
		}
		b = append(append(b, id[:]...), boolByte(ch.GetUnregistered()))
	}
	return string(b)
}

func unpackState(s string) *pb.ChannelState {
	if len(s) < 9 {
		return &pb.ChannelState{}
	}
	st := &pb.ChannelState{RegistrationsOffset: int64(binary.BigEndian.Uint64([]byte(s[:8]))), UaidReset: s[8] == 1}
	for i := 9; i+17 <= len(s); i += 17 {
		st.Channels = append(st.Channels, &pb.Channel{ChannelId: schema.FormatChannelID([]byte(s[i : i+16])), Unregistered: s[i+16] == 1})
	}
	return st
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// state returns the UAID's channel state (nil: pushlog does not know it).
func (p *pushlogState) state(id schema.UAID) *pb.ChannelState {
	s, ok := p.channels[id]
	if !ok {
		return nil
	}
	return unpackState(s)
}

// foldChannels applies a channels-topic record of the UAID.
func (p *pushlogState) foldChannels(f schema.ChannelsFact) {
	one := map[string]*pb.ChannelState{}
	key := schema.UAID(f.UAID).String()
	if st := p.state(schema.UAID(f.UAID)); st != nil {
		one[key] = st
	}
	schema.FoldChannelsFact(one, f)
	if st, ok := one[key]; ok {
		p.channels[schema.UAID(f.UAID)] = packState(st)
	} else {
		delete(p.channels, schema.UAID(f.UAID))
	}
}

// applyRegistration applies a registrations-topic event at offset.
func (p *pushlogState) applyRegistration(ev *pb.Event, offset int64) {
	id, err := schema.ParseUAID(ev.GetUaid())
	if err != nil {
		return
	}
	if ev.GetBridgeRegistered() != nil {
		// The registrations topic is where bridge registrations live (the
		// bridge table reads it; ingest re-appends them daily within its
		// retention), so this is the deployment's own view.
		p.bridged[id] = true
	}
	st := p.state(id)
	if st == nil {
		st = &pb.ChannelState{}
	}
	// Offsets of the registrations topic are what the channels records
	// count, so an event already folded there is skipped.
	schema.ApplyRegistration(st, ev, offset)
	p.channels[id] = packState(st)
}

// readPushlogState reads the channels topic, then the registrations topic
// (events the channel projector may not have folded yet), then the ids of
// the messages topic, each up to its end when the import starts.
func readPushlogState(ctx context.Context, cl *kgo.Client, names schema.Names) (*pushlogState, error) {
	st := &pushlogState{channels: map[schema.UAID]string{}, bridged: map[schema.UAID]bool{}, imported: map[[16]byte]bool{}}
	err := readTopic(ctx, cl, names.Channels, func(r *kgo.Record) {
		if f, err := schema.DecodeChannels(r); err == nil {
			st.foldChannels(f)
		}
	})
	if err != nil {
		return nil, err
	}
	err = readTopic(ctx, cl, names.Registrations, func(r *kgo.Record) {
		if ev, err := schema.Decode(r); err == nil {
			st.applyRegistration(ev, r.Offset)
		}
	})
	if err != nil {
		return nil, err
	}
	err = readTopic(ctx, cl, names.Messages, func(r *kgo.Record) {
		if id, ok := eventID(r.Value); ok && strings.HasPrefix(string(id[:]), importIDMarker) {
			st.imported[id] = true
		}
	})
	return st, err
}

// eventID reads an encoded Event's id (field 1) without decoding the rest
// (the payload).
func eventID(b []byte) (id [16]byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return id, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 || len(v) != len(id) {
				return id, false
			}
			copy(id[:], v)
			return id, true
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return id, false
		}
		b = b[m:]
	}
	return id, false
}

// readTopicIdle ends a topic read that receives nothing for this long.
const readTopicIdle = 30 * time.Second

// readTopic calls fn for every record of topic, from each partition's
// start up to its end when called.
func readTopic(ctx context.Context, cl *kgo.Client, topic string, fn func(*kgo.Record)) error {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	from := map[int32]kgo.Offset{}
	ends.Each(func(e kadm.ListedOffset) {
		s, ok := starts.Lookup(topic, e.Partition)
		if e.Err == nil && ok && s.Err == nil && e.Offset > s.Offset {
			want[e.Partition] = e.Offset
			from[e.Partition] = kgo.NewOffset().At(s.Offset)
		}
	})
	if err := ends.Error(); err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	if len(want) == 0 {
		return nil
	}
	// Modest fetches: the import's memory is the state it keeps, not
	// buffered batches of a log it only skims.
	rd, err := kgo.NewClient(append(cl.Opts(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchMaxBytes(8<<20), kgo.FetchMaxPartitionBytes(1<<20))...)
	if err != nil {
		return fmt.Errorf("read %s: %w", topic, err)
	}
	defer rd.Close()
	for len(want) > 0 {
		// Reading stops at each partition's last record before the end;
		// were that record missing (a transaction marker), the read
		// fails rather than let a partial state make the import write
		// twice.
		pctx, cancel := context.WithTimeout(ctx, readTopicIdle)
		fs := rd.PollFetches(pctx)
		idle := pctx.Err() != nil
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w", topic, err)
		}
		if idle {
			return fmt.Errorf("read %s: nothing received for %s before the end of partitions %v (run the import again)", topic, readTopicIdle, slices.Sorted(maps.Keys(want)))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			fn(r)
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return nil
}

// scanUsers lists every user record key (SCAN: the server is not blocked).
func scanUsers(ctx context.Context, rdb *redis.Client) ([]string, error) {
	seen := map[string]bool{}
	var keys []string
	iter := rdb.Scan(ctx, 0, autopushUserPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if k := iter.Val(); !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redis scan %s*: %w", autopushUserPrefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

const autopushUserPrefix = "autopush/user/"

// autopushImport imports batches of users.
type autopushImport struct {
	rdb        *redis.Client
	names      schema.Names
	partitions int32
	existing   *pushlogState
	maxTTL     int64
	now        time.Time
	dryRun     bool
	produce    func(context.Context, []*kgo.Record) error // nil in a dry run
	stats      importStats
}

// autopushUser is one user's records as read from Redis.
type autopushUser struct {
	key       string // dashed UAID as in the keys
	uaid      schema.UAID
	record    *redis.StringCmd
	channels  *redis.StringSliceCmd
	storedAt  *redis.StringCmd
	msgIDs    *redis.StringSliceCmd
	msgValues []*redis.StringCmd
}

func (im *autopushImport) importBatch(ctx context.Context, keys []string) error {
	users := make([]*autopushUser, 0, len(keys))
	pipe := im.rdb.Pipeline()
	for _, k := range keys {
		im.stats.Users++
		dashed := strings.TrimPrefix(k, autopushUserPrefix)
		uaid, err := schema.ParseUAID(strings.ReplaceAll(strings.ToLower(dashed), "-", ""))
		if err != nil {
			im.stats.BadRecords++
			continue
		}
		u := &autopushUser{key: dashed, uaid: uaid}
		u.record = pipe.Get(ctx, k)
		u.channels = pipe.LRange(ctx, "autopush/channels/"+dashed, 0, importMaxChannels-1)
		u.storedAt = pipe.Get(ctx, "autopush/timestamp/"+dashed)
		users = append(users, u)
	}
	if err := execPipe(ctx, pipe); err != nil {
		return err
	}
	pipe = im.rdb.Pipeline()
	for _, u := range users {
		from := "0"
		if v, err := u.storedAt.Uint64(); err == nil {
			from = strconv.FormatUint(v, 10)
		}
		u.msgIDs = pipe.ZRangeByScore(ctx, "autopush/msgs/"+u.key, &redis.ZRangeBy{Min: from, Max: "+inf", Count: importMaxMessages})
	}
	if err := execPipe(ctx, pipe); err != nil {
		return err
	}
	pipe = im.rdb.Pipeline()
	for _, u := range users {
		for _, id := range u.msgIDs.Val() {
			u.msgValues = append(u.msgValues, pipe.Get(ctx, "autopush/msg/"+u.key+"/"+id))
		}
	}
	if err := execPipe(ctx, pipe); err != nil {
		return err
	}
	var regs, msgs []*kgo.Record
	for _, u := range users {
		r, m, err := im.userEvents(u)
		if err != nil {
			return err
		}
		regs, msgs = append(regs, r...), append(msgs, m...)
	}
	if im.produce == nil {
		return nil
	}
	// Registrations first: a message is never ahead of its channel.
	for _, recs := range [][]*kgo.Record{regs, msgs} {
		if len(recs) == 0 {
			continue
		}
		if err := im.produce(ctx, recs); err != nil {
			return fmt.Errorf("write to kafka (running the import again resumes): %w", err)
		}
	}
	return nil
}

// execPipe runs a pipeline; a missing key (redis.Nil) is not an error.
func execPipe(ctx context.Context, pipe redis.Pipeliner) error {
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// autopushUserRecord is the part of autopush's user record the import
// reads.
type autopushUserRecord struct {
	UAID       string `json:"uaid"`
	RouterType string `json:"router_type"`
	// RouterData is what autoendpoint's router stored at registration:
	// fcm {"token", "app_id"} (routers/fcm/router.rs register), apns
	// {"token", "rel_channel" (its app id), optional "aps" (a JSON
	// object as a string)} (routers/apns/router.rs register).
	RouterData struct {
		Token      string  `json:"token"`
		AppID      string  `json:"app_id"`
		RelChannel string  `json:"rel_channel"`
		Aps        *string `json:"aps"`
	} `json:"router_data"`
}

// Bounds of a bridge user's router_data: ingest's token bound, and an app
// id as short as a deployment's configured names are.
const (
	importMaxBridgeToken = ingest.DefaultBridgeMaxToken
	importMaxAppID       = 256
)

// bridgeRegistered is the BridgeRegistered a mobile user's record
// describes (ingest.BridgeRegistration, as the registration API writes
// it), nil when its router or router_data is not one pushlog bridges.
func bridgeRegistered(rec autopushUserRecord) *pb.BridgeRegistered {
	br, ok := schema.ParseBridge(rec.RouterType)
	if !ok {
		return nil
	}
	rd := rec.RouterData
	app, aps := rd.AppID, (*string)(nil)
	if br == schema.BridgeAPNs {
		app, aps = rd.RelChannel, rd.Aps
	}
	b, err := ingest.BridgeRegistration(br, app, rd.Token, aps, importMaxAppID, importMaxBridgeToken)
	if err != nil {
		return nil
	}
	return b
}

// userEvents turns one user's records into the events pushlog lacks.
func (im *autopushImport) userEvents(u *autopushUser) (regs, msgs []*kgo.Record, err error) {
	raw, rerr := u.record.Bytes()
	if rerr != nil || len(raw) > importMaxRecord {
		im.stats.BadRecords++ // gone since the scan, or oversized
		return nil, nil, nil
	}
	var rec autopushUserRecord
	if json.Unmarshal(raw, &rec) != nil {
		im.stats.BadRecords++
		return nil, nil, nil
	}
	var bridge *pb.BridgeRegistered
	if rec.RouterType != "" && rec.RouterType != "webpush" {
		if bridge = bridgeRegistered(rec); bridge == nil {
			im.stats.NotWebpush++ // a router, app or token pushlog cannot bridge
			return nil, nil, nil
		}
	}
	uaid := u.uaid.String()
	st := im.existing.state(u.uaid)
	if st.GetUaidReset() {
		im.stats.UAIDReset++
		return nil, nil, nil
	}
	active := map[string]bool{}
	var fresh []string
	for _, s := range u.channels.Val() {
		id, err := schema.NormalizeChannelID(strings.ToLower(s))
		if err != nil || active[id] {
			continue // not a channel id, or listed twice (autopush appends)
		}
		active[id] = true
		switch ch := findChannel(st, id); {
		case ch == nil:
			fresh = append(fresh, id)
		case ch.GetUnregistered():
			im.stats.ChannelsGone++
			delete(active, id)
		default:
			im.stats.ChannelsPresent++
		}
	}
	if len(active) == 0 && len(u.channels.Val()) == 0 {
		im.stats.NoChannels++
		return nil, nil, nil
	}
	p := schema.PartitionOf(uaid, im.partitions)
	bridgeNew := bridge != nil && !im.existing.bridged[u.uaid]
	if bridge != nil && !bridgeNew {
		im.stats.BridgesPresent++
	}
	if bridgeNew {
		// Before its channels, as the registration API writes them.
		ev := &pb.Event{Id: importEventID("bridge", uaid), TimeMs: im.now.UnixMilli(), Uaid: uaid}
		ev.Body = &pb.Event_BridgeRegistered{BridgeRegistered: bridge}
		r, err := im.names.Record(ev)
		if err != nil {
			return nil, nil, fmt.Errorf("encode bridge registration of %s: %w", uaid, err)
		}
		r.Partition = p
		regs = append(regs, r)
	}
	for _, id := range fresh {
		ev := &pb.Event{Id: importEventID("channel", uaid, id), TimeMs: im.now.UnixMilli(), Uaid: uaid}
		ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: id}}
		r, err := im.names.Record(ev)
		if err != nil {
			return nil, nil, fmt.Errorf("encode registration of %s: %w", uaid, err)
		}
		r.Partition = p
		regs = append(regs, r)
	}
	for i, v := range u.msgValues {
		ev, reason := im.messageEvent(uaid, u.msgIDs.Val()[i], v, active)
		if ev == nil {
			*reason++
			continue
		}
		r, err := im.names.Record(ev)
		if err != nil {
			return nil, nil, fmt.Errorf("encode message of %s: %w", uaid, err)
		}
		r.Partition = p
		msgs = append(msgs, r)
	}
	if len(regs)+len(msgs) > 0 {
		im.stats.UsersImported++
		im.stats.Channels += len(fresh)
		im.stats.Messages += len(msgs)
	}
	if bridgeNew {
		im.stats.BridgeUsers++
	}
	return regs, msgs, nil
}

func findChannel(st *pb.ChannelState, id string) *pb.Channel {
	for _, ch := range st.GetChannels() {
		if ch.GetChannelId() == id {
			return ch
		}
	}
	return nil
}

// importEventID is the id of an event the import writes: the marker and a
// hash of where it comes from, the same on every run.
func importEventID(parts ...string) []byte {
	h := sha256.Sum256([]byte("pushlog autopush import\x00" + strings.Join(parts, "\x00")))
	return append([]byte(importIDMarker), h[:16-len(importIDMarker)]...)
}

// autopushMessage is autopush's stored notification (StorableNotification).
type autopushMessage struct {
	ChannelID string            `json:"channelID"`
	Version   string            `json:"version"`
	Timestamp int64             `json:"timestamp"` // s: when autopush accepted it
	TTL       int64             `json:"ttl"`       // s
	Topic     string            `json:"topic"`
	Data      string            `json:"data"` // base64url of the body
	Headers   map[string]string `json:"headers"`
}

// messageEvent turns one stored message into a MessageAccepted with its
// remaining TTL, or says which counter it was skipped under.
func (im *autopushImport) messageEvent(uaid, msgID string, v *redis.StringCmd, active map[string]bool) (*pb.Event, *int) {
	raw, err := v.Bytes()
	if err != nil {
		return nil, &im.stats.MessagesExpired // its key expired since it was listed
	}
	ma, expiry, err := parseAutopushMessage(raw)
	if err != nil {
		return nil, &im.stats.BadMessages
	}
	remaining := expiry - im.now.Unix()
	switch {
	case remaining <= 0:
		return nil, &im.stats.MessagesExpired
	case !active[ma.ChannelId]:
		return nil, &im.stats.MessagesNoChannel
	}
	id := importEventID("message", uaid, msgID, string(raw))
	if im.existing.imported[[16]byte(id)] {
		return nil, &im.stats.MessagesPresent
	}
	ma.TtlS = min(remaining, im.maxTTL)
	ev := &pb.Event{Id: id, TimeMs: im.now.UnixMilli(), Uaid: uaid}
	ev.Body = &pb.Event_MessageAccepted{MessageAccepted: ma}
	return ev, nil
}

// parseAutopushMessage decodes a stored notification into the message
// pushlog would have accepted, and its expiry (unix seconds).
func parseAutopushMessage(raw []byte) (*pb.MessageAccepted, int64, error) {
	if len(raw) > importMaxRecord {
		return nil, 0, errors.New("record too large")
	}
	var m autopushMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, 0, fmt.Errorf("not a stored notification: %w", err)
	}
	ch, err := schema.NormalizeChannelID(strings.ToLower(m.ChannelID))
	if err != nil {
		return nil, 0, err
	}
	if m.TTL <= 0 || m.Timestamp <= 0 || m.TTL > 1<<40 || m.Timestamp > 1<<40 {
		return nil, 0, errors.New("no usable timestamp and TTL")
	}
	if len(m.Topic) > importMaxTopic {
		return nil, 0, errors.New("topic too long")
	}
	ma := &pb.MessageAccepted{ChannelId: ch, Topic: m.Topic}
	if m.Data != "" {
		body, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(m.Data, "="))
		if err != nil {
			return nil, 0, fmt.Errorf("data: %w", err)
		}
		if len(body) > importMaxPayload {
			return nil, 0, errors.New("body too large")
		}
		ma.Payload = body
		ma.Encoding = m.Headers["encoding"]
		ma.Encryption, ma.CryptoKey = m.Headers["encryption"], m.Headers["crypto_key"]
		switch {
		case ma.Encoding != "aes128gcm" && ma.Encoding != "aesgcm":
			return nil, 0, fmt.Errorf("content encoding %q", ma.Encoding)
		case len(ma.Encryption)+len(ma.CryptoKey) > importMaxHeaders:
			return nil, 0, errors.New("crypto headers too large")
		case ma.Encoding == "aes128gcm":
			ma.Encryption, ma.CryptoKey = "", ""
		}
	}
	return ma, m.Timestamp + m.TTL, nil
}
