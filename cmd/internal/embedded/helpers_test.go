package embedded

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const testTopic = "pushlog.messages"

// startTest starts the embedded broker on dir with small segments.
func startTest(t *testing.T, dir string, segBytes int64) *kfake.Cluster {
	t.Helper()
	c, err := Start(Config{Dir: dir, SegmentBytes: segBytes})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return c
}

// client is a producer/admin client on c.
func client(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MetadataMinAge(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// createTopic creates a one-partition topic with kfake's delete or
// compact policy.
func createTopic(t *testing.T, cl *kgo.Client, topic string, compact bool) {
	t.Helper()
	policy := "delete"
	if compact {
		policy = "compact"
	}
	resp, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, map[string]*string{"cleanup.policy": &policy}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
}

// produceN appends n records one batch each; the value names the offset.
func produceN(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		v := fmt.Sprintf("record-%06d-%0180d", i, i) // ~200 bytes
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i % 7)), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
}

// makeLog writes n records to topic in a fresh broker directory and
// stops the broker cleanly.
func makeLog(t *testing.T, n int, segBytes int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kafka")
	c := startTest(t, dir, segBytes)
	cl := client(t, c)
	createTopic(t, cl, testTopic, false)
	produceN(t, cl, testTopic, 0, n)
	cl.Close()
	c.Close()
	return dir
}

// partDirOf is the partition directory of testTopic/0.
func partDirOf(dir string) string {
	return filepath.Join(dir, "partitions", testTopic+"-0")
}

// segments lists the partition's segment files in offset order.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(partDirOf(dir), "*.dat"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no segments in %s: %v", partDirOf(dir), err)
	}
	base := func(p string) int64 {
		n, _ := strconv.ParseInt(filepath.Base(p[:len(p)-4]), 10, 64)
		return n
	}
	for i := range m { // few files: insertion sort by base
		for j := i; j > 0 && base(m[j]) < base(m[j-1]); j-- {
			m[j], m[j-1] = m[j-1], m[j]
		}
	}
	return m
}

// consumeAll appends a sentinel record, then reads the partition from
// its start up to the sentinel: it returns the offsets of the records read
// before it and the sentinel's offset (the first offset the broker handed
// out after the restart: never a reused one).
func consumeAll(t *testing.T, c *kfake.Cluster, topic string) ([]int64, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pr := client(t, c)
	r := pr.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("sentinel")})
	if err := r.FirstErr(); err != nil {
		t.Fatalf("produce sentinel: %v", err)
	}
	sentinel := r[0].Record.Offset
	cl := client(t, c, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	var got []int64
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consume: no sentinel after %d records", len(got))
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == "sentinel" {
				done = true
				return
			}
			got = append(got, r.Offset)
			if want := fmt.Sprintf("record-%06d-", r.Offset); len(r.Value) < len(want) || string(r.Value[:len(want)]) != want {
				t.Errorf("offset %d holds %q", r.Offset, r.Value)
			}
		})
		if done {
			return got, sentinel
		}
	}
}

// fileSize is the size of path.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func putLE32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }

func crcOf(b []byte) uint32 { return crc32.Checksum(b, crc32c) }
