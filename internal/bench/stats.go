package bench

import (
	"slices"
	"time"
)

// Latency summarises a set of request latencies.
type Latency struct {
	N    int
	Mean time.Duration
	P50  time.Duration
	P99  time.Duration
	Max  time.Duration
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted, by the
// nearest-rank method: the smallest sample with at least p% of the samples
// at or below it. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Integer arithmetic on a permille rank avoids float rounding at the
	// boundaries (p=50 of 10 samples must be the 5th, not the 6th).
	permille := int64(p*10 + 0.5)
	rank := int((permille*int64(n) + 999) / 1000)
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// Summarize sorts samples in place and summarises them.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	return Latency{
		N:    len(samples),
		Mean: sum / time.Duration(len(samples)),
		P50:  Percentile(samples, 50),
		P99:  Percentile(samples, 99),
		Max:  samples[len(samples)-1],
	}
}
