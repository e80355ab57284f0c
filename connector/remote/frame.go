package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pushlog/pushlog/connector/link"
	"github.com/pushlog/pushlog/schema/pb"
)

// The wire format: every frame is a 4-byte big-endian length followed by
// that many bytes of protobuf-encoded fields (protowire, no generated code:
// the frame is private to this package). Unknown fields are skipped, so a
// newer node can add fields without breaking an older one.

// Frame types.
const (
	tChallenge  = 1  // acceptor → dialer: nonce, node, addr
	tAuth       = 2  // dialer → acceptor: nonce, node, addr, mac
	tWelcome    = 3  // acceptor → dialer: mac
	tReject     = 4  // acceptor → dialer: text
	tPing       = 5  // either way, keeps the link alive
	tCheck      = 10 // connection node → owner: id, uaid
	tCheckResp  = 11 // owner → connection node: id, code, valid, text, channels, listed
	tAttach     = 12 // connection node → owner: id, uaid, conn
	tAttachResp = 13 // owner → connection node: id, code, text
	tDetach     = 14 // connection node → owner: uaid, conn
	tAcked      = 15 // connection node → owner: uaid, ref
	tDeliver    = 16 // owner → connection node: uaid, conn, notification
	tGone       = 17 // connection node → owner: uaid, conn (no such session)
)

// Response codes.
const (
	codeOK       = 0
	codeNotOwner = 1 // link.ErrNotOwner at the owner
	codeFailed   = 2 // any other error; text says what
)

// maxFrame bounds a frame (a notification is at most a few KB).
const maxFrame = 1 << 20

// Field numbers.
const (
	fType       = 1
	fID         = 2
	fUAID       = 3
	fConn       = 4
	fCode       = 5
	fValid      = 6
	fText       = 7
	fNonce      = 8
	fNode       = 9
	fAddr       = 10
	fMAC        = 11
	fRef        = 12
	fChannel    = 13
	fVersion    = 14
	fData       = 15
	fEncoding   = 16
	fEncryption = 17
	fCryptoKey  = 18
	fChannels   = 19 // the registered channels: 16-byte ids back to back
	fListed     = 20 // 1: fChannels lists every registered channel (older owners never set it)
)

// maxLinkChannels bounds the channels a tCheckResp carries (512 KiB, well
// inside maxFrame); a UAID with more is answered as a partial list. The
// connector's channel limit keeps real UAIDs far below it.
const maxLinkChannels = 1 << 15

// frame is every message of the link; fields unused by a type stay zero.
type frame struct {
	typ   uint64
	id    uint64
	uaid  string
	conn  string
	code  uint64
	valid bool
	text  string
	nonce []byte
	node  string
	addr  string
	mac   []byte
	ref   *pb.MessageRef
	note  *link.Notification // tDeliver: its UAID travels as uaid, its Ref as ref
	chans [][16]byte         // tCheckResp
	// listed: chans is complete (tCheckResp). Absent from an older owner,
	// whose answer is then a partial one.
	listed bool
}

var errFrame = errors.New("malformed link frame")

// appendFrame appends the length-prefixed encoding of f to b.
func appendFrame(b []byte, f *frame) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = protowire.AppendTag(b, fType, protowire.VarintType)
	b = protowire.AppendVarint(b, f.typ)
	b = appendVarint(b, fID, f.id)
	b = appendString(b, fUAID, f.uaid)
	b = appendString(b, fConn, f.conn)
	b = appendVarint(b, fCode, f.code)
	if f.valid {
		b = appendVarint(b, fValid, 1)
	}
	b = appendString(b, fText, f.text)
	b = appendBytes(b, fNonce, f.nonce)
	b = appendString(b, fNode, f.node)
	b = appendString(b, fAddr, f.addr)
	b = appendBytes(b, fMAC, f.mac)
	if len(f.chans) > 0 {
		b = protowire.AppendTag(b, fChannels, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(16*len(f.chans)))
		for _, ch := range f.chans {
			b = append(b, ch[:]...)
		}
	}
	if f.listed {
		b = appendVarint(b, fListed, 1)
	}
	if f.ref != nil {
		rb, err := proto.Marshal(f.ref)
		if err != nil {
			return b[:start], fmt.Errorf("encode message ref: %w", err)
		}
		b = protowire.AppendTag(b, fRef, protowire.BytesType)
		b = protowire.AppendBytes(b, rb)
	}
	if n := f.note; n != nil {
		b = appendString(b, fChannel, n.ChannelID)
		b = appendString(b, fVersion, n.Version)
		if n.Data != nil {
			// Present even when empty, so nil stays nil.
			b = protowire.AppendTag(b, fData, protowire.BytesType)
			b = protowire.AppendBytes(b, n.Data)
		}
		b = appendString(b, fEncoding, n.Encoding)
		b = appendString(b, fEncryption, n.Encryption)
		b = appendString(b, fCryptoKey, n.CryptoKey)
	}
	size := len(b) - start - 4
	if size > maxFrame {
		return b[:start], fmt.Errorf("link frame of %d bytes exceeds %d", size, maxFrame)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(size))
	return b, nil
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// readFrame reads one frame into buf (grown as needed) and decodes it.
func readFrame(r io.Reader, buf []byte) (*frame, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, buf, err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > maxFrame {
		return nil, buf, fmt.Errorf("%w: %d bytes exceeds %d", errFrame, size, maxFrame)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, buf, fmt.Errorf("read link frame: %w", err)
	}
	f, err := decodeFrame(buf)
	return f, buf, err
}

// decodeFrame parses a frame body. Strings and byte fields are copied, so
// buf may be reused.
func decodeFrame(b []byte) (*frame, error) {
	f := &frame{}
	var note link.Notification
	hasNote := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %v", errFrame, protowire.ParseError(n))
		}
		b = b[n:]
		var v uint64
		var raw []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			raw, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, fmt.Errorf("%w: field %d: %v", errFrame, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f.set(num, typ, v, raw, &note, &hasNote); err != nil {
			return nil, err
		}
	}
	if f.typ == 0 {
		return nil, fmt.Errorf("%w: no type", errFrame)
	}
	if hasNote {
		note.UAID = f.uaid
		note.Ref = f.ref
		f.note = &note
	}
	return f, nil
}

// set stores one decoded field; a known field with the wrong wire type is
// an error, an unknown field is skipped.
func (f *frame) set(num protowire.Number, typ protowire.Type, v uint64, raw []byte, note *link.Notification, hasNote *bool) error {
	want := protowire.BytesType
	switch num {
	case fType, fID, fCode, fValid, fListed:
		want = protowire.VarintType
	case fUAID, fConn, fText, fNonce, fNode, fAddr, fMAC, fRef, fChannel, fVersion, fData, fEncoding, fEncryption, fCryptoKey, fChannels:
	default:
		return nil
	}
	if typ != want {
		return fmt.Errorf("%w: field %d has wire type %d", errFrame, num, typ)
	}
	switch num {
	case fType:
		f.typ = v
	case fID:
		f.id = v
	case fCode:
		f.code = v
	case fValid:
		f.valid = v != 0
	case fListed:
		f.listed = v != 0
	case fChannels:
		return f.addChannels(raw)
	case fUAID:
		f.uaid = string(raw)
	case fConn:
		f.conn = string(raw)
	case fText:
		f.text = string(raw)
	case fNonce:
		f.nonce = append([]byte(nil), raw...)
	case fNode:
		f.node = string(raw)
	case fAddr:
		f.addr = string(raw)
	case fMAC:
		f.mac = append([]byte(nil), raw...)
	case fRef:
		ref := &pb.MessageRef{}
		if err := proto.Unmarshal(raw, ref); err != nil {
			return fmt.Errorf("%w: message ref: %v", errFrame, err)
		}
		f.ref = ref
	case fChannel:
		note.ChannelID = string(raw)
		*hasNote = *hasNote || len(raw) > 0 // empty strings are not encoded
	case fVersion:
		note.Version = string(raw)
		*hasNote = *hasNote || len(raw) > 0 // empty strings are not encoded
	case fData:
		note.Data, *hasNote = append([]byte{}, raw...), true
	case fEncoding:
		note.Encoding = string(raw)
		*hasNote = *hasNote || len(raw) > 0 // empty strings are not encoded
	case fEncryption:
		note.Encryption = string(raw)
		*hasNote = *hasNote || len(raw) > 0 // empty strings are not encoded
	case fCryptoKey:
		note.CryptoKey = string(raw)
		*hasNote = *hasNote || len(raw) > 0 // empty strings are not encoded
	}
	return nil
}

// addChannels appends the ids of one fChannels field (repeated fields
// concatenate, as packed protobuf fields do).
func (f *frame) addChannels(raw []byte) error {
	if len(raw)%16 != 0 {
		return fmt.Errorf("%w: channels field of %d bytes is not a multiple of 16", errFrame, len(raw))
	}
	if len(f.chans)+len(raw)/16 > maxLinkChannels {
		return fmt.Errorf("%w: more than %d channels", errFrame, maxLinkChannels)
	}
	if f.chans == nil {
		f.chans = make([][16]byte, 0, len(raw)/16)
	}
	for ; len(raw) > 0; raw = raw[16:] {
		f.chans = append(f.chans, [16]byte(raw[:16]))
	}
	return nil
}
