package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// atClkTck is the auxiliary-vector key of the kernel's clock-tick rate
// (sysconf(_SC_CLK_TCK)), the unit of utime and stime in /proc/PID/stat.
const atClkTck = 17

// ClockTicks returns the rate of the clock ticks in /proc/PID/stat, read
// from this process's auxiliary vector, which is where sysconf(_SC_CLK_TCK)
// reads it too. It falls back to 100, the value on every Linux
// architecture Go supports, if the vector cannot be read.
func ClockTicks() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	if v, ok := parseAuxv(b, atClkTck); ok && v > 0 {
		return int64(v)
	}
	return 100
}

// parseAuxv finds key in a 64-bit auxiliary vector (pairs of native-endian
// uint64 words, ended by key 0).
func parseAuxv(b []byte, key uint64) (uint64, bool) {
	for i := 0; i+16 <= len(b); i += 16 {
		k := binary.NativeEndian.Uint64(b[i:])
		v := binary.NativeEndian.Uint64(b[i+8:])
		if k == 0 {
			break
		}
		if k == key {
			return v, true
		}
	}
	return 0, false
}

// parseStatCPU returns utime+stime, in clock ticks, from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	// After ")" come field 3 (state) onwards; utime and stime are fields 14
	// and 15, so indexes 11 and 12 here.
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return ut + st, nil
}

// parseStatusBytes returns a "Key:   123 kB" line of /proc/PID/status in
// bytes.
func parseStatusBytes(b []byte, key string) (int64, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte(key+":"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("proc status: malformed %s line %q", key, bytes.TrimSpace(line))
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc status: %s: %w", key, err)
		}
		return n * 1024, nil
	}
	return 0, fmt.Errorf("proc status: no %s line", key)
}

func readStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusBytes(b, key)
}

func readCPU(pid int, ticks int64) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	t, err := parseStatCPU(b)
	if err != nil {
		return 0, err
	}
	return time.Duration(t) * time.Second / time.Duration(ticks), nil
}

// procWatch samples another process's resident set while a measurement
// runs and takes its CPU time at both ends.
type procWatch struct {
	pid   int
	ticks int64
	cpu0  time.Duration
	stop  chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	peak int64
	err  error
}

// watchProc starts sampling pid's VmRSS every interval.
func watchProc(pid int, interval time.Duration) (*procWatch, error) {
	w := &procWatch{pid: pid, ticks: ClockTicks(), stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	if w.cpu0, err = readCPU(pid, w.ticks); err != nil {
		return nil, fmt.Errorf("bench: watch process %d: %w", pid, err)
	}
	w.sample()
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w, nil
}

func (w *procWatch) sample() {
	rss, err := readStatus(w.pid, "VmRSS")
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.err = firstErr(w.err, err)
		return
	}
	w.peak = max(w.peak, rss)
}

// finish stops sampling and returns what the process used since watchProc.
func (w *procWatch) finish() (ProcUsage, error) {
	w.sample() // the end state counts too
	close(w.stop)
	<-w.done
	cpu1, err := readCPU(w.pid, w.ticks)
	if err != nil {
		return ProcUsage{}, fmt.Errorf("bench: watch process %d: %w", w.pid, err)
	}
	hwm, err := readStatus(w.pid, "VmHWM")
	if err != nil {
		return ProcUsage{}, fmt.Errorf("bench: watch process %d: %w", w.pid, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return ProcUsage{}, fmt.Errorf("bench: watch process %d: %w", w.pid, w.err)
	}
	return ProcUsage{PeakRSS: w.peak, HWM: hwm, CPU: cpu1 - w.cpu0}, nil
}

func firstErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
