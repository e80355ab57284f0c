package owner

import "strings"

// MemberInfo is what a connector node announces to the owners' group in
// its member metadata user data: routers read LinkAddr to reach the owner
// of a partition, operator tools (pushlog status) read both to list and
// scrape the nodes.
type MemberInfo struct {
	// LinkAddr is the node-link address ("" for a single node).
	LinkAddr string
	// MetricsAddr is the host:port serving GET /metrics ("" when the node
	// could not name an address others reach, e.g. a wildcard listener).
	MetricsAddr string
}

// The user data formats. v1 (the only one before metrics addresses) is the
// prefix and the link address; v2 is a header line and key=value lines,
// unknown keys ignored, so later fields need no new version.
const (
	linkDataPrefix   = "pushlog-link-v1 "
	memberDataHeader = "pushlog-member-v2\n"
)

// encode is the user data announcing m: nil when there is nothing to
// announce, v1 when there is only a link address (what nodes that predate
// v2 read during a rolling upgrade), else v2. A value with a line break is
// no address and is left out rather than corrupting the lines.
func (m MemberInfo) encode() []byte {
	link, metrics := oneLine(m.LinkAddr), oneLine(m.MetricsAddr)
	switch {
	case link == "" && metrics == "":
		return nil
	case metrics == "":
		return []byte(linkDataPrefix + link)
	}
	var b strings.Builder
	b.WriteString(memberDataHeader)
	if link != "" {
		b.WriteString("link=" + link + "\n")
	}
	b.WriteString("metrics=" + metrics + "\n")
	return []byte(b.String())
}

func oneLine(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		return ""
	}
	return s
}

// MemberInfoOf reads member user data written by any pushlog version. It
// never fails: user data that is empty, short, foreign or corrupt yields
// the zero MemberInfo (or the fields that could be read).
func MemberInfoOf(userData []byte) MemberInfo {
	s := string(userData)
	if link, ok := strings.CutPrefix(s, linkDataPrefix); ok {
		return MemberInfo{LinkAddr: link}
	}
	rest, ok := strings.CutPrefix(s, memberDataHeader)
	if !ok {
		return MemberInfo{}
	}
	var m MemberInfo
	seen := map[string]bool{}
	for line := range strings.SplitSeq(rest, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || seen[k] {
			continue // not a field, or a repeated one: the first wins
		}
		seen[k] = true
		switch k {
		case "link":
			m.LinkAddr = v
		case "metrics":
			m.MetricsAddr = v
		}
	}
	return m
}

// LinkAddrOf returns the node-link address a member of the owners' group
// announced in its metadata user data ("" for a single node without a
// link).
func LinkAddrOf(userData []byte) string { return MemberInfoOf(userData).LinkAddr }
