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
