package owner

import "unique"

// handleCache interns the short strings of folded messages (topics, VAPID
// subjects, encodings) without converting each record's bytes to a string
// first: a lookup by string(b) does not allocate.
type handleCache map[string]unique.Handle[string]

// maxHandleCache bounds a partition's cache; past it values are interned
// without it (a sender choosing a new topic per push cannot grow it).
const maxHandleCache = 4096

func (c *handleCache) of(b []byte) unique.Handle[string] {
	if h, ok := (*c)[string(b)]; ok {
		return h
	}
	h := unique.Make(string(b))
	if len(*c) < maxHandleCache {
		if *c == nil {
			*c = make(handleCache)
		}
		(*c)[h.Value()] = h
	}
	return h
}
