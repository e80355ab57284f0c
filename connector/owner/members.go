package owner

// LinkAddrOf returns the node-link address a member of the owners' group
// announced in its metadata user data ("" for a single node without a
// link); operator tools (pushlog status) list nodes with it.
func LinkAddrOf(userData []byte) string { return linkAddrOf(userData) }
