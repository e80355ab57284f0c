// Package integration runs pushlog's built binary against real Kafka (and
// ClickHouse where needed) and real client libraries. The README's test
// command starts the servers and sets KAFKA_BROKERS / CLICKHOUSE_ADDR; in CI a
// missing server fails the tests, it never skips them.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var pushlogBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pushlog-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pushlogBin = filepath.Join(dir, "pushlog")
	build := exec.Command("go", "build", "-o", pushlogBin, "github.com/pushlog/pushlog/cmd/pushlog")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pushlog:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// inCI reports whether missing infrastructure must fail the run.
func inCI() bool { return os.Getenv("CI") != "" }

// kafkaBrokers returns the real Kafka the test command started. Outside CI a
// developer without one gets a skip with instructions; in CI it is a failure.
func kafkaBrokers(t testing.TB) string {
	t.Helper()
	b := os.Getenv("KAFKA_BROKERS")
	if b == "" {
		if inCI() {
			t.Fatal("KAFKA_BROKERS is not set: the test command must start real Kafka (deploy/test.sh)")
		}
		t.Skip("KAFKA_BROKERS not set; run deploy/test.sh (starts real Kafka) to run integration tests")
	}
	return b
}

// freePort returns a loopback address with a port that was free a moment
// ago and that this test process has not handed out before: the kernel
// may offer a just-closed port again, and two listeners of one server
// given the same port made it fail at start (seen in CI).
func freePort(t testing.TB) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		handedOut.Lock()
		seen := handedOut.ports[addr]
		handedOut.ports[addr] = true
		handedOut.Unlock()
		if !seen {
			return addr
		}
	}
	t.Fatal("no loopback port that was not handed out before")
	return ""
}

// handedOut is every address freePort has returned in this test process.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// lockedBuffer collects a process's output for failure reports.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serverOpts describes one pushlog process.
type serverOpts struct {
	Embedded bool     // no KAFKA_BROKERS: the in-process broker under DataDir
	DataDir  string   // default: a fresh temp dir
	Env      []string // extra PUSHLOG_* settings
	// Namespace isolates topics and groups on the shared real Kafka;
	// default: a fresh one per server, so tests never see each other.
	Namespace string
	Args      []string // extra serve flags
	// Roles restricts the process to these roles (default: all). Without
	// the connector role there is no WebSocket listener to wait for.
	Roles string
}

type server struct {
	t       testing.TB
	opts    serverOpts
	env     []string
	HTTPURL string // push API base
	WSURL   string // connection listener
	cmd     *exec.Cmd
	logs    *lockedBuffer
	done    chan struct{}
}

// startServer runs `pushlog serve` and waits until both listeners answer.
func startServer(t testing.TB, opts serverOpts) *server {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.Namespace == "" {
		opts.Namespace = freshNamespace()
	}
	httpAddr, wsAddr := freePort(t), freePort(t)
	env := append(os.Environ(),
		"PUSHLOG_DATA_DIR="+opts.DataDir,
		"PUSHLOG_HTTP_ADDR="+httpAddr,
		"PUSHLOG_WS_ADDR="+wsAddr,
		"PUSHLOG_PARTITIONS=4",
		"PUSHLOG_NAMESPACE="+opts.Namespace,
		"PUSHLOG_LOG_LEVEL=debug",
		// The console's default address is fixed (127.0.0.1:8084): servers
		// of parallel tests would race for it. A test that wants the
		// console sets PUSHLOG_CONSOLE_ADDR in opts.Env (later wins).
		"PUSHLOG_CONSOLE_ADDR=off",
	)
	if opts.Embedded {
		env = append(env, "KAFKA_BROKERS=", "PUSHLOG_EMBEDDED_KAFKA_ADDR="+freePort(t))
	} else {
		env = append(env, "KAFKA_BROKERS="+kafkaBrokers(t))
	}
	if opts.Roles != "" {
		env = append(env, "PUSHLOG_ROLES="+opts.Roles)
	}
	env = append(env, opts.Env...)
	s := &server{t: t, opts: opts, env: env, HTTPURL: "http://" + httpAddr, WSURL: "ws://" + wsAddr + "/"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.logs = &lockedBuffer{}
	s.cmd = exec.Command(pushlogBin, append([]string{"serve"}, s.opts.Args...)...)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start pushlog: %v", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	s.waitReady(60 * time.Second)
}

func (s *server) waitReady(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	wsHost := strings.TrimSuffix(strings.TrimPrefix(s.WSURL, "ws://"), "/")
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.t.Fatalf("pushlog exited during start-up:\n%s", s.logs.String())
		default:
		}
		resp, err := http.Get(s.HTTPURL + "/__lbheartbeat__")
		if err == nil {
			resp.Body.Close()
			wsUp := !s.hasWS()
			if c, err := net.Dial("tcp", wsHost); err == nil {
				c.Close()
				wsUp = true
			}
			if wsUp && resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("pushlog not ready after %s:\n%s", timeout, s.logs.String())
}

// hasWS reports whether the process runs the connector role (and so a
// WebSocket listener).
func (s *server) hasWS() bool {
	return s.opts.Roles == "" || strings.Contains(s.opts.Roles, "connector")
}

// kill9 crashes the process without any chance to clean up.
func (s *server) kill9() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// terminate stops the process gracefully (SIGTERM) and waits.
func (s *server) terminate() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Errorf("pushlog did not stop within 30s of SIGTERM:\n%s", s.logs.String())
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// restart starts the process again with the same settings and data.
func (s *server) restart() {
	s.t.Helper()
	s.start()
}

func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.terminate()
	if s.t.Failed() {
		s.t.Logf("pushlog output:\n%s", s.logs.String())
	}
}

// freshNamespace returns a namespace no earlier run used.
func freshNamespace() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "it-" + hex.EncodeToString(b[:])
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
