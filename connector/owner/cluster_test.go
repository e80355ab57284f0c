package owner

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// presenceSess is what a SessionDialer returns: a session marked as made
// from presence.
type presenceSess struct {
	*fakeSession
	addr string
}

func (presenceSess) FromPresence() bool { return true }

// fakeDialer records the sessions the owner asks for.
type fakeDialer struct {
	mu   sync.Mutex
	made []presenceSess
}

func (d *fakeDialer) Session(addr string, _ schema.UAID, connID string) link.Session {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := presenceSess{fakeSession: &fakeSession{id: connID}, addr: addr}
	d.made = append(d.made, s)
	return s
}

func (d *fakeDialer) sessions() []presenceSess {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.made)
}

// readyPart is a caught-up partition state with a SessionDialer.
func readyPart(t *testing.T, p int32) (*partState, *logBuilder, *fakeDialer) {
	clock := newFakeClock()
	ps, _ := newTestPart(t, p, clock)
	d := &fakeDialer{}
	ps.env.cfg.Remote = d
	ps.mu.Lock()
	ps.checkReady()
	ps.mu.Unlock()
	return ps, newLog(t, p, clock), d
}

func TestPresenceSessionDelivers(t *testing.T) {
	ps, l, d := readyPart(t, 1)
	uaid := uaidIn(1)
	ch := newChannel()
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.MessageAccepted{ChannelId: ch, Payload: []byte("a"), Encoding: "aes128gcm", TtlS: 60})})

	// A takeover learns from presence that the client is on another node.
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Connected{Node: "n2", LinkAddr: "10.0.0.2:7000", ConnId: "c1"})})
	made := d.sessions()
	if len(made) != 1 || made[0].addr != "10.0.0.2:7000" || made[0].id != "c1" {
		t.Fatalf("sessions made: %+v", made)
	}
	if got := made[0].offsets(); !slices.Equal(got, []int64{0}) {
		t.Fatalf("delivered %v, want [0]", got)
	}
	// The same connection again: no new session.
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Connected{Node: "n2", LinkAddr: "10.0.0.2:7000", ConnId: "c1"})})
	if n := len(d.sessions()); n != 1 {
		t.Fatalf("%d sessions made for one connection", n)
	}
	// Its Disconnected forgets it.
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Disconnected{Node: "n2", ConnId: "c1"})})
	id, _ := schema.ParseUAID(uaid)
	if u := ps.uaids[id]; u == nil || u.session != nil {
		t.Fatalf("session after Disconnected: %+v", u)
	}
}

func TestPresenceNeverReplacesAttached(t *testing.T) {
	ps, l, d := readyPart(t, 2)
	uaid := uaidIn(2)
	id, _ := schema.ParseUAID(uaid)
	attached := newSession()
	ps.mu.Lock()
	ps.attach(id, attached)
	ps.mu.Unlock()
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Connected{Node: "n2", LinkAddr: "10.0.0.2:7000", ConnId: "other"})})
	if len(d.sessions()) != 0 || ps.uaids[id].session != link.Session(attached) {
		t.Fatal("presence replaced an attached session")
	}
	// No link address (a single node's presence): nothing to follow.
	ps.mu.Lock()
	ps.detach(id, attached)
	ps.mu.Unlock()
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Connected{Node: "n1", ConnId: "c9"})})
	if len(d.sessions()) != 0 {
		t.Fatal("followed a presence without a link address")
	}
}

func TestPresenceSessionDetachesOnlyItself(t *testing.T) {
	ps, l, d := readyPart(t, 0)
	uaid := uaidIn(0)
	id, _ := schema.ParseUAID(uaid)
	foldAll(ps, []*kgo.Record{l.add(uaid, &pb.Connected{Node: "n2", LinkAddr: "10.0.0.2:7000", ConnId: "c1"})})
	proxy := d.sessions()[0]
	// The connection node attaches the same connection itself.
	attached := &fakeSession{id: "c1"}
	ps.mu.Lock()
	ps.attach(id, attached)
	// A late failure of the presence session must not detach it...
	ps.detach(id, proxy)
	if ps.uaids[id].session != link.Session(attached) {
		t.Fatal("a presence session detached the attached session of its connection")
	}
	// ...but Detach of the connection does.
	ps.detach(id, &fakeSession{id: "c1"})
	if ps.uaids[id].session != nil {
		t.Fatal("connection not detached")
	}
	ps.mu.Unlock()
}

func TestMemberUserData(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want MemberInfo
	}{
		{"nil", nil, MemberInfo{}},
		{"empty", []byte{}, MemberInfo{}},
		{"foreign", []byte("something else"), MemberInfo{}},
		{"binary", []byte{0, 1, 0xff, '\n', '='}, MemberInfo{}},
		{"short v1 prefix", []byte("pushlog-link"), MemberInfo{}},
		{"short v2 header", []byte("pushlog-member-v2"), MemberInfo{}},
		// What nodes before metrics addresses wrote.
		{"v1", []byte("pushlog-link-v1 10.1.2.3:7000"), MemberInfo{LinkAddr: "10.1.2.3:7000"}},
		{"v1 empty address", []byte("pushlog-link-v1 "), MemberInfo{}},
		{"v2", []byte("pushlog-member-v2\nlink=h:1\nmetrics=h:2\n"), MemberInfo{LinkAddr: "h:1", MetricsAddr: "h:2"}},
		{"v2 metrics only", []byte("pushlog-member-v2\nmetrics=h:2\n"), MemberInfo{MetricsAddr: "h:2"}},
		{"v2 no trailing newline", []byte("pushlog-member-v2\nmetrics=h:2"), MemberInfo{MetricsAddr: "h:2"}},
		{"v2 header only", []byte("pushlog-member-v2\n"), MemberInfo{}},
		{"v2 unknown and bad lines", []byte("pushlog-member-v2\nzone=eu\ngarbage\n\nmetrics=h:2\n=x\n"), MemberInfo{MetricsAddr: "h:2"}},
		{"v2 repeated key: first wins", []byte("pushlog-member-v2\nlink=a:1\nlink=b:1\n"), MemberInfo{LinkAddr: "a:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MemberInfoOf(tt.data); got != tt.want {
				t.Fatalf("MemberInfoOf(%q) = %+v, want %+v", tt.data, got, tt.want)
			}
			if got := LinkAddrOf(tt.data); got != tt.want.LinkAddr {
				t.Fatalf("LinkAddrOf(%q) = %q, want %q", tt.data, got, tt.want.LinkAddr)
			}
		})
	}
}

func TestMemberInfoEncode(t *testing.T) {
	tests := []struct {
		in   MemberInfo
		want string // the exact user data
		back MemberInfo
	}{
		{MemberInfo{}, "", MemberInfo{}},
		// Only a link: the v1 bytes, which nodes before v2 read too.
		{MemberInfo{LinkAddr: "10.1.2.3:7000"}, "pushlog-link-v1 10.1.2.3:7000", MemberInfo{LinkAddr: "10.1.2.3:7000"}},
		{MemberInfo{MetricsAddr: "h:2"}, "pushlog-member-v2\nmetrics=h:2\n", MemberInfo{MetricsAddr: "h:2"}},
		{MemberInfo{LinkAddr: "h:1", MetricsAddr: "h:2"}, "pushlog-member-v2\nlink=h:1\nmetrics=h:2\n", MemberInfo{LinkAddr: "h:1", MetricsAddr: "h:2"}},
		// A line break is no address: left out, the rest still readable.
		{MemberInfo{LinkAddr: "h:1", MetricsAddr: "h:2\nlink=evil:1"}, "pushlog-link-v1 h:1", MemberInfo{LinkAddr: "h:1"}},
		{MemberInfo{LinkAddr: "a\rb", MetricsAddr: "h:2"}, "pushlog-member-v2\nmetrics=h:2\n", MemberInfo{MetricsAddr: "h:2"}},
	}
	for _, tt := range tests {
		b := tt.in.encode()
		if string(b) != tt.want || (tt.want == "") != (b == nil) {
			t.Errorf("encode(%+v) = %q, want %q", tt.in, b, tt.want)
		}
		if got := MemberInfoOf(b); got != tt.back {
			t.Errorf("MemberInfoOf(encode(%+v)) = %+v, want %+v", tt.in, got, tt.back)
		}
	}
	// It travels in the consumer member metadata the balancer writes.
	in := MemberInfo{LinkAddr: "h:1", MetricsAddr: "h:2"}
	meta := copartitionBalancer{userData: in.encode()}.JoinGroupMetadata([]string{"t"}, nil, 3)
	var m kmsg.ConsumerMemberMetadata
	if err := m.ReadFrom(meta); err != nil {
		t.Fatal(err)
	}
	if MemberInfoOf(m.UserData) != in || m.Generation != 3 {
		t.Fatalf("metadata %+v", m)
	}
}

// TestGroupOwners runs two owners with link addresses (one also announcing
// a metrics address, so in the v2 user data) and maps every partition to
// one of them.
func TestGroupOwners(t *testing.T) {
	e := newTestEnv(t)
	a := e.start(func(c *Config) { c.LinkAddr, c.MetricsAddr = "10.0.0.1:7000", "10.0.0.1:8080" })
	b := e.start(func(c *Config) { c.LinkAddr = "10.0.0.2:7000" })
	waitFor(t, "both owners hold partitions", func() bool {
		return len(a.Stats().Partitions) == testPartitions/2 && len(b.Stats().Partitions) == testPartitions/2
	})
	var owners map[int32]string
	waitFor(t, "a stable group", func() bool {
		var err error
		owners, err = GroupOwners(context.Background(), e.adm, schema.DefaultNames().Group("connectors"), schema.TopicMessages)
		return err == nil && len(owners) == testPartitions
	})
	for p := range int32(testPartitions) {
		want := "10.0.0.2:7000"
		if a.Owns(p) {
			want = "10.0.0.1:7000"
		}
		if owners[p] != want {
			t.Errorf("partition %d: owner %q, want %q", p, owners[p], want)
		}
		if a.Owns(p) == b.Owns(p) {
			t.Errorf("partition %d: owned by both or neither", p)
		}
	}
}

func TestRedeliver(t *testing.T) {
	e := newTestEnv(t)
	r := e.start(func(c *Config) { c.Remote = &fakeDialer{} })
	e.waitReady(r, testPartitions)
	uaid, ch := uaidIn(1), newChannel()
	e.register(uaid, ch)
	s := newSession()
	s.fail.Store(true) // a link being dialed
	if err := r.Attach(context.Background(), uaid, s); err != nil {
		t.Fatal(err)
	}
	e.accept(uaid, ch)
	waitFor(t, "message pending", func() bool { return pendingOf(r.Owner, 1) == 1 })
	s.fail.Store(false)
	r.Redeliver(uaid, newSession()) // not its session: nothing
	if len(s.notes()) != 0 {
		t.Fatal("delivered to a session that failed")
	}
	r.Redeliver(uaid, s)
	if got := s.offsets(); len(got) != 1 {
		t.Fatalf("redelivered %v", got)
	}
}
