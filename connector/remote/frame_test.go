package remote

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema/pb"
)

func TestFrameRoundTrip(t *testing.T) {
	note := testNote("u1", 9)
	empty := link.Notification{ChannelID: "c", Version: "v", Data: []byte{}, Ref: &pb.MessageRef{Offset: 1}}
	aesgcm := link.Notification{ChannelID: "c", Version: "v", Data: []byte("x"), Encoding: "aesgcm", Encryption: "salt=a", CryptoKey: "dh=b"}
	tests := []frame{
		{typ: tPing},
		{typ: tChallenge, nonce: bytes.Repeat([]byte{7}, nonceSize), node: "n", addr: "h:1"},
		{typ: tAuth, nonce: []byte{1}, node: "n", addr: "h:1", mac: []byte{2, 3}},
		{typ: tCheck, id: 1 << 40, uaid: "u"},
		{typ: tCheckResp, id: 3, valid: true},
		{typ: tCheckResp, id: 3, valid: true, listed: true},
		{typ: tCheckResp, id: 5, valid: true, listed: true, chans: [][16]byte{{1, 2}, {15: 0xff}}},
		{typ: tCheckResp, id: 6, valid: true, chans: [][16]byte{{9}}},
		{typ: tAttachResp, id: 4, code: codeFailed, text: "why"},
		{typ: tAcked, uaid: "u", ref: &pb.MessageRef{Partition: 3, Offset: 99, ChannelId: "c", AcceptedMs: 5, VapidSub: "mailto:x"}},
		{typ: tDeliver, uaid: "u1", conn: "c1", ref: note.Ref, note: &note},
		{typ: tDeliver, uaid: "u1", conn: "c1", ref: empty.Ref, note: &empty},
		{typ: tDeliver, uaid: "u1", conn: "c1", note: &aesgcm},
	}
	for _, want := range tests {
		b, err := appendFrame(nil, &want)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := readFrame(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatalf("type %d: %v", want.typ, err)
		}
		if got.typ != want.typ || got.id != want.id || got.uaid != want.uaid || got.conn != want.conn ||
			got.code != want.code || got.valid != want.valid || got.text != want.text || got.node != want.node ||
			got.addr != want.addr || !slices.Equal(got.nonce, want.nonce) || !slices.Equal(got.mac, want.mac) ||
			!proto.Equal(got.ref, want.ref) || got.listed != want.listed || !slices.Equal(got.chans, want.chans) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
		if want.note != nil {
			n := got.note
			if n == nil || n.ChannelID != want.note.ChannelID || n.Version != want.note.Version ||
				!slices.Equal(n.Data, want.note.Data) || (n.Data == nil) != (want.note.Data == nil) ||
				n.Encoding != want.note.Encoding || n.Encryption != want.note.Encryption ||
				n.CryptoKey != want.note.CryptoKey || n.UAID != want.uaid || !proto.Equal(n.Ref, want.ref) {
				t.Fatalf("notification:\n got %+v\nwant %+v", n, want.note)
			}
		}
	}
}

// TestFrameAcceptTime: the accept time a connection node observes
// push→socket latency from travels in the message ref (field 12, its
// accepted_ms), which every node version writes and reads; a deliver frame
// without a ref (nothing to observe) still decodes.
func TestFrameAcceptTime(t *testing.T) {
	const acceptedMs = 1_765_000_000_123
	ref := protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), acceptedMs) // MessageRef.accepted_ms
	ref = protowire.AppendString(protowire.AppendTag(ref, 3, protowire.BytesType), "c")
	for _, tc := range []struct {
		name string
		ref  []byte
		want int64
	}{
		{"with ref", ref, acceptedMs},
		{"without ref", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := protowire.AppendVarint(protowire.AppendTag(nil, fType, protowire.VarintType), tDeliver)
			b = protowire.AppendString(protowire.AppendTag(b, fUAID, protowire.BytesType), "u")
			b = protowire.AppendString(protowire.AppendTag(b, fConn, protowire.BytesType), "c1")
			if tc.ref != nil {
				b = protowire.AppendBytes(protowire.AppendTag(b, fRef, protowire.BytesType), tc.ref)
			}
			b = protowire.AppendString(protowire.AppendTag(b, fChannel, protowire.BytesType), "c")
			b = protowire.AppendString(protowire.AppendTag(b, fVersion, protowire.BytesType), "v")
			f, err := decodeFrame(b)
			if err != nil || f.note == nil {
				t.Fatalf("decode: %+v, %v", f, err)
			}
			if got := f.note.Ref.GetAcceptedMs(); got != tc.want {
				t.Fatalf("accepted %d, want %d", got, tc.want)
			}
			// Encoding keeps it as it was.
			enc, err := appendFrame(nil, f)
			if err != nil {
				t.Fatal(err)
			}
			again, err := decodeFrame(enc[4:])
			if err != nil || again.note.Ref.GetAcceptedMs() != tc.want || (again.ref == nil) != (tc.ref == nil) {
				t.Fatalf("re-decode: %+v, %v", again, err)
			}
		})
	}
}

func TestFrameErrors(t *testing.T) {
	withType := protowire.AppendVarint(protowire.AppendTag(nil, fType, protowire.VarintType), tPing)
	tests := []struct {
		name string
		body []byte
	}{
		{"no type", protowire.AppendString(protowire.AppendTag(nil, fUAID, protowire.BytesType), "u")},
		{"truncated tag", []byte{0x80}},
		{"truncated bytes", append(slices.Clone(withType), protowire.AppendTag(nil, fUAID, protowire.BytesType)[0], 5, 'a')},
		{"wrong wire type", protowire.AppendVarint(protowire.AppendTag(slices.Clone(withType), fUAID, protowire.VarintType), 1)},
		{"bad ref", protowire.AppendBytes(protowire.AppendTag(slices.Clone(withType), fRef, protowire.BytesType), []byte{0xff, 0xff})},
		{"channels not a multiple of 16", protowire.AppendBytes(protowire.AppendTag(slices.Clone(withType), fChannels, protowire.BytesType), make([]byte, 17))},
		{"channels as varint", protowire.AppendVarint(protowire.AppendTag(slices.Clone(withType), fChannels, protowire.VarintType), 1)},
		{"listed as bytes", protowire.AppendBytes(protowire.AppendTag(slices.Clone(withType), fListed, protowire.BytesType), nil)},
		{"too many channels", protowire.AppendBytes(protowire.AppendTag(slices.Clone(withType), fChannels, protowire.BytesType), make([]byte, 16*(maxLinkChannels+1)))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeFrame(tc.body); !errors.Is(err, errFrame) {
				t.Fatalf("err = %v, want errFrame", err)
			}
		})
	}
	// Unknown fields are skipped.
	unknown := protowire.AppendString(protowire.AppendTag(slices.Clone(withType), 99, protowire.BytesType), "future")
	if f, err := decodeFrame(unknown); err != nil || f.typ != tPing {
		t.Fatalf("unknown field: %+v, %v", f, err)
	}
	// Repeated channel fields concatenate (as packed protobuf fields do).
	twice := slices.Clone(withType)
	for i := range 2 {
		twice = protowire.AppendBytes(protowire.AppendTag(twice, fChannels, protowire.BytesType), []byte{15: byte(i + 1)})
	}
	if f, err := decodeFrame(twice); err != nil || len(f.chans) != 2 || f.chans[1][15] != 2 {
		t.Fatalf("repeated channels: %+v, %v", f, err)
	}
	// Oversized frames are refused before reading them.
	if _, _, err := readFrame(bytes.NewReader([]byte{0x7f, 0xff, 0xff, 0xff}), nil); !errors.Is(err, errFrame) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := appendFrame(nil, &frame{typ: tDeliver, note: &link.Notification{Data: make([]byte, maxFrame)}}); err == nil {
		t.Fatal("oversized frame encoded")
	}
}

// FuzzDecodeFrame: no input crashes the decoder, and what decodes encodes
// and decodes to the same frame.
func FuzzDecodeFrame(f *testing.F) {
	note := testNote("u", 1)
	noRef := testNote("u", 2)
	noRef.Ref = nil
	for _, fr := range []frame{
		{typ: tDeliver, uaid: "u", conn: "c", note: &noRef},
		{typ: tPing},
		{typ: tAuth, nonce: []byte{1, 2}, node: "n", addr: "a:1", mac: []byte{3}},
		{typ: tDeliver, uaid: "u", conn: "c", ref: note.Ref, note: &note},
		{typ: tCheckResp, id: 7, valid: true, code: 2, text: "x"},
		{typ: tCheckResp, id: 8, valid: true, listed: true, chans: [][16]byte{{1}, {2}, {3}}},
	} {
		b, err := appendFrame(nil, &fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[4:])
	}
	f.Add([]byte{0x08})
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := decodeFrame(body)
		if err != nil {
			return
		}
		b, err := appendFrame(nil, fr)
		if err != nil {
			return // e.g. too large once re-encoded
		}
		again, err := decodeFrame(b[4:])
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.typ != fr.typ || again.uaid != fr.uaid || again.conn != fr.conn || again.text != fr.text ||
			!proto.Equal(again.ref, fr.ref) || (again.note == nil) != (fr.note == nil) ||
			again.valid != fr.valid || again.listed != fr.listed || !slices.Equal(again.chans, fr.chans) {
			t.Fatalf("not stable:\n%+v\n%+v", fr, again)
		}
	})
}
