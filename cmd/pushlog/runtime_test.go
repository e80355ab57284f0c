package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRuntimeFileLifetime(t *testing.T) {
	dir := t.TempDir()
	if _, err := findServe(dir); !errors.Is(err, errNoServe) || !strings.Contains(err.Error(), "serve.json does not exist") {
		t.Fatalf("no file: %v", err)
	}
	info := runtimeInfo{PID: os.Getpid(), Namespace: "ns1", KafkaBrokers: []string{"127.0.0.1:1234"}, ClickHouseAddr: "ch:9000", ClickHouseDB: "db1"}
	remove, err := writeRuntime(dir, info)
	if err != nil {
		t.Fatal(err)
	}
	got, err := findServe(dir)
	if err != nil || got.Namespace != "ns1" || got.KafkaBrokers[0] != "127.0.0.1:1234" {
		t.Fatalf("findServe = %+v, %v", got, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, runtimeFileName+".*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
	remove()
	if _, err := os.Stat(runtimePath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("clean stop left the file: %v", err)
	}
}

func TestRuntimeFileStaleOrReplaced(t *testing.T) {
	dir := t.TempDir()
	// A serve that died: its pid is gone.
	if _, err := writeRuntime(dir, runtimeInfo{PID: 1 << 30, KafkaBrokers: []string{"x:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := findServe(dir); !errors.Is(err, errNoServe) || !strings.Contains(err.Error(), "not running any more") {
		t.Fatalf("stale file: %v", err)
	}
	// A later serve replaced the file: the earlier one's stop leaves it.
	remove, err := writeRuntime(dir, runtimeInfo{PID: os.Getpid() + 1<<29, KafkaBrokers: []string{"x:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeRuntime(dir, runtimeInfo{PID: os.Getpid(), KafkaBrokers: []string{"y:2"}}); err != nil {
		t.Fatal(err)
	}
	remove()
	if got, err := findServe(dir); err != nil || got.KafkaBrokers[0] != "y:2" {
		t.Fatalf("the later serve's file is gone: %+v, %v", got, err)
	}
	// Garbage and a file without brokers are errors, not a panic.
	if err := os.WriteFile(runtimePath(dir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := findServe(dir); err == nil {
		t.Error("garbage accepted")
	}
	if _, err := writeRuntime(dir, runtimeInfo{PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	if _, err := findServe(dir); err == nil || !strings.Contains(err.Error(), "names no Kafka broker") {
		t.Errorf("no brokers: %v", err)
	}
}

func TestKafkaFlagsResolve(t *testing.T) {
	running := t.TempDir()
	if _, err := writeRuntime(running, runtimeInfo{PID: os.Getpid(), Namespace: "emb", KafkaBrokers: []string{"127.0.0.1:5555"}}); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	tests := []struct {
		name        string
		flags       kafkaFlags
		wantBrokers string
		wantNS      string
		wantErr     string
	}{
		{"explicit brokers, default namespace", kafkaFlags{KafkaBrokers: []string{"a:1, b:2", "c:3"}, DataDir: running}, "a:1,b:2,c:3", "pushlog", ""},
		{"explicit brokers and namespace", kafkaFlags{KafkaBrokers: []string{"a:1"}, Namespace: "x"}, "a:1", "x", ""},
		{"running serve", kafkaFlags{DataDir: running}, "127.0.0.1:5555", "emb", ""},
		{"running serve, namespace given", kafkaFlags{DataDir: running, Namespace: "other"}, "127.0.0.1:5555", "other", ""},
		{"only empty entries", kafkaFlags{KafkaBrokers: []string{" , "}, DataDir: running}, "127.0.0.1:5555", "emb", ""},
		{"nothing running", kafkaFlags{DataDir: empty}, "", "", "no --kafka-brokers (KAFKA_BROKERS) given and no running pushlog serve found"},
		{"bad namespace", kafkaFlags{KafkaBrokers: []string{"a:1"}, Namespace: "a b"}, "", "", "--namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.flags
			names, err := f.resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(f.KafkaBrokers, ",") != tt.wantBrokers || names.Namespace != tt.wantNS {
				t.Errorf("brokers %v namespace %q, want %s %s", f.KafkaBrokers, names.Namespace, tt.wantBrokers, tt.wantNS)
			}
		})
	}
}

func TestClickHouseFlagsResolve(t *testing.T) {
	on, off, empty := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := writeRuntime(on, runtimeInfo{PID: os.Getpid(), KafkaBrokers: []string{"k:1"}, ClickHouseAddr: "ch:9000", ClickHouseDB: "adb"}); err != nil {
		t.Fatal(err)
	}
	if _, err := writeRuntime(off, runtimeInfo{PID: os.Getpid(), KafkaBrokers: []string{"k:1"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		flags    clickhouseFlags
		dir      string
		want     string // addr/db
		wantErrs string
	}{
		{"explicit", clickhouseFlags{Addr: "h:1"}, empty, "h:1/pushlog", ""},
		{"explicit with db", clickhouseFlags{Addr: "h:1", Database: "d"}, on, "h:1/d", ""},
		{"running serve", clickhouseFlags{}, on, "ch:9000/adb", ""},
		{"running serve, db given", clickhouseFlags{Database: "mine"}, on, "ch:9000/mine", ""},
		{"running serve without analytics", clickhouseFlags{}, off, "", "has analytics off"},
		{"nothing running", clickhouseFlags{}, empty, "", "no --clickhouse-addr (CLICKHOUSE_ADDR) given and no running pushlog serve found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.flags
			err := f.resolve(tt.dir)
			if tt.wantErrs != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrs) {
					t.Fatalf("err = %v, want %q", err, tt.wantErrs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Addr + "/" + f.Database; got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
