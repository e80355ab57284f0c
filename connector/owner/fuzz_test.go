package owner

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

var fuzzTopics = []string{schema.TopicMessages, schema.TopicAcks, schema.TopicRegistrations, schema.TopicChannels, schema.TopicPresence}

// FuzzFold feeds arbitrary record values (what Kafka may hold after a bug,
// a foreign writer or corruption) to every fold: nothing may panic, and the
// state must stay usable.
func FuzzFold(f *testing.F) {
	uaid := uaidIn(1)
	ch := newChannel()
	ref := &pb.MessageRef{Partition: 1, Offset: 0}
	seeds := []*pb.Event{
		{Uaid: uaid, TimeMs: 1, Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: ch, Payload: []byte("p"), Encoding: "aes128gcm", TtlS: 60, Topic: "t"}}},
		{Uaid: uaid, TimeMs: 1, Body: &pb.Event_MessageAccepted{MessageAccepted: &pb.MessageAccepted{ChannelId: ch, TtlS: -5}}},
		{Uaid: uaid, Body: &pb.Event_MessageDeleted{MessageDeleted: &pb.MessageDeleted{Msg: ref}}},
		{Uaid: uaid, Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: ref}}},
		{Uaid: uaid, Body: &pb.Event_Acked{Acked: &pb.Acked{Msg: &pb.MessageRef{Partition: 1, Offset: -3}}}},
		{Uaid: uaid, Body: &pb.Event_Expired{Expired: &pb.Expired{}}},
		{Uaid: uaid, Body: &pb.Event_Dropped{Dropped: &pb.Dropped{Msg: ref, Reason: 99}}},
		{Uaid: uaid, Body: &pb.Event_Delivered{Delivered: &pb.Delivered{Msg: ref, Attempt: -1}}},
		{Uaid: uaid, Body: &pb.Event_ChannelRegistered{ChannelRegistered: &pb.ChannelRegistered{ChannelId: "bogus"}}},
		{Uaid: uaid, Body: &pb.Event_ChannelUnregistered{ChannelUnregistered: &pb.ChannelUnregistered{ChannelId: ch}}},
		{Uaid: uaid, Body: &pb.Event_UserReset{UserReset: &pb.UserReset{}}},
		{Uaid: uaid, Body: &pb.Event_ChannelState{ChannelState: &pb.ChannelState{Channels: []*pb.Channel{{ChannelId: "x", Unregistered: true}}, RegistrationsOffset: -7}}},
		{Uaid: uaid, Body: &pb.Event_Connected{Connected: &pb.Connected{ConnId: "c"}}},
		{Uaid: uaid, Body: &pb.Event_Disconnected{Disconnected: &pb.Disconnected{ConnId: "c"}}},
		{Uaid: "ZZ", Body: &pb.Event_UserReset{UserReset: &pb.UserReset{}}},
	}
	for i, ev := range seeds {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		for ti := range fuzzTopics {
			f.Add(uint8(ti), b, uint16(i))
		}
	}
	f.Add(uint8(0), []byte{0xff, 0xff, 0x01}, uint16(0))
	f.Add(uint8(3), []byte(nil), uint16(0))

	clock := newFakeClock()
	f.Fuzz(func(t *testing.T, topic uint8, value []byte, off uint16) {
		ps, _ := newTestPart(t, 1, clock)
		ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
		ps.checkReady()
		id, _ := schema.ParseUAID(uaid)
		s := newSession()
		ps.attach(id, s)
		rec := &kgo.Record{Topic: fuzzTopics[int(topic)%len(fuzzTopics)], Key: []byte(uaid), Value: value, Partition: 1, Offset: int64(off)}
		for range 2 { // twice: applying an event twice == once
			foldAll(ps, []*kgo.Record{rec})
		}
		ps.sweep(clock.Now())
		_ = ps.watermarks()
		_ = ps.stats()
		ps.ackedLocally(id, &pb.MessageRef{Partition: 1, Offset: int64(off)})
		ps.detach(id, s)
		ps.release()
	})
}

// FuzzMemberInfo feeds arbitrary member user data (any group member, of
// any version or none of ours, writes it): decoding never panics, and what
// a node encodes always decodes to what it announced.
func FuzzMemberInfo(f *testing.F) {
	f.Add([]byte("pushlog-link-v1 10.0.0.1:7000"), "h:1", "h:2")
	f.Add([]byte("pushlog-member-v2\nlink=h:1\nmetrics=h:2\n"), "", "h:2")
	f.Add([]byte("pushlog-member-v2\nlink=a\nlink=b\nx\n=\n"), "h:1", "")
	f.Add([]byte("pushlog-member-v2"), "a\nb", "c\rd")
	f.Add([]byte{0xff, 0, '\n'}, "", "")
	f.Fuzz(func(t *testing.T, data []byte, link, metrics string) {
		_ = MemberInfoOf(data)
		in := MemberInfo{LinkAddr: oneLine(link), MetricsAddr: oneLine(metrics)}
		if got := MemberInfoOf(MemberInfo{LinkAddr: link, MetricsAddr: metrics}.encode()); got != in {
			t.Fatalf("encode/decode of %q, %q = %+v, want %+v", link, metrics, got, in)
		}
	})
}
