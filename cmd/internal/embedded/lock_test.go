package embedded

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestLockDirExcludesSecondOpen(t *testing.T) {
	dir := t.TempDir()
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock belongs to the open file description: a second open in this
	// process conflicts just like another process would.
	if _, err := LockDir(dir); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second lock: %v, want ErrLocked naming the pid", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	_ = l2.Close()
}

// TestLockDirOtherProcess locks in a child process (this test binary run
// again) while the parent holds the lock.
func TestLockDirOtherProcess(t *testing.T) {
	if dir := os.Getenv("EMBEDDED_LOCK_CHILD"); dir != "" {
		_, err := LockDir(dir)
		if errors.Is(err, ErrLocked) {
			os.Exit(3)
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	child := func() int {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockDirOtherProcess$")
		cmd.Env = append(os.Environ(), "EMBEDDED_LOCK_CHILD="+dir)
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	if code := child(); code != 3 {
		t.Fatalf("child locked a locked directory (exit %d)", code)
	}
	_ = l.Close()
	if code := child(); code != 0 {
		t.Fatalf("child could not lock a released directory (exit %d)", code)
	}
}
