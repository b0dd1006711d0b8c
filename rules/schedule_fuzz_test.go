package rules

import (
	"testing"
	"time"
)

// FuzzCron: parsing never panics, and for an expression that parses, the
// time prev finds is named by the expression, at or before t, and no
// earlier than the day of the bound.
func FuzzCron(f *testing.F) {
	for _, s := range []string{"*/15 * * * *", "0 9 * * mon-fri", "30 2 1 jan,jul *", "5-10/5 1 13 * 7", "* * * *", "60 * * * *"} {
		f.Add(s, int64(1775034000))
	}
	f.Fuzz(func(t *testing.T, expr string, unix int64) {
		spec, err := parseCron(expr)
		if err != nil {
			return
		}
		at := time.Unix(unix%(1<<34), 0).UTC()
		lo := at.Add(-MaxScheduleFor)
		got, ok := spec.prev(at, lo)
		if !ok {
			return
		}
		if got.After(at) || got.Before(lo.Truncate(24*time.Hour).Add(-24*time.Hour)) {
			t.Fatalf("%q: prev(%v) = %v, outside [%v, %v]", expr, at, got, lo, at)
		}
		if got.Second() != 0 || spec.minute&(1<<got.Minute()) == 0 || spec.hour&(1<<got.Hour()) == 0 || !spec.dayMatches(got) {
			t.Fatalf("%q: prev(%v) = %v, which it does not name", expr, at, got)
		}
	})
}
