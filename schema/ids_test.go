package schema

import (
	"encoding"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var (
	_ encoding.TextMarshaler   = UAID{}
	_ encoding.TextAppender    = UAID{}
	_ encoding.TextUnmarshaler = (*UAID)(nil)
)

func TestParseUAID(t *testing.T) {
	const canon = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		in   string
		want string // canonical form; "" when the input is invalid
	}{
		{"canonical", canon, canon},
		{"upper case", strings.ToUpper(canon), canon},
		{"dashed like a UUID", "01234567-89ab-cdef-0123-456789abcdef", canon},
		{"zero", strings.Repeat("0", 32), strings.Repeat("0", 32)},
		{"empty", "", ""},
		{"too short", canon[:31], ""},
		{"too long", canon + "0", ""},
		{"not hex", "g" + canon[1:], ""},
		{"only dashes", strings.Repeat("-", 32), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUAID(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrBadUAID) {
					t.Fatalf("ParseUAID(%q) = %v, %v; want ErrBadUAID", tt.in, u, err)
				}
				return
			}
			if err != nil || u.String() != tt.want {
				t.Fatalf("ParseUAID(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
			}
			if n, err := NormalizeUAID(tt.in); err != nil || n != tt.want {
				t.Fatalf("NormalizeUAID(%q) = %q, %v; want %s", tt.in, n, err, tt.want)
			}
		})
	}
}

func TestUAIDText(t *testing.T) {
	u := RandomUAID()
	if s := u.String(); len(s) != 32 || strings.ToLower(s) != s || strings.Contains(s, "-") {
		t.Fatalf("String = %q", s)
	}
	if back, err := ParseUAID(u.String()); err != nil || back != u {
		t.Fatalf("ParseUAID(String()) = %v, %v; want %v", back, err, u)
	}
	if b, _ := u.AppendText([]byte("x=")); string(b) != "x="+u.String() {
		t.Fatalf("AppendText = %q", b)
	}
	// JSON carries the text form, byte for byte what a string field held.
	type wire struct {
		UAID UAID `json:"uaid"`
	}
	got, err := json.Marshal(wire{u})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(struct {
		UAID string `json:"uaid"`
	}{u.String()})
	if string(got) != string(want) {
		t.Fatalf("json = %s, want %s", got, want)
	}
	var back wire
	if err := json.Unmarshal(got, &back); err != nil || back.UAID != u {
		t.Fatalf("json round trip = %v, %v; want %v", back.UAID, err, u)
	}
	if err := json.Unmarshal([]byte(`{"uaid":"nope"}`), &back); err == nil {
		t.Fatal("json accepted a malformed uaid")
	}
}

// TestUAIDPartitionMatchesPartitionOf: the typed partition is exactly the
// one every producer computes from the string key.
func TestUAIDPartitionMatchesPartitionOf(t *testing.T) {
	// Golden: franz-go's StickyKeyPartitioner (Kafka's default) on the key.
	golden := []struct {
		uaid string
		n, p int32
	}{
		{"00000000000000000000000000000000", 1, 0},
		{"00000000000000000000000000000000", 3, 1},
		{"00000000000000000000000000000000", 12, 1},
		{"00000000000000000000000000000000", 64, 17},
		{"00000000000000000000000000000000", 1000, 321},
		{"ffffffffffffffffffffffffffffffff", 3, 2},
		{"ffffffffffffffffffffffffffffffff", 12, 11},
		{"ffffffffffffffffffffffffffffffff", 64, 63},
		{"ffffffffffffffffffffffffffffffff", 1000, 663},
		{"0123456789abcdef0123456789abcdef", 3, 2},
		{"0123456789abcdef0123456789abcdef", 12, 5},
		{"0123456789abcdef0123456789abcdef", 64, 41},
		{"0123456789abcdef0123456789abcdef", 1000, 833},
		{"deadbeefdeadbeefdeadbeefdeadbeef", 12, 8},
		{"deadbeefdeadbeefdeadbeefdeadbeef", 64, 36},
		{"deadbeefdeadbeefdeadbeefdeadbeef", 1000, 100},
		{"8c4f7e5a3b2d1c0e9f8a7b6c5d4e3f20", 3, 1},
		{"8c4f7e5a3b2d1c0e9f8a7b6c5d4e3f20", 12, 10},
		{"8c4f7e5a3b2d1c0e9f8a7b6c5d4e3f20", 64, 18},
		{"8c4f7e5a3b2d1c0e9f8a7b6c5d4e3f20", 1000, 762},
	}
	for _, g := range golden {
		u, err := ParseUAID(g.uaid)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Partition(g.n); got != g.p {
			t.Errorf("%s.Partition(%d) = %d, want %d", g.uaid, g.n, got, g.p)
		}
		if got := PartitionOf(g.uaid, g.n); got != g.p {
			t.Errorf("PartitionOf(%s, %d) = %d, want %d", g.uaid, g.n, got, g.p)
		}
		// A dashed or upper-case spelling is the same UAID: its records
		// are keyed by the canonical form.
		if v, _ := ParseUAID(strings.ToUpper(g.uaid)); v.Partition(g.n) != g.p {
			t.Errorf("upper-case %s lands on another partition", g.uaid)
		}
	}
	for i := 0; i < 20000; i++ {
		u := RandomUAID()
		s := u.String()
		for _, n := range []int32{-1, 0, 1, 2, 3, 12, 64, 100, 1 << 20} {
			if got, want := u.Partition(n), PartitionOf(s, n); got != want {
				t.Fatalf("%s.Partition(%d) = %d, PartitionOf = %d", s, n, got, want)
			}
		}
	}
}

func TestUAIDPartitionDoesNotAllocate(t *testing.T) {
	u := RandomUAID()
	if a := testing.AllocsPerRun(100, func() { _ = u.Partition(12) }); a != 0 {
		t.Fatalf("Partition allocates %v times", a)
	}
}

// FuzzParseUAID: whatever parses prints canonically and parses back to
// the same value, on the same partition as its canonical key.
func FuzzParseUAID(f *testing.F) {
	f.Add("0123456789abcdef0123456789abcdef")
	f.Add("01234567-89AB-cdef-0123-456789abcdef")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUAID(s)
		if err != nil {
			return
		}
		c := u.String()
		if back, err := ParseUAID(c); err != nil || back != u {
			t.Fatalf("%q -> %s -> %v, %v", s, c, back, err)
		}
		if u.Partition(7) != PartitionOf(c, 7) {
			t.Fatalf("%s: partitions differ", c)
		}
	})
}
