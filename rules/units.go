package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseDuration parses a Go duration and says what would be valid.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (want e.g. 150ms, 2s, 1m30s)", s)
	}
	return d, nil
}

// byteUnits are multipliers for sizes ("1MB", "64KiB") and, divided by 8 for
// bits, rates ("64kbit").
var byteUnits = []struct {
	suffix string
	mul    float64
}{
	{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8},
	{"gib", 1 << 30}, {"mib", 1 << 20}, {"kib", 1 << 10},
	{"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3}, {"b", 1},
}

// parseBytes parses "512", "10KiB", "1MB"; allowBits also accepts "64kbit".
// A rate may end in "/s" or "ps".
func parseBytes(s string, allowBits bool) (int64, error) {
	want := "a size (want e.g. 512, 10KiB, 1MB)"
	if allowBits {
		want = "a rate (want e.g. 64kbit, 1mbit, 100KB/s)"
	}
	t := strings.ToLower(strings.TrimSpace(s))
	if allowBits {
		t = strings.TrimSuffix(strings.TrimSuffix(t, "/s"), "ps")
	}
	mul := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			if strings.HasSuffix(u.suffix, "bit") && !allowBits {
				break
			}
			mul, t = u.mul, strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 || f*mul < 1 || f*mul > 1<<62 {
		return 0, fmt.Errorf("%q is not %s", s, want)
	}
	return int64(f * mul), nil
}
