package bench

import (
	"encoding/binary"
	"os"
	"testing"
	"time"
)

func TestParseAuxv(t *testing.T) {
	t.Parallel()
	words := []uint64{6, 4096, atClkTck, 250, 0, 0, atClkTck, 999}
	b := make([]byte, 8*len(words))
	for i, w := range words {
		binary.NativeEndian.PutUint64(b[8*i:], w)
	}
	if v, ok := parseAuxv(b, atClkTck); !ok || v != 250 {
		t.Errorf("parseAuxv(AT_CLKTCK) = %d, %v; want 250", v, ok)
	}
	if _, ok := parseAuxv(b, 99); ok {
		t.Error("parseAuxv found a key that is not there (or read past AT_NULL)")
	}
	if _, ok := parseAuxv(b[:12], 6); ok {
		t.Error("parseAuxv read a truncated pair")
	}
}

func TestClockTicksMatchesLinux(t *testing.T) {
	t.Parallel()
	// Every Linux architecture Go runs on reports USER_HZ = 100.
	if got := ClockTicks(); got != 100 {
		t.Errorf("ClockTicks() = %d, want 100", got)
	}
}

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// The command name holds a space and a ')' to prove fields are counted
	// from the last one.
	line := "4242 (vault) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 100 123456 789 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 187 {
		t.Errorf("parseStatCPU = %d, %v; want 150+37 = 187", got, err)
	}
	for _, bad := range []string{"", "4242 vault S 1", "4242 (vault) S 1 2 3"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q): want an error", bad)
		}
	}
}

func TestParseStatusBytes(t *testing.T) {
	t.Parallel()
	status := "Name:\tvault\nVmPeak:\t  900000 kB\nVmHWM:\t   65536 kB\nVmRSS:\t   32768 kB\n"
	if got, err := parseStatusBytes([]byte(status), "VmRSS"); err != nil || got != 32<<20 {
		t.Errorf("VmRSS = %d, %v; want 32 MiB", got, err)
	}
	if got, err := parseStatusBytes([]byte(status), "VmHWM"); err != nil || got != 64<<20 {
		t.Errorf("VmHWM = %d, %v; want 64 MiB", got, err)
	}
	if _, err := parseStatusBytes([]byte(status), "VmSwap"); err == nil {
		t.Error("a missing key: want an error")
	}
	if _, err := parseStatusBytes([]byte("VmRSS: 12 MB\n"), "VmRSS"); err == nil {
		t.Error("an unknown unit: want an error")
	}
}

func TestWatchProcSelf(t *testing.T) {
	t.Parallel()
	w, err := watchProc(os.Getpid(), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU so the delta is visible at 10 ms resolution.
	deadline := time.Now().Add(60 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	u, err := w.finish()
	if err != nil {
		t.Fatal(err)
	}
	if u.PeakRSS <= 0 || u.HWM < u.PeakRSS || u.CPU <= 0 {
		t.Errorf("usage of this process = %+v, want RSS > 0, HWM ≥ RSS, CPU > 0 (x=%d)", u, x)
	}
}
