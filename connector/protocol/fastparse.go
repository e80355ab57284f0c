package protocol

// The messages a connected client sends per push are acks (and pings).
// encoding/json decodes them by reflection; parseFast decodes exactly
// their common shapes by hand and declines everything else, which Parse
// then hands to encoding/json. It never returns anything encoding/json
// would not: FuzzParseFastMatchesJSON compares the two on every input.

// Bits of the fields a fast-path object carries (each at most once: a
// duplicate key is declined, encoding/json's last-wins is not copied).
const (
	fastType uint8 = 1 << iota
	fastChannel
	fastVersion
	fastCode
	fastUpdates
)

// maxFastCodeDigits keeps a fast-path code exact as a float64 and in
// int32 range without thinking about either.
const maxFastCodeDigits = 9

// parseFast decodes a JSON object whose keys are exactly messageType,
// channelID, version, code and updates (a list of objects with channelID,
// version and code), each at most once, whose strings are ASCII without
// control characters or escapes, whose codes are non-negative integers of
// at most 9 digits, and whose messageType is a known type. ok is false for
// anything else (including every malformed message).
func parseFast(data []byte) (m Message, ok bool) {
	s := fastScanner{b: data}
	var seen uint8
	ok = s.object(func(key []byte) bool {
		switch string(key) { // no allocation: the compiler compares in place
		case "messageType":
			var ok bool
			m.MessageType, ok = s.messageType()
			return ok && once(&seen, fastType)
		case "updates":
			var ok bool
			m.Updates, ok = s.updates()
			return ok && once(&seen, fastUpdates)
		}
		return s.ackField(key, &seen, &m.ChannelID, &m.Version, &m.Code)
	})
	if !ok || !s.end() {
		return Message{}, false
	}
	if m.MessageType == "" {
		return Message{}, false // no type: encoding/json's path says so
	}
	return m, true
}

// messageType reads a known message type as its constant (no copy); an
// unknown type is declined.
func (s *fastScanner) messageType() (string, bool) {
	v, ok := s.raw()
	if !ok {
		return "", false
	}
	for _, t := range [...]string{typeAck, typePing, typeNack, typeRegister, typeUnregister, typeHello, typeBroadcastSubscribe} {
		if string(v) == t {
			return t, true
		}
	}
	return "", false
}

// fastScanner reads the subset of JSON parseFast accepts.
type fastScanner struct {
	b []byte
	i int
}

// ws skips JSON whitespace.
func (s *fastScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next consumes c (after whitespace) if it comes next.
func (s *fastScanner) next(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (s *fastScanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// object reads a non-empty object, calling field after each key's colon to
// read the value; field reports whether it could.
func (s *fastScanner) object(field func(key []byte) bool) bool {
	if !s.next('{') {
		return false
	}
	for {
		key, ok := s.raw()
		if !ok || !s.next(':') || !field(key) {
			return false
		}
		if s.next(',') {
			continue
		}
		return s.next('}')
	}
}

// raw reads a string of ASCII characters that need no unescaping, and
// returns its bytes (aliasing the input).
func (s *fastScanner) raw() ([]byte, bool) {
	if !s.next('"') {
		return nil, false
	}
	for j := s.i; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[s.i:j]
			s.i = j + 1
			return v, true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

func (s *fastScanner) str() (string, bool) {
	v, ok := s.raw()
	return string(v), ok
}

// code reads a non-negative integer without sign, fraction or exponent
// (a following '.' or 'e' is not a ',' or '}': the object is declined).
func (s *fastScanner) code() (*float64, bool) {
	s.ws()
	start := s.i
	var n int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > maxFastCodeDigits || (digits > 1 && s.b[start] == '0') {
		return nil, false
	}
	f := float64(n)
	return &f, true
}

// updates reads an ack's list of updates; [] is an empty, non-nil list
// (as encoding/json makes it).
func (s *fastScanner) updates() ([]Ack, bool) {
	if !s.next('[') {
		return nil, false
	}
	list := []Ack{}
	if s.next(']') {
		return list, true
	}
	for {
		u, ok := s.update()
		if !ok {
			return nil, false
		}
		list = append(list, u)
		if s.next(',') {
			continue
		}
		return list, s.next(']')
	}
}

// update reads one update: {} or an object of channelID, version and code.
func (s *fastScanner) update() (Ack, bool) {
	var u Ack
	save := s.i
	if s.next('{') && s.next('}') {
		return u, true
	}
	s.i = save
	var seen uint8
	ok := s.object(func(key []byte) bool {
		return s.ackField(key, &seen, &u.ChannelID, &u.Version, &u.Code)
	})
	return u, ok
}

// ackField reads the value of key when it is one of the fields a message
// and an update share (channelID, version, code) into its place; false for
// any other key, a value the fast path declines, or a key seen before.
func (s *fastScanner) ackField(key []byte, seen *uint8, channelID, version *string, code **float64) bool {
	var ok bool
	var bit uint8
	switch string(key) {
	case "channelID":
		bit = fastChannel
		*channelID, ok = s.str()
	case "version":
		bit = fastVersion
		*version, ok = s.str()
	case "code":
		bit = fastCode
		*code, ok = s.code()
	}
	return ok && once(seen, bit)
}

// once marks bit in seen; false if it was marked already (a duplicate key
// is declined: encoding/json's last-wins is not copied).
func once(seen *uint8, bit uint8) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}
