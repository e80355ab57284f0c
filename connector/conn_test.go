package connector

import "testing"

// ConnID is 16 lowercase hex digits of the connection's id, leading zeros
// kept (events and the node link carry it).
func TestConnIDFormat(t *testing.T) {
	tests := map[uint64]string{
		0:                  "0000000000000000",
		0xab:               "00000000000000ab",
		0x0123456789abcdef: "0123456789abcdef",
		^uint64(0):         "ffffffffffffffff",
	}
	for id, want := range tests {
		if got := (&conn{id: id}).ConnID(); got != want {
			t.Errorf("ConnID of %#x = %q, want %q", id, got, want)
		}
	}
}
