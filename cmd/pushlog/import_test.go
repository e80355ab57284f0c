package main

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

const (
	itUAID    = "0123456789abcdef0123456789abcdef"
	itChannel = "decafbad-0000-4000-8000-0123456789ab"
)

// TestReadPushlogState: the import sees what the deployment holds — a
// registration not yet folded by the channel projector, and the messages
// an earlier import wrote (by their event ids).
func TestReadPushlogState(t *testing.T) {
	names := schema.DefaultNames()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, names.All()...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p := schema.PartitionOf(itUAID, 4)
	reg := &pb.Event{Id: importEventID("channel", itUAID, itChannel), TimeMs: 1, Uaid: itUAID,
		Body: &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: itChannel}}}
	msgID := importEventID("message", itUAID, "02:1:x", "{}")
	msg := &pb.Event{Id: msgID, TimeMs: 1, Uaid: itUAID,
		Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: itChannel, Payload: []byte("body"), TtlS: 60}}}
	other := schema.NewEvent(itUAID, time.Now())
	other.Body = msg.Body
	var recs []*kgo.Record
	for _, ev := range []*pb.Event{reg, msg, other} {
		r, err := names.Record(ev)
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = p
		recs = append(recs, r)
	}
	// The channel projector's records: one channel registered, one gone.
	chA, _ := schema.ParseChannelID("decafbad-0000-4000-8000-0000000000aa")
	chB, _ := schema.ParseChannelID("decafbad-0000-4000-8000-0000000000bb")
	entry, err := names.ChannelEntryRecord(itUAID, &pb.ChannelEntry{ChannelId: schema.FormatChannelID(chA[:]), ChangedMs: 1}, p)
	if err != nil {
		t.Fatal(err)
	}
	goneRec, err := names.UnregisteredRecord(itUAID, chB, 0, 1, p)
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, entry, goneRec)
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	st, err := readPushlogState(t.Context(), cl, names)
	if err != nil {
		t.Fatal(err)
	}
	uaid, _ := schema.ParseUAID(itUAID)
	if !schema.ChannelActive(st.state(uaid), itChannel) {
		t.Fatalf("registration not seen: %v", st.channels)
	}
	if !schema.ChannelActive(st.state(uaid), schema.FormatChannelID(chA[:])) || !schema.ChannelGone(st.state(uaid), schema.FormatChannelID(chB[:])) {
		t.Fatalf("channels topic not folded: %v", st.state(uaid))
	}
	if len(st.imported) != 1 || !st.imported[[16]byte(msgID)] {
		t.Fatalf("imported ids %v, want only %x", st.imported, msgID)
	}
}

func TestEventID(t *testing.T) {
	ev := &pb.Event{Id: importEventID("x"), TimeMs: 5, Uaid: itUAID}
	r, _ := schema.Record(&pb.Event{Id: ev.Id, TimeMs: 5, Uaid: itUAID,
		Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: itChannel}}})
	id, ok := eventID(r.Value)
	if !ok || string(id[:]) != string(ev.Id) || !strings.HasPrefix(string(id[:]), importIDMarker) {
		t.Fatalf("eventID %x %v, want %x", id, ok, ev.Id)
	}
	for _, bad := range [][]byte{nil, {0xff}, {0x0a, 0x05, 1, 2}} {
		if _, ok := eventID(bad); ok {
			t.Fatalf("eventID(%x) ok", bad)
		}
	}
}

func TestParseAutopushMessage(t *testing.T) {
	body := base64.RawURLEncoding.EncodeToString([]byte("ciphertext"))
	for _, tc := range []struct {
		name, raw string
		wantErr   bool
		check     func(*pb.MessageAccepted, int64) bool
	}{
		{"aes128gcm", `{"channelID":"DECAFBAD-0000-4000-8000-0123456789AB","version":"v","timestamp":1700000000,"ttl":60,"data":"` + body + `","headers":{"encoding":"aes128gcm"},"sortkey_timestamp":1}`, false,
			func(m *pb.MessageAccepted, exp int64) bool {
				return m.GetChannelId() == itChannel && string(m.GetPayload()) == "ciphertext" && m.GetEncoding() == "aes128gcm" && exp == 1700000060
			}},
		{"aesgcm with headers and topic", `{"channelID":"` + itChannel + `","version":"v","timestamp":1700000000,"ttl":5,"topic":"scores","data":"` + body + `==","headers":{"encoding":"aesgcm","encryption":"salt=abc;rs=4096","crypto_key":"keyid=p256dh;dh=xyz"}}`, false,
			func(m *pb.MessageAccepted, exp int64) bool {
				return m.GetEncryption() == "salt=abc;rs=4096" && m.GetCryptoKey() == "keyid=p256dh;dh=xyz" && m.GetTopic() == "scores"
			}},
		{"no body", `{"channelID":"` + itChannel + `","version":"v","timestamp":1700000000,"ttl":5}`, false,
			func(m *pb.MessageAccepted, exp int64) bool { return m.GetPayload() == nil && m.GetEncoding() == "" }},
		{"not json", `{`, true, nil},
		{"bad channel", `{"channelID":"x","timestamp":1,"ttl":1}`, true, nil},
		{"no ttl", `{"channelID":"` + itChannel + `","timestamp":1700000000}`, true, nil},
		{"unknown encoding", `{"channelID":"` + itChannel + `","timestamp":1,"ttl":1,"data":"` + body + `","headers":{"encoding":"aesgcm128"}}`, true, nil},
		{"bad data", `{"channelID":"` + itChannel + `","timestamp":1,"ttl":1,"data":"***","headers":{"encoding":"aes128gcm"}}`, true, nil},
		{"body too large", `{"channelID":"` + itChannel + `","timestamp":1,"ttl":1,"data":"` + strings.Repeat("A", 12000) + `","headers":{"encoding":"aes128gcm"}}`, true, nil},
		{"topic too long", `{"channelID":"` + itChannel + `","timestamp":1,"ttl":1,"topic":"` + strings.Repeat("t", 33) + `"}`, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, exp, err := parseAutopushMessage([]byte(tc.raw))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %v, want an error", m)
				}
				return
			}
			if err != nil || !tc.check(m, exp) {
				t.Fatalf("parsed %v expiry %d err %v", m, exp, err)
			}
		})
	}
}

func TestImportSummary(t *testing.T) {
	s := importStats{Users: 3, UsersImported: 1, Channels: 2, Messages: 1, NoChannels: 1}
	want := "import autopush: 3 users read, 1 imported: 2 channels registered, 1 messages stored; skipped: 1 users without channels,"
	if got := s.String(); !strings.HasPrefix(got, want) {
		t.Fatalf("summary %q, want it to start %q", got, want)
	}
}

// FuzzParseAutopushMessage: no stored record crashes the import, and what
// parses stays within the bounds.
func FuzzParseAutopushMessage(f *testing.F) {
	f.Add([]byte(`{"channelID":"` + itChannel + `","version":"v","timestamp":1700000000,"ttl":60,"data":"AAAA","headers":{"encoding":"aes128gcm"}}`))
	f.Add([]byte(`{"channelID":"` + itChannel + `","timestamp":1,"ttl":1,"data":"AAAA","headers":{"encoding":"aesgcm","encryption":"salt=a","crypto_key":"dh=b"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, exp, err := parseAutopushMessage(raw)
		if err != nil {
			return
		}
		if _, perr := schema.ParseChannelID(m.GetChannelId()); perr != nil || exp <= 0 ||
			len(m.GetPayload()) > importMaxPayload || len(m.GetTopic()) > importMaxTopic ||
			len(m.GetEncryption())+len(m.GetCryptoKey()) > importMaxHeaders {
			t.Fatalf("out of bounds: %v expiry %d", m, exp)
		}
	})
}

func strCmd(ctx context.Context, v string, err error) *redis.StringCmd {
	c := redis.NewStringCmd(ctx)
	if err != nil {
		c.SetErr(err)
	} else {
		c.SetVal(v)
	}
	return c
}

// TestImportUserEvents: what one autopush user becomes, given what pushlog
// already holds. Nothing pushlog knows is written twice, and a channel it
// knows as unregistered (or a UAID it reset) is not revived.
func TestImportUserEvents(t *testing.T) {
	uaid, _ := schema.ParseUAID(itUAID)
	ch2 := "decafbad-0000-4000-8000-0000000000b2"
	now := time.Unix(1_800_000_000, 0)
	stored := func(ch string, age, ttl int64) string {
		return `{"channelID":"` + ch + `","version":"v","timestamp":` + strconv.FormatInt(now.Unix()-age, 10) + `,"ttl":` + strconv.FormatInt(ttl, 10) + `,"data":"AAAA","headers":{"encoding":"aes128gcm"}}`
	}
	presentMsg := stored(itChannel, 10, 60)
	for _, tc := range []struct {
		name       string
		user       string
		channels   []string
		msgs       []string
		state      *pb.ChannelState
		regs, sent int
		want       importStats
	}{
		{name: "fresh", user: `{"uaid":"` + itUAID + `","router_type":"webpush"}`, channels: []string{strings.ToUpper(itChannel), itChannel, ch2},
			msgs: []string{stored(itChannel, 10, 60), stored(itChannel, 100, 60), stored("decafbad-0000-4000-8000-00000000dead", 1, 60), "{bad"},
			regs: 2, sent: 1, want: importStats{UsersImported: 1, Channels: 2, Messages: 1, MessagesExpired: 1, MessagesNoChannel: 1, BadMessages: 1}},
		{name: "one channel known, one unregistered", user: `{"router_type":"webpush"}`, channels: []string{itChannel, ch2},
			msgs:  []string{stored(ch2, 1, 60), presentMsg},
			state: &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: itChannel}, {ChannelId: ch2, Unregistered: true}}},
			want:  importStats{ChannelsPresent: 1, ChannelsGone: 1, MessagesNoChannel: 1, MessagesPresent: 1}},
		{name: "reset in pushlog", user: `{}`, channels: []string{itChannel}, state: &pb.ChannelState{UaidReset: true}, want: importStats{UAIDReset: 1}},
		{name: "fcm without router_data", user: `{"router_type":"fcm"}`, channels: []string{itChannel}, want: importStats{NotWebpush: 1}},
		{name: "no channels", user: `{"router_type":"webpush"}`, want: importStats{NoChannels: 1}},
		{name: "unreadable", user: `{`, channels: []string{itChannel}, want: importStats{BadRecords: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			existing := &pushlogState{channels: map[schema.UAID]string{}, bridged: map[schema.UAID]bool{}, imported: map[[16]byte]bool{}}
			if tc.state != nil {
				existing.channels[uaid] = packState(tc.state)
			}
			existing.imported[[16]byte(importEventID("message", itUAID, "id1", presentMsg))] = true
			im := &autopushImport{names: schema.DefaultNames(), partitions: 4, existing: existing, maxTTL: 3600, now: now}
			u := &autopushUser{key: schema.FormatChannelID(uaid[:]), uaid: uaid, record: strCmd(t.Context(), tc.user, nil),
				channels: redis.NewStringSliceCmd(t.Context()), msgIDs: redis.NewStringSliceCmd(t.Context())}
			u.channels.SetVal(tc.channels)
			var ids []string
			for i, m := range tc.msgs {
				ids = append(ids, "id"+strconv.Itoa(i))
				u.msgValues = append(u.msgValues, strCmd(t.Context(), m, nil))
			}
			if tc.name == "one channel known, one unregistered" {
				ids[1] = "id1"
			}
			u.msgIDs.SetVal(ids)
			regs, msgs, err := im.userEvents(u)
			if err != nil {
				t.Fatal(err)
			}
			if len(regs) != tc.regs || len(msgs) != tc.sent || im.stats != tc.want {
				t.Fatalf("%d registrations, %d messages, stats %+v; want %d, %d, %+v", len(regs), len(msgs), im.stats, tc.regs, tc.sent, tc.want)
			}
			for _, r := range append(regs, msgs...) {
				ev, err := schema.Decode(r)
				if err != nil || r.Partition != schema.PartitionOf(itUAID, 4) || ev.GetUaid() != itUAID || !strings.HasPrefix(string(ev.GetId()), importIDMarker) {
					t.Fatalf("record %v (partition %d): %v", ev, r.Partition, err)
				}
				if ma := ev.GetMessageAccepted(); ma != nil && ma.GetTtlS() != 50 {
					t.Fatalf("message TTL %d, want the remaining 50s", ma.GetTtlS())
				}
			}
		})
	}
}

// TestImportBridgeUsers: a fcm and an apns user of autopush become the
// BridgeRegistered the registration API writes, then their channels; a
// second run (their events on the registrations topic) writes nothing; an
// unrecognisable router_data is skipped and counted.
func TestImportBridgeUsers(t *testing.T) {
	uaid, _ := schema.ParseUAID(itUAID)
	for _, tc := range []struct {
		name, user string
		want       *pb.BridgeRegistered
	}{
		{"fcm", `{"uaid":"` + itUAID + `","router_type":"fcm","router_data":{"token":"fcm-token-123","app_id":"org.mozilla.fenix"}}`,
			&pb.BridgeRegistered{RouterType: "fcm", AppId: "org.mozilla.fenix", Token: "fcm-token-123"}},
		{"apns", `{"router_type":"apns","router_data":{"token":"0123456789abcdef","rel_channel":"firefox","aps":"{\"mutable-content\":1}"}}`,
			&pb.BridgeRegistered{RouterType: "apns", AppId: "firefox", Token: "0123456789abcdef", Aps: `{"mutable-content":1}`}},
		{"fcm without app id", `{"router_type":"fcm","router_data":{"token":"fcm-token-123"}}`, nil},
		{"apns with bad aps", `{"router_type":"apns","router_data":{"token":"0123456789abcdef","rel_channel":"firefox","aps":"[1"}}`, nil},
		{"short token", `{"router_type":"fcm","router_data":{"token":"x","app_id":"a"}}`, nil},
		{"gcm", `{"router_type":"gcm","router_data":{"token":"fcm-token-123","app_id":"a"}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			existing := &pushlogState{channels: map[schema.UAID]string{}, bridged: map[schema.UAID]bool{}, imported: map[[16]byte]bool{}}
			run := func() ([]*kgo.Record, importStats) {
				im := &autopushImport{names: schema.DefaultNames(), partitions: 4, existing: existing, maxTTL: 3600, now: time.Unix(1_800_000_000, 0)}
				u := &autopushUser{key: schema.FormatChannelID(uaid[:]), uaid: uaid, record: strCmd(t.Context(), tc.user, nil),
					channels: redis.NewStringSliceCmd(t.Context()), msgIDs: redis.NewStringSliceCmd(t.Context())}
				u.channels.SetVal([]string{itChannel})
				regs, msgs, err := im.userEvents(u)
				if err != nil || len(msgs) != 0 {
					t.Fatalf("messages %v, err %v", msgs, err)
				}
				return regs, im.stats
			}
			regs, stats := run()
			if tc.want == nil {
				if len(regs) != 0 || stats != (importStats{NotWebpush: 1}) {
					t.Fatalf("%d records, stats %+v; want the user skipped", len(regs), stats)
				}
				return
			}
			if len(regs) != 2 || stats != (importStats{UsersImported: 1, Channels: 1, BridgeUsers: 1}) {
				t.Fatalf("%d records, stats %+v", len(regs), stats)
			}
			for i, r := range regs {
				ev, err := schema.Decode(r)
				if err != nil || r.Partition != schema.PartitionOf(itUAID, 4) || ev.GetUaid() != itUAID {
					t.Fatalf("record %d: %v (partition %d): %v", i, ev, r.Partition, err)
				}
				if i == 0 && !proto.Equal(ev.GetBridgeRegistered(), tc.want) {
					t.Fatalf("bridge registration %v, want %v", ev.GetBridgeRegistered(), tc.want)
				}
				if i == 1 && ev.GetChannelRegistered().GetChannelId() != itChannel {
					t.Fatalf("second event %v, want the channel", ev)
				}
				existing.applyRegistration(ev, int64(i))
			}
			if regs, stats = run(); len(regs) != 0 || stats != (importStats{BridgesPresent: 1, ChannelsPresent: 1}) {
				t.Fatalf("re-run: %d records, stats %+v; want nothing", len(regs), stats)
			}
		})
	}
}

// TestPackState: the packed form keeps what the import decides on.
func TestPackState(t *testing.T) {
	st := &pb.ChannelState{RegistrationsOffset: 42, UaidReset: true, Channels: []*pb.Channel{
		{ChannelId: itChannel, KeyHash: []byte("h"), ChangedMs: 5}, {ChannelId: "decafbad-0000-4000-8000-0000000000b2", Unregistered: true}}}
	got := unpackState(packState(st))
	if got.GetRegistrationsOffset() != 42 || !got.GetUaidReset() || len(got.GetChannels()) != 2 ||
		got.GetChannels()[0].GetChannelId() != itChannel || got.GetChannels()[0].GetUnregistered() || !got.GetChannels()[1].GetUnregistered() {
		t.Fatalf("round trip: %v", got)
	}
	if st := unpackState(""); st.GetUaidReset() || len(st.GetChannels()) != 0 {
		t.Fatalf("empty: %v", st)
	}
}
