package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/pushlog/pushlog/integration/attack"
)

func parse(t *testing.T, args ...string) *cli {
	t.Helper()
	var c cli
	p, err := kong.New(&c, kong.Vars{"attacks": strings.Join(attack.Names(), ", ")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestFlags(t *testing.T) {
	c := parse(t, "--push-url", "http://127.0.0.1:1", "--ws-url", "ws://127.0.0.1:2/", "--attacks", "channel-flood,lenient",
		"--count", "7", "--duration", "3s", "--json")
	o := c.options(nil)
	if o.PushURL != "http://127.0.0.1:1" || o.WSURL != "ws://127.0.0.1:2/" || o.Count != 7 || o.Duration != 3*time.Second ||
		!c.JSON || len(c.Attacks) != 2 || c.Attacks[1] != "lenient" {
		t.Fatalf("parsed %+v", c)
	}
}

// Without --allow-remote a remote target is refused before anything is sent.
func TestRefusesRemote(t *testing.T) {
	c := parse(t, "--push-url", "https://push.example.com", "--ws-url", "wss://push.example.com/")
	var out, logs bytes.Buffer
	_, err := c.run(context.Background(), &out, &logs)
	if err == nil || !strings.Contains(err.Error(), "--allow-remote") {
		t.Fatalf("err %v, want a refusal naming --allow-remote", err)
	}
	if out.Len() != 0 {
		t.Fatalf("printed %q", out.String())
	}
}

func TestList(t *testing.T) {
	c := parse(t, "--list")
	var out bytes.Buffer
	if ok, err := c.run(context.Background(), &out, &out); err != nil || !ok {
		t.Fatalf("list: %v %v", ok, err)
	}
	for _, n := range attack.Names() {
		if !strings.Contains(out.String(), n+" ") {
			t.Errorf("list lacks %s:\n%s", n, out.String())
		}
	}
}
