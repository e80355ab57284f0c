package main

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

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
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	st, err := readPushlogState(t.Context(), cl, names)
	if err != nil {
		t.Fatal(err)
	}
	if !schema.ChannelActive(st.channels[itUAID], itChannel) {
		t.Fatalf("registration not seen: %v", st.channels)
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
