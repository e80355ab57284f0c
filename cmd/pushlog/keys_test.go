package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealingKeysNeverSilentlyReplaced(t *testing.T) {
	withEvents := func(t *testing.T, dir string) {
		p := filepath.Join(dir, "kafka", "partitions", "pushlog.messages-0")
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "0.dat"), []byte("batch"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		events  bool
		newKeys bool
		wantErr string
	}{
		{name: "fresh directory generates a key"},
		{name: "events without the key file refuse", events: true, wantErr: "--new-keys"},
		{name: "--new-keys starts over deliberately", events: true, newKeys: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.events {
				withEvents(t, dir)
			}
			c := serveConfig{DataDir: dir, NewKeys: tc.newKeys}
			keys, err := c.sealingKeys()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--crypto-keys") {
					t.Fatalf("err %v, want one naming %s and --crypto-keys", err, tc.wantErr)
				}
				if _, err := os.Stat(filepath.Join(dir, "crypto-keys")); !os.IsNotExist(err) {
					t.Fatalf("a key file was written: %v", err)
				}
				return
			}
			if err != nil || len(keys) != 1 {
				t.Fatalf("keys %d, err %v", len(keys), err)
			}
			again, err := c.sealingKeys()
			if err != nil || string(again[0]) != string(keys[0]) {
				t.Fatalf("second start got another key (%v)", err)
			}
		})
	}
}
