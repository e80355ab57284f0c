package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStableNodeID(t *testing.T) {
	dir := t.TempDir()
	id1, lock1, err := stableNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !validNodeID.MatchString(id1) {
		t.Fatalf("id %q is not valid", id1)
	}
	// A second process on the same directory (external Kafka) gets a
	// different id of its own, kept in node-id.1.
	id2, lock2, err := stableNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id1 {
		t.Fatalf("two live processes share id %q", id1)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "node-id.1")); strings.TrimSpace(string(b)) != id2 {
		t.Errorf("node-id.1 holds %q, want %q", b, id2)
	}
	_ = lock1.Close()
	_ = lock2.Close()
	// A restart keeps the id.
	again, lock, err := stableNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if again != id1 {
		t.Errorf("restart: id %q, want %q", again, id1)
	}
}

func TestStableNodeIDRepairsAndBounds(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "node-id"), []byte("bad id with spaces\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, lock, err := stableNodeID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !validNodeID.MatchString(id) || strings.Contains(id, " ") {
		t.Fatalf("invalid content not replaced: %q", id)
	}
	_ = lock.Close()
	if err := os.WriteFile(filepath.Join(dir, "node-id"), []byte("kept-id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	locks := []*nodeIDLock{}
	defer func() {
		for _, l := range locks {
			_ = l.Close()
		}
	}()
	for i := range nodeIDSlots {
		id, l, err := stableNodeID(dir)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		if i == 0 && id != "kept-id" {
			t.Errorf("an operator's id was replaced: %q", id)
		}
		locks = append(locks, l)
	}
	if _, _, err := stableNodeID(dir); err == nil || !strings.Contains(err.Error(), "--node-id") {
		t.Errorf("past the slots: %v", err)
	}
}

func TestNewNodeID(t *testing.T) {
	for _, host := range []string{"web-1.example.com", "", "host with spaces/and:slashes", strings.Repeat("h", 300), "ünïcode"} {
		id := newNodeID(host)
		if !validNodeID.MatchString(id) {
			t.Errorf("host %q: id %q is not valid", host, id)
		}
	}
}
