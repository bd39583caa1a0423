package bench

import (
	"math"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "4096", want: 4096},
		{in: "4KiB", want: 4 << 10},
		{in: "64KiB", want: 64 << 10},
		{in: "1MiB", want: 1 << 20},
		{in: " 8MiB ", want: 8 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "4K", want: 4 << 10},
		{in: "2M", want: 2 << 20},
		{in: "1KB", want: 1000},
		{in: "1.5KiB", want: 1536},
		{in: "512B", want: 512},
		{in: "", wantErr: true},
		{in: "KiB", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-4KiB", wantErr: true},
		{in: "1.3B", wantErr: true},
		{in: "4 parsecs", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   int64
		want string
	}{
		{4 << 10, "4KiB"}, {64 << 10, "64KiB"}, {1 << 20, "1MiB"}, {8 << 20, "8MiB"},
		{3 << 30, "3GiB"}, {1536, "1536B"}, {1500, "1500B"}, {1536 << 10, "1536KiB"},
	}
	for _, tt := range tests {
		got := FormatSize(tt.in)
		if got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := ParseSize(got); err != nil || back != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func TestParseLists(t *testing.T) {
	t.Parallel()
	sizes, err := ParseSizes("4KiB, 64KiB,1MiB,8MiB")
	if err != nil || len(sizes) != 4 || sizes[0] != 4<<10 || sizes[3] != 8<<20 {
		t.Errorf("ParseSizes = %v, %v", sizes, err)
	}
	if _, err := ParseSizes(" , "); err == nil {
		t.Error("ParseSizes of an empty list: want an error")
	}
	counts, err := ParseCounts("1,8")
	if err != nil || len(counts) != 2 || counts[1] != 8 {
		t.Errorf("ParseCounts = %v, %v", counts, err)
	}
	for _, bad := range []string{"0", "-1", "x", "1.5", "", "99999"} {
		if _, err := ParseCounts(bad); err == nil {
			t.Errorf("ParseCounts(%q): want an error", bad)
		}
	}
	fr, err := ParseFractions("0, 0.9, 50%, 1")
	if err != nil || len(fr) != 4 || fr[1] != 0.9 || fr[2] != 0.5 || fr[3] != 1 {
		t.Errorf("ParseFractions = %v, %v", fr, err)
	}
	for _, bad := range []string{"1.1", "-0.1", "110%", "NaN", "x", ""} {
		if _, err := ParseFractions(bad); err == nil {
			t.Errorf("ParseFractions(%q): want an error", bad)
		}
	}
}

func TestParseCell(t *testing.T) {
	t.Parallel()
	c, err := ParseCell("1MiB/8/90%")
	if err != nil || c.Size != 1<<20 || c.Agents != 8 || c.Dedup != 0.9 {
		t.Errorf("ParseCell = %+v, %v", c, err)
	}
	if got := c.String(); got != "1MiB/8/0.9" {
		t.Errorf("String() = %q, want 1MiB/8/0.9", got)
	}
	for _, bad := range []string{"1MiB/8", "1MiB/0/0", "big/8/0", "1MiB/8/2", "1MiB/8/0/1"} {
		if _, err := ParseCell(bad); err == nil {
			t.Errorf("ParseCell(%q): want an error", bad)
		}
	}
}

func TestRatioFormatting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    func(v, b float64) string
		v, b float64
		want string
	}{
		{"percent whole", Percent, 83, 100, "83%"},
		{"percent rounds", Percent, 2, 3, "67%"},
		{"percent over", Percent, 250, 100, "250%"},
		{"percent small", Percent, 42, 1000, "4.2%"},
		{"percent tiny", Percent, 37, 10000, "0.37%"},
		{"percent zero value", Percent, 0, 5, "0.00%"},
		{"percent zero base", Percent, 5, 0, "n/a"},
		{"percent negative base", Percent, 5, -1, "n/a"},
		{"percent NaN", Percent, math.NaN(), 1, "n/a"},
		{"percent Inf base", Percent, 1, math.Inf(1), "n/a"},
		{"times large", Times, 123, 10, "12×"},
		{"times mid", Times, 34, 10, "3.4×"},
		{"times small", Times, 52, 100, "0.52×"},
		{"times no base", Times, 52, 0, "n/a"},
	}
	for _, tt := range tests {
		if got := tt.f(tt.v, tt.b); got != tt.want {
			t.Errorf("%s: (%v, %v) = %q, want %q", tt.name, tt.v, tt.b, got, tt.want)
		}
	}
}

func TestNumberFormatting(t *testing.T) {
	t.Parallel()
	rates := map[float64]string{0: "0.0", 42.46: "42.5", 99.9: "99.9", 100: "100", 1234.4: "1,234",
		123456: "123,456", 1234567: "1,234,567", -1: "n/a", math.NaN(): "n/a", math.Inf(1): "n/a"}
	for in, want := range rates {
		if got := Rate(in); got != want {
			t.Errorf("Rate(%v) = %q, want %q", in, got, want)
		}
	}
	if got := MBps(123.4e6); got != "123" {
		t.Errorf("MBps(123.4e6) = %q, want 123", got)
	}
	millis := map[time.Duration]string{412 * time.Microsecond: "0.412", 2490 * time.Microsecond: "2.49",
		12340 * time.Microsecond: "12.3", 1234 * time.Millisecond: "1,234"}
	for in, want := range millis {
		if got := Millis(in); got != want {
			t.Errorf("Millis(%v) = %q, want %q", in, got, want)
		}
	}
	fractions := map[float64]string{0: "0%", 0.9: "90%", 1: "100%", 1.0 / 3: "33.3%", 0.125: "12.5%"}
	for in, want := range fractions {
		if got := Fraction(in); got != want {
			t.Errorf("Fraction(%v) = %q, want %q", in, got, want)
		}
	}
	if got := MiBs(256 << 20); got != "256.0 MiB" {
		t.Errorf("MiBs(256 MiB) = %q", got)
	}
}
