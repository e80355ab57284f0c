package owner

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushlog/pushlog/schema"
	"github.com/pushlog/pushlog/schema/pb"
)

// maxIdleUAIDBytes is the documented bound (issue 10): a registered UAID
// that is offline with nothing pending costs at most this much heap in
// its owner.
const maxIdleUAIDBytes = 200

// TestIdleUAIDMemory folds the registrations of many UAIDs with 5 channels
// each into one partition state and measures the heap they cost per UAID
// after a GC. PUSHLOG_MEASURE_UAIDS sets the count (the README figure is
// from 1,000,000: PUSHLOG_MEASURE_UAIDS=1000000 go test -run
// TestIdleUAIDMemory -v ./connector/owner/).
func TestIdleUAIDMemory(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 20000
	}
	if s := os.Getenv("PUSHLOG_MEASURE_UAIDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("PUSHLOG_MEASURE_UAIDS=%q", s)
		}
		n = v
	}
	const chansPer = 5
	clock := newFakeClock()
	ps, _ := newTestPart(t, 0, clock)
	ps.setPositions([numGroupTopics]int64{}, [numGroupTopics]int64{})
	ps.checkReady()

	ev := &pb.Event{TimeMs: clock.Now().UnixMilli()}
	reg := &pb.ChannelRegistered{}
	ev.Body = &pb.Event_ChannelRegistered{ChannelRegistered: reg}
	rec := &kgo.Record{Topic: schema.TopicRegistrations}
	var id, ch [16]byte

	before := heapAfterGC()
	ps.mu.Lock()
	for i := range n {
		binary.BigEndian.PutUint64(id[:8], uint64(i)+1)
		binary.BigEndian.PutUint64(id[8:], 0x5eed)
		ev.Uaid = hex.EncodeToString(id[:])
		for c := range chansPer {
			binary.BigEndian.PutUint64(ch[:8], uint64(i))
			binary.BigEndian.PutUint64(ch[8:], uint64(c))
			reg.ChannelId = schema.FormatChannelID(ch[:])
			ps.foldRegistration(rec, ev, id)
			rec.Offset++
		}
	}
	ps.mu.Unlock()
	after := heapAfterGC()
	per := float64(after-before) / float64(n)
	t.Logf("%d UAIDs with %d channels each, offline, nothing pending: %.1f bytes of heap per UAID (%d MB in all)", n, chansPer, per, (after-before)>>20)
	if got := len(ps.recs); got != n {
		t.Fatalf("%d UAIDs folded, want %d", got, n)
	}
	if len(ps.uaids) != 0 {
		t.Fatalf("%d full states for offline UAIDs with nothing pending", len(ps.uaids))
	}
	if per > maxIdleUAIDBytes {
		t.Errorf("%.1f bytes per idle UAID, want at most %d", per, maxIdleUAIDBytes)
	}
	runtime.KeepAlive(ps)
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
