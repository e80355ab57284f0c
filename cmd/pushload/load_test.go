package main

import (
	"encoding/base64"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/ingest/webpush"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       uint64
		wantErr    bool
	}{
		{"plain", "1234 (pushlog) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 12 0 100 0 0", 325, false},
		{"name with spaces and parens", "99 (a) b (c) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0", 10, false},
		{"no name", "1234 S 1 2", 0, true},
		{"short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 3", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.line))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStatCPU = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int64
		wantErr      bool
	}{
		{"status", "Name:\tpushlog\nVmPeak:\t  9999 kB\nVmRSS:\t   51896 kB\nRssAnon:\t 1 kB\n", 51896 * 1024, false},
		{"missing", "Name:\tx\n", 0, true},
		{"no unit", "VmRSS:\t12\n", 0, true},
		{"bad number", "VmRSS:\t1x2 kB\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseVmRSS = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestQuantiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		qs   []float64
		want []time.Duration
	}{
		{"1..100 ms", d, []float64{0.5, 0.95, 0.99, 1}, []time.Duration{50 * time.Millisecond, 95 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond}},
		{"one value", []time.Duration{7}, []float64{0.01, 0.5, 1}, []time.Duration{7, 7, 7}},
		{"empty", nil, []float64{0.5}, []time.Duration{0}},
		{"two values", []time.Duration{2, 1}, []float64{0.5, 0.99}, []time.Duration{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := quantiles(tc.in, tc.qs...)
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("quantiles(%v) = %v, want %v", tc.qs, got, tc.want)
				}
			}
		})
	}
	if d[0] != 100*time.Millisecond {
		t.Fatal("quantiles sorted its input in place")
	}
}

// The schedule is open loop: push i is due at start + i/rate, exactly.
func TestDue(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, tc := range []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{100, 0, 0},
		{100, 1, 10 * time.Millisecond},
		{100, 1000, 10 * time.Second},
		{5000, 5000, time.Second},
		{3, 1, 333333333},
		{3, 3_000_000, 1_000_000 * time.Second}, // no drift over many pushes
	} {
		if got := due(start, tc.rate, tc.i).Sub(start); got != tc.want {
			t.Errorf("due(rate %v, i %d) = %v, want %v", tc.rate, tc.i, got, tc.want)
		}
	}
}

// A sealed body is real aes128gcm: the library decrypts it with the
// receiver's keys, and its salt (which identifies the push) is read back
// from the notification's base64url data.
func TestSealerBodies(t *testing.T) {
	s, err := newSealer(256)
	if err != nil {
		t.Fatal(err)
	}
	body, salt, err := s.seal()
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != 256 {
		t.Fatalf("body of %d bytes, want 256", len(body))
	}
	got, err := s.receiver.Decrypt(webpush.Message{Encoding: webpush.AES128GCM, Body: body})
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	if string(got) != string(s.plaintext) {
		t.Fatalf("decrypted %q, want %q", got, s.plaintext)
	}
	read, ok := saltOf(base64.RawURLEncoding.EncodeToString(body))
	if !ok || read != salt {
		t.Fatalf("saltOf = %x, %v; want %x", read, ok, salt)
	}
	body2, salt2, _ := s.seal()
	if salt2 == salt || string(body2) == string(body) {
		t.Fatal("two bodies share a salt: ingest would take the second for a retry")
	}
	for _, bad := range []string{"", "short", "!!!!!!!!!!!!!!!!!!!!!!!!!!!!"} {
		if _, ok := saltOf(bad); ok {
			t.Errorf("saltOf(%q) accepted", bad)
		}
	}
}

func TestParseReady(t *testing.T) {
	for _, tc := range []struct {
		line      string
		ok        int
		found, er bool
	}{
		{"READY ok=9000 failed=0 elapsed=3s setup_p50=1ms setup_p99=2ms pid=7", 9000, true, false},
		{"set up 10/20", 0, false, false},
		{"READY failed=3", 0, false, true},
		{"READY ok=x failed=0", 0, false, true},
	} {
		ok, found, err := parseReady(tc.line)
		if ok != tc.ok || found != tc.found || (err != nil) != tc.er {
			t.Errorf("parseReady(%q) = %d, %v, %v", tc.line, ok, found, err)
		}
	}
}

func TestReportLine(t *testing.T) {
	r := &report{}
	r.add("mode", "rate")
	r.add("p99_ms", 2500*time.Microsecond)
	r.add("rate", 100.0)
	r.add("statuses", statusCounts(map[int]int64{429: 2, 201: 10, 0: 1}))
	want := "RESULT mode=rate p99_ms=2.500 rate=100.000 statuses=err:1,201:10,429:2"
	if r.String() != want {
		t.Fatalf("got  %s\nwant %s", r, want)
	}
}

func TestLineWriter(t *testing.T) {
	var lines []string
	w := &lineWriter{fn: func(s string) { lines = append(lines, s) }}
	_, _ = w.Write([]byte("set up 1/2\nREA"))
	_, _ = w.Write([]byte("DY ok=2\npartial"))
	if len(lines) != 2 || lines[1] != "READY ok=2" {
		t.Fatalf("lines = %q", lines)
	}
}

func TestSettled(t *testing.T) {
	for _, tc := range []struct {
		prev, cur int64
		want      bool
	}{
		{100_000, 100_500, true},
		{100_000, 99_500, true},
		{100_000, 102_000, false},
		{100_000, 98_000, false},
		{0, 0, false},
	} {
		if got := settled(tc.prev, tc.cur); got != tc.want {
			t.Errorf("settled(%d, %d) = %v, want %v", tc.prev, tc.cur, got, tc.want)
		}
	}
}

// TestCPUWindow: which CPU figures a window reports (not their values:
// tests never time anything).
func TestCPUWindow(t *testing.T) {
	keys := func(r *report) (out []string) {
		for _, kv := range r.kv {
			k, _, _ := strings.Cut(kv, "=")
			out = append(out, k)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		pid      int
		begin    bool
		accepted int64
		want     []string
	}{
		{"server and client", os.Getpid(), true, 10, []string{"client_cpu_pct", "server_cpu_s", "server_cpu_pct", "cpu_per_push_ms"}},
		{"nothing accepted", os.Getpid(), true, 0, []string{"client_cpu_pct", "server_cpu_s", "server_cpu_pct"}},
		{"no server pid", 0, true, 10, []string{"client_cpu_pct"}},
		{"window never began", os.Getpid(), false, 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newCPUWindow(tc.pid)
			if tc.begin {
				if err := w.begin(); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.end(); err != nil {
				t.Fatal(err)
			}
			r := &report{}
			w.addTo(r, time.Second, tc.accepted)
			if got := keys(r); !slices.Equal(got, tc.want) {
				t.Fatalf("keys %v, want %v", got, tc.want)
			}
		})
	}
}
