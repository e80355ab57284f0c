package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
)

// Helpers shared by the hostile-client and soak tests: the server's
// broker, topic sizes, live heap and process memory.

// brokers is the Kafka the server uses: the real cluster, or its embedded
// broker's address.
func (s *server) brokers() string {
	if !s.opts.Embedded {
		return kafkaBrokers(s.t)
	}
	for i := len(s.env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(s.env[i], "PUSHLOG_EMBEDDED_KAFKA_ADDR="); ok {
			return v
		}
	}
	s.t.Fatal("embedded server without PUSHLOG_EMBEDDED_KAFKA_ADDR")
	return ""
}

// names are the server's topic names.
func (s *server) names(t testing.TB) schema.Names {
	t.Helper()
	n, err := schema.NamesFor(s.opts.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pid is the running process's id.
func (s *server) pid() int { return s.cmd.Process.Pid }

// running reports whether the process is still alive.
func (s *server) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// topicBytes is the size of topic's logs on the brokers, summed over its
// partitions (and replicas).
func topicBytes(ctx context.Context, t testing.TB, s *server, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(s.brokers(), ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dirs, err := kadm.NewClient(cl).DescribeAllLogDirs(ctx, nil)
	if err != nil {
		t.Fatalf("describe log dirs: %v", err)
	}
	var n int64
	found := false
	for _, d := range dirs {
		d.EachPartition(func(p kadm.DescribedLogDirPartition) {
			if p.Topic == topic {
				n += p.Size
				found = true
			}
		})
	}
	if !found {
		t.Fatalf("no log of topic %s on the brokers", topic)
	}
	return n
}

// settledTopicBytes waits until topic's size has not changed for 2 s (the
// projectors have caught up) and returns it.
func settledTopicBytes(ctx context.Context, t testing.TB, s *server, topic string) int64 {
	t.Helper()
	last, since := topicBytes(ctx, t, s, topic), time.Now()
	deadline := time.Now().Add(60 * time.Second)
	for time.Since(since) < 2*time.Second {
		if time.Now().After(deadline) {
			t.Logf("topic %s still growing after 60s (%d bytes)", topic, last)
			return last
		}
		time.Sleep(250 * time.Millisecond)
		if n := topicBytes(ctx, t, s, topic); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

// debugStats are the fields of /debug/stats the tests read.
type debugStats struct {
	Goroutines int   `json:"goroutines"`
	HeapAlloc  int64 `json:"heap_alloc"`
	HeapInuse  int64 `json:"heap_inuse"`
	Sys        int64 `json:"sys"`
}

// liveHeap forces a GC through the debug listener (returning free memory
// to the OS, so VmRSS is live memory too) and reads /debug/stats.
func liveHeap(ctx context.Context, t testing.TB, debugAddr string) debugStats {
	t.Helper()
	get := func(path string) *http.Response {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+debugAddr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("debug %s: %v", path, err)
		}
		return resp
	}
	get("/debug/gc").Body.Close()
	resp := get("/debug/stats")
	defer resp.Body.Close()
	var st debugStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("debug stats: %v", err)
	}
	return st
}

// procMemory reads VmRSS and VmHWM (peak RSS) of a process, in bytes.
func procMemory(pid int) (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, sc.Err()
}

// dirSize is the total size of the regular files under dir.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // files come and go (segments rolled, trimmed)
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
