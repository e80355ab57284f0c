package schema

import (
	"bytes"
	"testing"
)

// AppendMessageID appends exactly SealMessageID's id, whatever dst holds,
// and the pooled sealing state never leaks one seal into the next.
func TestAppendMessageID(t *testing.T) {
	s := testSealer(t, "k1")
	ids := []MessageID{
		{UAID: "0123456789abcdef0123456789abcdef", ChannelID: "deadbeef-0000-4000-8000-00000000cafe", Partition: 0, Offset: 0},
		{UAID: "0123456789abcdef0123456789abcdef", ChannelID: "deadbeef-0000-4000-8000-00000000cafe", Partition: 59, Offset: 1 << 40},
		{UAID: "ffffffffffffffffffffffffffffffff", ChannelID: "00000000-0000-4000-8000-000000000000", Partition: 3, Offset: 7},
	}
	tests := []struct {
		name string
		dst  []byte
	}{
		{"nil", nil},
		{"prefix", []byte("https://push.example/m/")},
		{"no room", make([]byte, 0)},
		{"room", make([]byte, 3, 512)},
	}
	for _, tc := range tests {
		for _, m := range ids {
			want, err := s.SealMessageID(m)
			if err != nil {
				t.Fatal(err)
			}
			prefix := bytes.Clone(tc.dst)
			got, err := s.AppendMessageID(tc.dst, m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, prefix) || string(got[len(prefix):]) != want {
				t.Errorf("%s: AppendMessageID = %q, want %q+%q", tc.name, got, prefix, want)
			}
			back, err := s.OpenMessageID(string(got[len(prefix):]))
			if err != nil || back != m {
				t.Errorf("%s: OpenMessageID = %+v, %v; want %+v", tc.name, back, err, m)
			}
		}
	}
	if _, err := s.AppendMessageID(nil, MessageID{UAID: "nope", ChannelID: ids[0].ChannelID}); err == nil {
		t.Error("AppendMessageID accepted a bad UAID")
	}
}

// An opened endpoint's key hash is its own: sealing and opening other
// tokens afterwards does not change it.
func TestOpenEndpointKeyHashIsOwn(t *testing.T) {
	s := testSealer(t, "k1")
	hash := bytes.Repeat([]byte{7}, 32)
	ep := Endpoint{UAID: "0123456789abcdef0123456789abcdef", ChannelID: "deadbeef-0000-4000-8000-00000000cafe", KeyHash: hash}
	tok, err := s.SealEndpoint(ep)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.OpenEndpoint(tok)
	if err != nil {
		t.Fatal(err)
	}
	other := Endpoint{UAID: ep.UAID, ChannelID: ep.ChannelID, KeyHash: bytes.Repeat([]byte{9}, 32)}
	tok2, _ := s.SealEndpoint(other)
	if _, err := s.OpenEndpoint(tok2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.KeyHash, hash) || cap(got.KeyHash) != len(got.KeyHash) {
		t.Errorf("key hash %x (cap %d), want %x", got.KeyHash, cap(got.KeyHash), hash)
	}
}
