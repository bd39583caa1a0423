package bench

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Binary size units.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first, so "KiB" is not read as "B".
	{"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", KiB}, {"M", MiB}, {"G", GiB},
	{"B", 1},
}

// ParseSize parses a byte count: a plain number, or a number with one of the
// suffixes B, KiB, MiB, GiB (binary; K, M, G mean the same) or KB, MB, GB
// (decimal). Fractions are allowed when the result is a whole number of
// bytes ("1.5KiB").
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit such as 4KiB or 8MiB", s)
	}
	v := f * float64(mult)
	if v <= 0 || v > float64(1<<50) || v != math.Trunc(v) {
		return 0, fmt.Errorf("size %q: want a positive whole number of bytes", s)
	}
	return int64(v), nil
}

// FormatSize prints n in the largest binary unit that divides it: 4KiB,
// 8MiB, 1500B.
func FormatSize(n int64) string {
	switch {
	case n >= GiB && n%GiB == 0:
		return fmt.Sprintf("%dGiB", n/GiB)
	case n >= MiB && n%MiB == 0:
		return fmt.Sprintf("%dMiB", n/MiB)
	case n >= KiB && n%KiB == 0:
		return fmt.Sprintf("%dKiB", n/KiB)
	}
	return fmt.Sprintf("%dB", n)
}

// ParseSizes parses a comma-separated list of sizes ("4KiB,1MiB").
func ParseSizes(list string) ([]int64, error) {
	var out []int64
	for _, f := range splitList(list) {
		n, err := ParseSize(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no sizes given")
	}
	return out, nil
}

// ParseCounts parses a comma-separated list of positive integers ("1,8").
func ParseCounts(list string) ([]int, error) {
	var out []int
	for _, f := range splitList(list) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("count %q: want a whole number from 1 to 4096", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no counts given")
	}
	return out, nil
}

// ParseFractions parses a comma-separated list of fractions from 0 to 1,
// each written as a number ("0.9") or a percentage ("90%").
func ParseFractions(list string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(list) {
		num, scale := f, 1.0
		if strings.HasSuffix(f, "%") {
			num, scale = strings.TrimSuffix(f, "%"), 100
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsNaN(v) || v/scale < 0 || v/scale > 1 {
			return nil, fmt.Errorf("fraction %q: want a number from 0 to 1, or a percentage", f)
		}
		out = append(out, v/scale)
	}
	if len(out) == 0 {
		return nil, errors.New("no fractions given")
	}
	return out, nil
}

func splitList(list string) []string {
	var out []string
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Percent formats value as a percentage of base, with two significant
// digits for small values: "83%", "4.2%", "0.37%". It returns "n/a" when
// either figure is missing (not positive and finite).
func Percent(value, base float64) string {
	r, ok := ratio(value, base)
	if !ok {
		return "n/a"
	}
	p := 100 * r
	switch {
	case p >= 10:
		return fmt.Sprintf("%.0f%%", p)
	case p >= 1:
		return fmt.Sprintf("%.1f%%", p)
	}
	return fmt.Sprintf("%.2f%%", p)
}

// Times formats value as a multiple of base: "12×", "3.4×", "0.52×"; "n/a"
// when either figure is missing.
func Times(value, base float64) string {
	r, ok := ratio(value, base)
	if !ok {
		return "n/a"
	}
	switch {
	case r >= 10:
		return fmt.Sprintf("%.0f×", r)
	case r >= 1:
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func ratio(value, base float64) (float64, bool) {
	if !(base > 0) || !(value >= 0) || math.IsInf(base, 0) || math.IsInf(value, 0) {
		return 0, false
	}
	return value / base, true
}

// Fraction formats a fraction from 0 to 1 as a percentage: "0%", "90%",
// "33.3%".
func Fraction(f float64) string { return fmt.Sprintf("%.3g%%", 100*f) }

// Rate formats a per-second figure: thousands separated above 100, one
// decimal below: "12,345", "42.5"; "n/a" if it is not a finite number ≥ 0.
func Rate(v float64) string {
	if !(v >= 0) || math.IsInf(v, 0) {
		return "n/a"
	}
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// MBps formats bytes per second as decimal megabytes per second.
func MBps(bytesPerSec float64) string { return Rate(bytesPerSec / 1e6) }

// Millis formats a latency in milliseconds with about three significant
// digits: "0.412", "12.3", "1,234".
func Millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 1:
		return fmt.Sprintf("%.3f", ms)
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	}
	return Rate(ms)
}

// MiBs formats a byte count in MiB: "123.4 MiB".
func MiBs(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/float64(MiB)) }
