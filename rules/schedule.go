package rules

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Schedule is a recurring time a rule acts: from each time its cron
// expression names, for For. Times are read in Loc.
type Schedule struct {
	// Cron is the 5-field expression as written: minute hour day-of-month
	// month day-of-week.
	Cron string
	// For is how long the rule acts after each time Cron names; more than
	// zero and at most MaxScheduleFor.
	For time.Duration
	// Loc is the zone the expression is read in; UTC unless the rule says.
	Loc  *time.Location
	spec cronSpec
}

// MaxScheduleFor bounds Schedule.For: a longer time would rather be a window.
const MaxScheduleFor = 7 * 24 * time.Hour

// Active reports whether t falls in one of the schedule's periods: some
// time the expression names is at or before t and less than For ago.
func (s *Schedule) Active(t time.Time) bool {
	start, ok := s.spec.prev(t.In(s.Loc), t.Add(-s.For))
	return ok && !start.After(t) && t.Sub(start) < s.For
}

// cronSpec is a parsed cron expression, each field a set of bits.
type cronSpec struct {
	minute uint64 // bits 0-59
	hour   uint64 // bits 0-23
	dom    uint64 // bits 1-31
	month  uint64 // bits 1-12
	dow    uint64 // bits 0-6, Sunday 0
	// domAny and dowAny are set when the field is "*": cron matches a day
	// by day of month OR day of week when both are restricted, else by
	// both.
	domAny, dowAny bool
}

var cronFields = [5]struct {
	name    string
	lo, hi  int
	names   []string // names for lo, lo+1, ... (month, day of week)
	example string
}{
	{name: "minute", lo: 0, hi: 59, example: "*/15"},
	{name: "hour", lo: 0, hi: 23, example: "9-17"},
	{name: "day of month", lo: 1, hi: 31, example: "1,15"},
	{name: "month", lo: 1, hi: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}, example: "jan-mar"},
	{name: "day of week", lo: 0, hi: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}, example: "mon-fri"},
}

// parseCron parses a 5-field cron expression: each field is *, N, N-M,
// either with /STEP, or a comma-separated list of those; months and days
// of the week may be named (jan, mon); day of week 7 is Sunday too.
func parseCron(s string) (cronSpec, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return cronSpec{}, fmt.Errorf("%q has %d fields, want 5: minute hour day-of-month month day-of-week (e.g. \"*/15 * * * *\")", s, len(f))
	}
	var c cronSpec
	sets := [5]*uint64{&c.minute, &c.hour, &c.dom, &c.month, &c.dow}
	for i, field := range f {
		set, err := parseCronField(field, i)
		if err != nil {
			fd := cronFields[i]
			return cronSpec{}, fmt.Errorf("%q: %s field %q: %v (want %d-%d, e.g. %s)", s, fd.name, field, err, fd.lo, fd.hi, fd.example)
		}
		*sets[i] = set
	}
	if c.dow&(1<<7) != 0 {
		c.dow = c.dow&^(1<<7) | 1
	}
	c.domAny, c.dowAny = f[2] == "*", f[4] == "*"
	return c, nil
}

func parseCronField(field string, i int) (uint64, error) {
	fd := cronFields[i]
	var set uint64
	for _, part := range strings.Split(field, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q is not a whole number of at least 1", stepText)
			}
			step = n
		}
		lo, hi := fd.lo, fd.hi
		if i == 4 {
			hi = 6 // "*" is Sunday to Saturday; 7 only when written
		}
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = cronValue(a, fd.names, fd.lo, fd.hi); err != nil {
				return 0, err
			}
			hi = lo
			if isRange {
				if hi, err = cronValue(b, fd.names, fd.lo, fd.hi); err != nil {
					return 0, err
				}
				if hi < lo {
					return 0, fmt.Errorf("range %s runs backwards", rng)
				}
			} else if hasStep {
				hi = fd.hi // N/STEP: from N to the end
				if i == 4 {
					hi = 6
				}
			}
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

func cronValue(s string, names []string, lo, hi int) (int, error) {
	for j, n := range names {
		if strings.EqualFold(s, n) {
			return lo + j, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%d is out of range", v)
	}
	return v, nil
}

// dayMatches reports whether the expression names the day.
func (c *cronSpec) dayMatches(t time.Time) bool {
	if c.month&(1<<t.Month()) == 0 {
		return false
	}
	dom, dow := c.dom&(1<<t.Day()) != 0, c.dow&(1<<t.Weekday()) != 0
	if c.domAny || c.dowAny {
		return dom && dow
	}
	return dom || dow
}

// highest returns the largest member of set that is at most x, or -1.
func highest(set uint64, x int) int {
	if x < 0 {
		return -1
	}
	return bits.Len64(set&(2<<x-1)) - 1
}

// prev returns the latest time the expression names at or before t (read
// in t's zone), looking back no further than the day of lo.
func (c *cronSpec) prev(t, lo time.Time) (time.Time, bool) {
	loc := t.Location()
	y, mo, d := t.Date()
	h, m := t.Hour(), t.Minute()
	// One step per day; lo is at most MaxScheduleFor before t.
	for range int(MaxScheduleFor/(24*time.Hour)) + 3 {
		day := time.Date(y, mo, d, 0, 0, 0, 0, loc)
		if day.AddDate(0, 0, 1).Before(lo) {
			return time.Time{}, false
		}
		if c.dayMatches(day) {
			if hh := highest(c.hour, h); hh == h {
				if mm := highest(c.minute, m); mm >= 0 {
					return time.Date(y, mo, d, hh, mm, 0, 0, loc), true
				}
				if hh = highest(c.hour, h-1); hh >= 0 {
					return time.Date(y, mo, d, hh, highest(c.minute, 59), 0, 0, loc), true
				}
			} else if hh >= 0 {
				return time.Date(y, mo, d, hh, highest(c.minute, 59), 0, 0, loc), true
			}
		}
		y, mo, d = day.AddDate(0, 0, -1).Date()
		h, m = 23, 59
	}
	return time.Time{}, false
}

// Window is a time a rule acts: between two instants, or between two
// times of day every day.
type Window struct {
	// From and Until bound an absolute window (RFC 3339); a zero value is
	// open on that side.
	From, Until time.Time
	// Daily windows hold FromDay and UntilDay, offsets from midnight in
	// Loc; a window with FromDay after UntilDay runs over midnight.
	Daily             bool
	FromDay, UntilDay time.Duration
	Loc               *time.Location
}

// Active reports whether t is inside the window: From <= t < Until.
func (w *Window) Active(t time.Time) bool {
	if !w.Daily {
		return (w.From.IsZero() || !t.Before(w.From)) && (w.Until.IsZero() || t.Before(w.Until))
	}
	l := t.In(w.Loc)
	h, m, s := l.Clock()
	tod := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second + time.Duration(l.Nanosecond())
	if w.FromDay <= w.UntilDay {
		return tod >= w.FromDay && tod < w.UntilDay
	}
	return tod >= w.FromDay || tod < w.UntilDay
}

func (w *Window) String() string {
	if w.Daily {
		return fmt.Sprintf("daily %s-%s %s", clockText(w.FromDay), clockText(w.UntilDay), w.Loc)
	}
	from, until := "", ""
	if !w.From.IsZero() {
		from = w.From.Format(time.RFC3339)
	}
	if !w.Until.IsZero() {
		until = w.Until.Format(time.RFC3339)
	}
	return fmt.Sprintf("%s..%s", from, until)
}

func clockText(d time.Duration) string {
	h, m, s := int(d/time.Hour), int(d/time.Minute%60), int(d/time.Second%60)
	if s != 0 {
		return fmt.Sprintf("%02d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%02d:%02d", h, m)
}

// parseTimeOfDay parses "09:00" or "09:00:30".
func parseTimeOfDay(s string) (time.Duration, bool) {
	for _, layout := range []string{"15:04", "15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second, true
		}
	}
	return 0, false
}
