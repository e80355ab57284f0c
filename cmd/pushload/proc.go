package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of /proc/PID/stat's utime and stime (USER_HZ): 100 on
// every Linux architecture Go supports, whatever the kernel's HZ.
const userHZ = 100

// procCPU returns the process's user+system CPU time so far.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server cpu: %w", err)
	}
	ticks, err := parseStatCPU(data)
	if err != nil {
		return 0, fmt.Errorf("server cpu: /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15) of a /proc/PID/stat
// line. The command name (field 2) may hold spaces and parentheses, so
// fields are counted from the last ')'.
func parseStatCPU(data []byte) (uint64, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, fmt.Errorf("no command name")
	}
	// After ") " come field 3 (state) onwards: utime is the 12th of them.
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	utime, err := strconv.ParseUint(string(fields[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(string(fields[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return utime + stime, nil
}

// procRSS returns the process's resident set size in bytes as the
// operating system sees it (VmRSS), without asking the process for a GC.
func procRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("server rss: %w", err)
	}
	rss, err := parseVmRSS(data)
	if err != nil {
		return 0, fmt.Errorf("server rss: /proc/%d/status: %w", pid, err)
	}
	return rss, nil
}

// parseVmRSS reads the "VmRSS:  1234 kB" line of /proc/PID/status.
func parseVmRSS(data []byte) (int64, error) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("malformed VmRSS line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// cpuMeter reads a server's CPU time at the start and end of a window; with
// no pid it reads nothing and reports zero.
type cpuMeter struct {
	pid   int
	start time.Duration
}

func (m *cpuMeter) begin() error {
	if m.pid == 0 {
		return nil
	}
	var err error
	m.start, err = procCPU(m.pid)
	return err
}

// used returns the CPU time since begin.
func (m *cpuMeter) used() (time.Duration, error) {
	if m.pid == 0 {
		return 0, nil
	}
	now, err := procCPU(m.pid)
	if err != nil {
		return 0, err
	}
	return now - m.start, nil
}

// cpuWindow is the CPU bookkeeping of a measured window: the server's CPU
// (nothing without a pid) and the load tool's own (was it the bottleneck?).
type cpuWindow struct {
	server, self         cpuMeter
	begun                bool
	serverUsed, selfUsed time.Duration
}

func newCPUWindow(serverPID int) *cpuWindow {
	return &cpuWindow{server: cpuMeter{pid: serverPID}, self: cpuMeter{pid: os.Getpid()}}
}

// begin reads both CPU times at the start of the window.
func (w *cpuWindow) begin() error {
	if err := w.server.begin(); err != nil {
		return err
	}
	if err := w.self.begin(); err != nil {
		return err
	}
	w.begun = true
	return nil
}

// end reads both CPU times at the end of the window (nothing if it never
// began); only the server's read can fail it.
func (w *cpuWindow) end() error {
	if !w.begun {
		return nil
	}
	var err error
	w.serverUsed, err = w.server.used()
	w.selfUsed, _ = w.self.used()
	return err
}

// addTo adds the window's CPU figures to r: client_cpu_pct and, with a
// server pid, server_cpu_s, server_cpu_pct and cpu_per_push_ms.
func (w *cpuWindow) addTo(r *report, window time.Duration, accepted int64) {
	if !w.begun || window <= 0 {
		return
	}
	r.add("client_cpu_pct", 100*w.selfUsed.Seconds()/window.Seconds())
	if w.server.pid == 0 {
		return
	}
	r.add("server_cpu_s", w.serverUsed.Seconds())
	r.add("server_cpu_pct", 100*w.serverUsed.Seconds()/window.Seconds())
	if accepted > 0 {
		r.add("cpu_per_push_ms", w.serverUsed/time.Duration(accepted))
	}
}

// print prints the server's CPU in the window per accepted push, for the
// human reading along (nothing without a server pid or accepted pushes).
func (w *cpuWindow) print(window time.Duration, accepted int64) {
	if !w.begun || window <= 0 || w.server.pid == 0 || accepted <= 0 {
		return
	}
	fmt.Printf("server CPU %.2f s (%.1f%% of a core), %s ms per accepted push\n",
		w.serverUsed.Seconds(), 100*w.serverUsed.Seconds()/window.Seconds(), ms(w.serverUsed/time.Duration(accepted)))
}
