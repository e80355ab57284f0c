package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLineProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	p := newLineProgress(&buf, "events", 100, 5*time.Second, clock)
	now = now.Add(time.Second)
	p.Add(10) // before the interval: silent
	if buf.Len() != 0 {
		t.Fatalf("wrote %q before the interval", buf.String())
	}
	now = now.Add(4 * time.Second)
	p.Add(40) // 50 in 5 s: 10/s, 50 left: eta 5s
	now = now.Add(5 * time.Second)
	p.Add(50)
	p.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"events: 50/100 (50.0%), 10/s, eta 5s",
		"events: 100/100 (100.0%), 10/s, eta 0s",
		"events: 100/100 (100.0%), 10/s, eta 0s done",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines:\n%s\nwant:\n%s", buf.String(), strings.Join(want, "\n"))
	}
}

func TestNewProgressPlainWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	if _, ok := newProgress(&buf, "x", 1).(*lineProgress); !ok {
		t.Fatal("a buffer is not a terminal: want plain lines")
	}
}
