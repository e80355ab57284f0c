package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushlog/pushlog/schema"
)

// TestEmbeddedLogDamage is issue 11 finding 1 on the binary: a damaged
// messages segment of the embedded broker is detected at start (serve
// refuses, naming the file, the offsets and the exact number of records),
// `pushlog repair` drops exactly those and says so, and serve then starts
// and delivers every other pending message once, with no offset reused.
func TestEmbeddedLogDamage(t *testing.T) {
	const pushes = 300
	tests := []struct {
		name   string
		damage func(t *testing.T, seg string) // damages the segment file
		want   int                            // records lost; 0: whatever the damaged batches held (concurrent pushes share batches); -1: all the segment held
	}{
		{name: "cut 37 bytes off the end", damage: func(t *testing.T, seg string) {
			truncateBy(t, seg, 37)
		}},
		{name: "flip 16 bytes in the middle", damage: func(t *testing.T, seg string) {
			raw, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			for i := len(raw) / 2; i < len(raw)/2+16; i++ {
				raw[i] ^= 0xff
			}
			if err := os.WriteFile(seg, raw, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncate to zero", want: -1, damage: func(t *testing.T, seg string) {
			if err := os.Truncate(seg, 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, 4*time.Minute)
			s := startServer(t, serverOpts{Embedded: true, Env: []string{"PUSHLOG_PENDING_LIMIT=1000"}})
			vapid := snNewVAPID(t)
			uaid, sub := snOffline(ctx, t, s, "")
			all := snSendMany(ctx, t, sub, pushes, vapid)
			s.terminate()

			names, _ := schema.NamesFor(s.opts.Namespace)
			seg := filepath.Join(s.opts.DataDir, "kafka", "partitions",
				fmt.Sprintf("%s-%d", names.Messages, schema.PartitionOf(uaid, 4)), "0.dat")
			want := tc.want
			if want < 0 { // 300 padded pushes may fill more than one segment
				want = pushes
				if next, err := filepath.Glob(filepath.Join(filepath.Dir(seg), "*.dat")); err == nil {
					for _, f := range next {
						if b, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".dat")); err == nil && b > 0 {
							want = min(want, b)
						}
					}
				}
			}
			tc.damage(t, seg)

			// serve refuses, naming the file and an exact count.
			out, err := runPushlog(ctx, s.env, "serve")
			if err == nil {
				t.Fatalf("serve started on a damaged log:\n%s", out)
			}
			m := regexp.MustCompile(`(?m)^  (\S+\.dat): \S+ offsets (\d+)\.\.(\d+): exactly (\d+) records affected`).FindStringSubmatch(out)
			if m == nil || m[1] != seg || !strings.Contains(out, "pushlog repair --data-dir") {
				t.Fatalf("serve's refusal does not name %s with an exact count:\n%s", seg, out)
			}
			lost, _ := strconv.Atoi(m[4])
			if lost < 1 || want != 0 && lost != want {
				t.Fatalf("refusal counts %d records, want %d", lost, want)
			}

			// pushlog repair drops exactly those and says so.
			out, err = runPushlog(ctx, s.env, "repair", "--data-dir", s.opts.DataDir)
			if err != nil {
				t.Fatalf("repair: %v\n%s", err, out)
			}
			if want := fmt.Sprintf("dropped %s/%d offsets %s..%s: exactly %d records", names.Messages, schema.PartitionOf(uaid, 4), m[2], m[3], lost); !strings.Contains(out, want) {
				t.Fatalf("repair output lacks %q:\n%s", want, out)
			}

			// serve starts; every other message arrives once; nothing more.
			s.restart()
			ua := uaRedial(ctx, t, s.WSURL, uaid)
			got := map[string]bool{}
			for len(got) < pushes-lost {
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				n, plain := ua.nextFor(rctx, sub)
				cancel()
				text := string(plain)
				if !all[text] || got[text] {
					t.Fatalf("received %q: not sent, or twice", text)
				}
				got[text] = true
				ua.ack(n)
			}
			ua.ack(snMarker(ctx, t, ua, sub, vapid)) // no other message is pending
			ua.close()
			t.Logf("%s: %d of %d pending messages dropped by the repair, as reported; %d delivered", tc.name, lost, pushes, len(got))
		})
	}
}

// runPushlog runs the binary with env and returns its combined output.
func runPushlog(ctx context.Context, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pushlogBin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// truncateBy cuts n bytes off the end of path.
func truncateBy(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// TestEmbeddedDataDirGuards is issue 11 findings 2 and 3 on the binary: a
// second process on a data directory in use refuses (naming the holder),
// and with events in the log but the key file gone, serve refuses and
// says how to restore it or start over, instead of making a new key.
func TestEmbeddedDataDirGuards(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	s := startServer(t, serverOpts{Embedded: true})
	vapid := snNewVAPID(t)
	_, sub := snOffline(ctx, t, s, "")
	snSendMany(ctx, t, sub, 3, vapid)

	// The second process gets other listen addresses: only the directory
	// is shared.
	env := append(append([]string{}, s.env...), "PUSHLOG_HTTP_ADDR="+freePort(t), "PUSHLOG_WS_ADDR="+freePort(t), "PUSHLOG_EMBEDDED_KAFKA_ADDR="+freePort(t))
	out, err := runPushlog(ctx, env, "serve")
	if err == nil || !strings.Contains(out, "in use by another process") || !strings.Contains(out, "pid") {
		t.Fatalf("a second serve on the same data directory: %v\n%s", err, out)
	}
	s.terminate()

	keys := filepath.Join(s.opts.DataDir, "crypto-keys")
	saved, err := os.ReadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keys); err != nil {
		t.Fatal(err)
	}
	out, err = runPushlog(ctx, s.env, "serve")
	if err == nil || !strings.Contains(out, "--crypto-keys") || !strings.Contains(out, "--new-keys") {
		t.Fatalf("serve without its key file: %v\n%s", err, out)
	}
	if _, err := os.Stat(keys); !os.IsNotExist(err) {
		t.Fatalf("serve wrote a new key file: %v", err)
	}
	// Restored, the old endpoint works again.
	if err := os.WriteFile(keys, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	s.restart()
	snMustCreate(ctx, t, sub, []byte("after restore"), snPush{TTL: 60, VAPID: vapid})
}
