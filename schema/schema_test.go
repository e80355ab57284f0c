package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/schema/pb"
)

func TestPartitionMatchesKafkaDefault(t *testing.T) {
	// Vectors from Kafka's own partitioner tests (Utils.murmur2 of the key,
	// toPositive, mod partitions) and franz-go's partitioner.
	part := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for i := 0; i < 2000; i++ {
		key := []byte(NewUAID())
		for _, n := range []int{1, 3, 12, 64} {
			want := int32(part.Partition(&kgo.Record{Key: key}, n))
			if got := Partition(key, int32(n)); got != want {
				t.Fatalf("Partition(%s, %d) = %d, kgo says %d", key, n, got, want)
			}
		}
	}
	// Known murmur2 values from Kafka's UtilsTest.testMurmur2.
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for k, want := range cases {
		if got := int32(murmur2([]byte(k))); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", k, got, want)
		}
	}
}

func testSealer(t testing.TB, keys ...string) *Sealer {
	t.Helper()
	var raw [][]byte
	for _, k := range keys {
		sum := sha256.Sum256([]byte(k))
		raw = append(raw, sum[:])
	}
	s, err := NewSealer(raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEndpointSealing(t *testing.T) {
	s := testSealer(t, "k1")
	uaid := "0123456789abcdef0123456789abcdef"
	ch := "deadbeef-0000-4000-8000-00000000cafe"
	hash := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name string
		ep   Endpoint
		ver  int
	}{
		{"v1", Endpoint{UAID: uaid, ChannelID: ch}, 1},
		{"v2", Endpoint{UAID: uaid, ChannelID: ch, KeyHash: hash}, 2},
		{"v1 fcm", Endpoint{UAID: uaid, ChannelID: ch, Bridge: BridgeFCM}, 1},
		{"v2 apns", Endpoint{UAID: uaid, ChannelID: ch, KeyHash: hash, Bridge: BridgeAPNs}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := s.SealEndpoint(tc.ep)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := s.SealEndpoint(tc.ep)
			if tok != again {
				t.Fatal("sealing is not deterministic")
			}
			got, err := s.OpenEndpoint(tok)
			if err != nil {
				t.Fatal(err)
			}
			if got.UAID != uaid || got.ChannelID != ch || got.Version() != tc.ver || !bytes.Equal(got.KeyHash, tc.ep.KeyHash) || got.Bridge != tc.ep.Bridge {
				t.Fatalf("round trip: %+v", got)
			}
			if _, err := s.OpenMessageID(tok); !errors.Is(err, ErrBadToken) {
				t.Fatal("an endpoint token opened as a message id")
			}
		})
	}
}

func TestSealRejectsForgeriesAndRotates(t *testing.T) {
	old := testSealer(t, "old")
	tok, err := old.SealEndpoint(Endpoint{UAID: NewUAID(), ChannelID: "deadbeef-0000-4000-8000-00000000cafe"})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(tok)
	flipped := append([]byte(nil), raw...)
	if flipped[20] == 'A' {
		flipped[20] = 'B'
	} else {
		flipped[20] = 'A'
	}
	for _, bad := range []string{"", "x", "!!!!", string(flipped), tok[:len(tok)-2], tok + "AA"} {
		if _, err := old.OpenEndpoint(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("OpenEndpoint(%q) err = %v", bad, err)
		}
	}
	rotated := testSealer(t, "new", "old")
	if _, err := rotated.OpenEndpoint(tok); err != nil {
		t.Fatalf("rotated sealer cannot open an old token: %v", err)
	}
	other := testSealer(t, "new")
	if _, err := other.OpenEndpoint(tok); err == nil {
		t.Fatal("a retired key still opens tokens")
	}
}

func TestMessageIDSealing(t *testing.T) {
	s := testSealer(t, "k1")
	m := MessageID{UAID: NewUAID(), ChannelID: "deadbeef-0000-4000-8000-00000000cafe", Partition: 11, Offset: 1 << 40}
	id, err := s.SealMessageID(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.OpenMessageID(id)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if _, err := s.OpenEndpoint(id); err == nil {
		t.Fatal("a message id opened as an endpoint token")
	}
}

func TestIDs(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"DEADBEEF-0000-4000-8000-00000000CAFE", "deadbeef-0000-4000-8000-00000000cafe", true},
		{"deadbeef00004000800000000000cafe", "deadbeef-0000-4000-8000-00000000cafe", true},
		{"deadbeef-0000-4000-8000-00000000caf", "", false},
		{"deadbeef+0000-4000-8000-00000000cafe", "", false},
		{"zzzzzzzz-0000-4000-8000-00000000cafe", "", false},
	}
	for _, tc := range tests {
		got, err := NormalizeChannelID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("NormalizeChannelID(%q) = %q, %v", tc.in, got, err)
		}
	}
	if u := NewUAID(); len(u) != 32 || strings.ToLower(u) != u {
		t.Fatalf("NewUAID = %q", u)
	}
	if _, err := NormalizeUAID("not-a-uaid"); err == nil {
		t.Fatal("bad uaid accepted")
	}
}

// goldenEvents are encoded once and committed under testdata/golden; the
// test proves that bytes written by earlier versions still decode to the same
// facts after the schema grows. Never edit a golden file: add new ones.
func goldenEvents() map[string]*pb.Event {
	uaid := "0123456789abcdef0123456789abcdef"
	ch := "deadbeef-0000-4000-8000-00000000cafe"
	ev := func(b any) *pb.Event {
		e := &pb.Event{Id: bytes.Repeat([]byte{1}, 16), TimeMs: 1700000000000, Uaid: uaid}
		switch v := b.(type) {
		case *pb.MessageAccepted:
			e.Body = &pb.Event_MessageAccepted{MessageAccepted: v}
		case *pb.Acked:
			e.Body = &pb.Event_Acked{Acked: v}
		case *pb.Dropped:
			e.Body = &pb.Event_Dropped{Dropped: v}
		case *pb.ChannelRegistered:
			e.Body = &pb.Event_ChannelRegistered{ChannelRegistered: v}
		case *pb.Connected:
			e.Body = &pb.Event_Connected{Connected: v}
		case *pb.ChannelState:
			e.Body = &pb.Event_ChannelState{ChannelState: v}
		}
		return e
	}
	ref := &pb.MessageRef{Partition: 3, Offset: 42, ChannelId: ch, AcceptedMs: 1699999999000, VapidSub: "mailto:a@example.com"}
	return map[string]*pb.Event{
		"v1_message_accepted": ev(&pb.MessageAccepted{ChannelId: ch, Payload: []byte("body"), Encoding: "aes128gcm", TtlS: 60, Topic: "t", Urgency: pb.Urgency_URGENCY_HIGH, VapidSub: "mailto:a@example.com", VapidKeyHash: bytes.Repeat([]byte{2}, 32)}),
		"v1_acked":            ev(&pb.Acked{Msg: ref, Code: 100}),
		"v1_dropped":          ev(&pb.Dropped{Msg: ref, Reason: pb.DropReason_DROP_REASON_PENDING_LIMIT}),
		"v1_registered":       ev(&pb.ChannelRegistered{ChannelId: ch, KeyHash: bytes.Repeat([]byte{3}, 32)}),
		"v1_connected":        ev(&pb.Connected{Node: "n1", ConnId: "c1", SinceMs: 1700000000000}),
		"v1_channel_state":    ev(&pb.ChannelState{Channels: []*pb.Channel{{ChannelId: ch, ChangedMs: 5}}, RegistrationsOffset: 9}),
	}
}

func TestGoldenEventsStillDecode(t *testing.T) {
	update := os.Getenv("PUSHLOG_WRITE_GOLDEN") == "1"
	for name, want := range goldenEvents() {
		path := filepath.Join("testdata", "golden", name+".hex")
		if update {
			if _, err := os.Stat(path); err == nil {
				continue // golden files are never rewritten
			}
			b, err := proto.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (PUSHLOG_WRITE_GOLDEN=1 writes missing golden files)", name, err)
		}
		b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeValue(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s decodes to %v, want %v", name, got, want)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for name, ev := range goldenEvents() {
		rec, err := Record(ev)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(rec.Key) != ev.GetUaid() || rec.Topic != TopicOf(ev) || rec.Topic == "" {
			t.Fatalf("%s: key %q topic %q", name, rec.Key, rec.Topic)
		}
		got, err := Decode(rec)
		if err != nil || !proto.Equal(got, ev) {
			t.Fatalf("%s: %v %v", name, got, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	future := &kgo.Record{Value: []byte{}, Headers: []kgo.RecordHeader{{Key: HeaderVersion, Value: []byte("2")}}}
	tests := []struct {
		name string
		rec  *kgo.Record
		want error
	}{
		{"tombstone", &kgo.Record{}, ErrCorrupt},
		{"garbage", &kgo.Record{Value: []byte{0xff, 0xff, 0xff}}, ErrCorrupt},
		{"no body (newer type)", &kgo.Record{Value: mustMarshal(t, &pb.Event{Uaid: NewUAID()})}, ErrUnknownType},
		{"future encoding", future, ErrUnknownType},
		{"bad uaid", &kgo.Record{Value: mustMarshal(t, &pb.Event{Uaid: "x", Body: &pb.Event_UserReset{UserReset: &pb.UserReset{}}})}, ErrCorrupt},
	}
	for _, tc := range tests {
		if _, err := Decode(tc.rec); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecodeValue(f *testing.F) {
	for _, ev := range goldenEvents() {
		b, _ := proto.Marshal(ev)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeValue(b)
		if err == nil && TypeName(ev) == "" {
			t.Fatal("decoded an event without a type")
		}
	})
}

func FuzzOpenToken(f *testing.F) {
	s := testSealer(f, "k1")
	tok, _ := s.SealEndpoint(Endpoint{UAID: "0123456789abcdef0123456789abcdef", ChannelID: "deadbeef-0000-4000-8000-00000000cafe"})
	id, _ := s.SealMessageID(MessageID{UAID: "0123456789abcdef0123456789abcdef", ChannelID: "deadbeef-0000-4000-8000-00000000cafe", Offset: 3})
	f.Add(tok)
	f.Add(id)
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, in string) {
		if e, err := s.OpenEndpoint(in); err == nil {
			if _, err := ParseUAID(e.UAID); err != nil {
				t.Fatal("opened endpoint with a bad uaid")
			}
		}
		if m, err := s.OpenMessageID(in); err == nil && (m.Offset < 0 || m.Partition < 0) {
			t.Fatal("opened a message id with a negative place")
		}
	})
}
