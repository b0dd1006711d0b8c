package rules

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is an engine clock a test moves by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func mustTime(s string) time.Time        { t, err := time.Parse(time.RFC3339, s); must(err); return t }
func must(err error) {
	if err != nil {
		panic(err)
	}
}
func dnsFlow(host string) Flow { return Flow{Layer: LayerDNS, Host: host} }
func httpFlow(host string) Flow {
	return Flow{Layer: LayerHTTP, Host: host, Port: 443, Proto: ProtoTCP}
}

// modEngine loads one scenario file text, switched on at start (a fake
// clock's time), with seed.
func modEngine(t *testing.T, text string, seed uint64, start time.Time) (*Engine, *fakeClock) {
	t.Helper()
	set := switchSet(t, "m.yaml", text)
	clk := newFakeClock(start)
	e, err := NewEngine(set, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.SetClock(clk.now)
	e.SetSeed(seed)
	for _, name := range set.Defaults() {
		if err := e.Switch(name, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	return e, clk
}

var t0 = mustTime("2026-04-01T09:00:00Z")

// outcomes decides n DNS flows for host and returns each action's first letter.
func outcomes(e *Engine, host string, n int) string {
	var b strings.Builder
	for range n {
		b.WriteString(e.Decide(dnsFlow(host)).Action.String()[:1])
	}
	return b.String()
}

const probRules = `scenario: p
rules:
  - {domains: [flaky.example], action: reject, probability: 0.3}
  - {domains: [other.example], action: reject, probability: 0.5}
`

func TestProbabilitySameSeedSameOutcomes(t *testing.T) {
	run := func(seed uint64, interleave bool) string {
		e, _ := modEngine(t, probRules, seed, t0)
		var b strings.Builder
		for i := range 1000 {
			if interleave && i%3 == 0 {
				e.Decide(dnsFlow("other.example")) // another rule's traffic draws nothing from this one
			}
			b.WriteString(e.Decide(dnsFlow("flaky.example")).Action.String()[:1])
		}
		return b.String()
	}
	a, b := run(42, false), run(42, true)
	if a != b {
		t.Errorf("seed 42 gave two sequences:\n%s\n%s", a, b)
	}
	if c := run(43, false); c == a {
		t.Errorf("seeds 42 and 43 gave the same 1,000 outcomes")
	}
	if n := strings.Count(a, "r"); n < 200 || n > 400 {
		t.Errorf("%d of 1000 rejected with probability 0.3", n)
	}
	// Runs of rejections look random: not all at the start.
	if strings.HasPrefix(a, strings.Repeat("r", 50)) || !strings.Contains(a[500:], "r") {
		t.Errorf("rejections bunched: %s", a)
	}
}

func TestProbabilityBinomial(t *testing.T) {
	e, _ := modEngine(t, probRules, 7, t0)
	const n, p = 10_000, 0.3
	got := strings.Count(outcomes(e, "flaky.example", n), "r")
	// Five standard deviations: a correct draw fails once in 3.5 million runs.
	sd := math.Sqrt(n * p * (1 - p))
	if lo, hi := n*p-5*sd, n*p+5*sd; float64(got) < lo || float64(got) > hi {
		t.Errorf("probability 0.3 rejected %d of %d flows, want %.0f-%.0f", got, n, lo, hi)
	}
	for _, seed := range []uint64{1, 2, 3} {
		e.SetSeed(seed)
		if got := strings.Count(outcomes(e, "flaky.example", n), "r"); math.Abs(float64(got)-n*p) > 5*sd {
			t.Errorf("seed %d: %d of %d", seed, got, n)
		}
	}
}

const countRules = `scenario: c
rules:
  - {domains: [first.example], action: reject, first: 2}
  - {domains: [every.example], action: reject, every: 3}
  - {domains: [both.example], action: reject, first: 10, every: 4}
  - {domains: [first.example, every.example], action: sinkhole}
  - {domains: [web.example], action: http_error, status: 503, first: 1}
  - {domains: [web.example], action: reject}
`

func TestFirstAndEvery(t *testing.T) {
	e, _ := modEngine(t, countRules, 1, t0)
	// A flow the rule passes goes on to later rules: the sinkhole.
	if got := outcomes(e, "first.example", 5); got != "rrsss" {
		t.Errorf("first: 2 gave %s, want rrsss", got)
	}
	if got := outcomes(e, "every.example", 9); got != "ssrssrssr" {
		t.Errorf("every: 3 gave %s, want ssrssrssr", got)
	}
	if got := outcomes(e, "both.example", 16); got != "aaaraaaraaaaaaaa" {
		t.Errorf("first: 10, every: 4 gave %s, want the 4th and 8th only", got)
	}
}

func TestCountOnlyWhereTheActionApplies(t *testing.T) {
	e, _ := modEngine(t, countRules, 1, t0)
	// At DNS the http_error rule wins and lets the question through,
	// counting nothing; the first request then gets the error.
	for range 3 {
		if d := e.Decide(dnsFlow("web.example")); d.Action != ActionAllow || d.Rule == nil || d.Rule.Index != 4 {
			t.Fatalf("DNS: %v, want a pass by rules[4]", d)
		}
	}
	// Peek consumes nothing either.
	for range 3 {
		if d := e.Peek(httpFlow("web.example")); d.Action != ActionHTTPError {
			t.Fatalf("peek: %v, want http_error (the next flow's answer)", d)
		}
	}
	if d := e.Decide(httpFlow("web.example")); d.Action != ActionHTTPError {
		t.Fatalf("first request: %v, want http_error", d)
	}
	if d := e.Decide(httpFlow("web.example")); d.Action != ActionReject || d.Rule.Index != 5 {
		t.Fatalf("second request: %v, want reject by rules[5]", d)
	}
	if d := e.Peek(httpFlow("web.example")); d.Action != ActionReject {
		t.Fatalf("peek after: %v, want reject", d)
	}
}

func TestFirstAndEveryConcurrent(t *testing.T) {
	text := `scenario: c
rules:
  - {domains: [first.example], action: reject, first: 100}
  - {domains: [every.example], action: reject, every: 7}
`
	e, _ := modEngine(t, text, 1, t0)
	const workers, per = 8, 1000
	var first, every atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if e.Decide(dnsFlow("first.example")).Action == ActionReject {
					first.Add(1)
				}
				if e.Decide(dnsFlow("every.example")).Action == ActionReject {
					every.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if first.Load() != 100 {
		t.Errorf("first: 100 over %d flows from %d goroutines acted %d times", workers*per, workers, first.Load())
	}
	if want := int64(workers * per / 7); every.Load() != want {
		t.Errorf("every: 7 over %d flows acted %d times, want %d", workers*per, every.Load(), want)
	}
}

func TestSwitchRestartsCounts(t *testing.T) {
	e, _ := modEngine(t, countRules, 1, t0)
	outcomes(e, "first.example", 3)
	if err := e.Switch("c", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Switch("c", true, nil); err != nil {
		t.Fatal(err)
	}
	if got := outcomes(e, "first.example", 3); got != "rrs" {
		t.Errorf("after switching on again: %s, want rrs", got)
	}
}

const phaseRules = `scenario: ph
rules:
  - domains: [wallet.example]
    phases:
      - {for: 10m, action: delay, latency: 10s}
      - {for: 30m, action: reject, rcode: servfail}
      - {action: allow}
  - domains: [short.example]
    phases: [{for: 1m, action: blackhole}]
  - {domains: [wallet.example, short.example], action: sinkhole}
`

func TestPhases(t *testing.T) {
	e, clk := modEngine(t, phaseRules, 1, t0)
	check := func(at time.Duration, host string, want Action, wantRule int) *Params {
		t.Helper()
		clk.set(t0.Add(at))
		d := e.Decide(dnsFlow(host))
		if d.Action != want || d.Rule == nil || d.Rule.Index != wantRule {
			t.Fatalf("%s at +%v: %v, want %v by rules[%d]", host, at, d, want, wantRule)
		}
		return d.Params()
	}
	if p := check(0, "wallet.example", ActionDelay, 0); p.Latency != 10*time.Second {
		t.Errorf("phase 1 params: latency %v, want 10s", p.Latency)
	}
	check(10*time.Minute-time.Nanosecond, "wallet.example", ActionDelay, 0)
	if p := check(10*time.Minute, "wallet.example", ActionReject, 0); p.RCode != RCodeServFail || p.TTL != DefaultBlockTTL {
		t.Errorf("phase 2 params: %v %v, want servfail with the default TTL", p.RCode, p.TTL)
	}
	check(39*time.Minute, "wallet.example", ActionReject, 0)
	check(40*time.Minute, "wallet.example", ActionAllow, 0)
	check(1000*time.Hour, "wallet.example", ActionAllow, 0)
	// A last phase with for: ends: the rule no longer acts and the next one does.
	check(40*time.Minute, "short.example", ActionSinkhole, 2)
	if !strings.Contains(e.RuleState(e.Set().Scenarios[0].Rules[0]), "phase 3 of 3 (allow)") {
		t.Errorf("RuleState = %q", e.RuleState(e.Set().Scenarios[0].Rules[0]))
	}

	// Phases count from the switch: switching on again starts over.
	if err := e.Switch("ph", true, nil); err != nil {
		t.Fatal(err)
	}
	check(40*time.Minute+5*time.Minute, "wallet.example", ActionDelay, 0)
	check(40*time.Minute+30*time.Second, "short.example", ActionBlackhole, 1)
	if s := e.RuleState(e.Set().Scenarios[0].Rules[0]); !strings.Contains(s, "phase 1 of 3 (delay) until 10m0s after the switch") {
		t.Errorf("RuleState = %q", s)
	}
}

func TestScheduleAcrossADay(t *testing.T) {
	text := `scenario: s
rules:
  - {domains: [flap.example], action: reject, schedule: {cron: "*/15 * * * *", for: 5m}}
  - {domains: [office.example], action: reject, schedule: {cron: "0 9 * * mon-fri", for: 8h, zone: Europe/Berlin}}
`
	e, clk := modEngine(t, text, 1, t0)
	day := mustTime("2026-04-01T00:00:00Z") // a Wednesday
	on := 0
	for m := range 24 * 60 {
		for _, sec := range []int{0, 59} {
			clk.set(day.Add(time.Duration(m)*time.Minute + time.Duration(sec)*time.Second))
			got := e.Decide(dnsFlow("flap.example")).Action == ActionReject
			if want := m%15 < 5; got != want {
				t.Fatalf("flap at %s: reject %v, want %v", clk.now().Format("15:04:05"), got, want)
			}
			if got && sec == 0 {
				on++
			}
		}
	}
	if on != 24*4*5 {
		t.Errorf("on for %d minutes of the day, want %d", on, 24*4*5)
	}
	// 09:00-17:00 in Berlin, summer time (UTC+2): 07:00-15:00 UTC, weekdays.
	for _, c := range []struct {
		at   string
		want bool
	}{
		{"2026-04-01T06:59:59Z", false}, {"2026-04-01T07:00:00Z", true}, {"2026-04-01T14:59:59Z", true},
		{"2026-04-01T15:00:00Z", false}, {"2026-04-04T08:00:00Z", false}, // Saturday
		{"2026-04-06T07:30:00Z", true}, // Monday
	} {
		clk.set(mustTime(c.at))
		if got := e.Decide(dnsFlow("office.example")).Action == ActionReject; got != c.want {
			t.Errorf("office at %s: reject %v, want %v", c.at, got, c.want)
		}
	}
}

func TestCronParse(t *testing.T) {
	for _, c := range []struct {
		expr, err string
		at        string // a time the expression names
		notAt     string
	}{
		{expr: "*/15 * * * *", at: "2026-04-01T10:45:00Z", notAt: "2026-04-01T10:46:00Z"},
		{expr: "30 2 1 jan,jul *", at: "2026-07-01T02:30:00Z", notAt: "2026-06-01T02:30:00Z"},
		{expr: "0 0 13 * fri", at: "2026-03-13T00:00:00Z", notAt: "2026-03-07T00:00:00Z"}, // a Saturday, the 7th
		{expr: "0 0 * * 7", at: "2026-04-05T00:00:00Z", notAt: "2026-04-06T00:00:00Z"},    // 7 is Sunday
		{expr: "5-10/5 1 * * *", at: "2026-04-01T01:10:00Z", notAt: "2026-04-01T01:07:00Z"},
		{expr: "* * *", err: "has 3 fields, want 5"},
		{expr: "60 * * * *", err: `minute field "60": 60 is out of range (want 0-59`},
		{expr: "* 24 * * *", err: `hour field "24": 24 is out of range (want 0-23`},
		{expr: "* * 0 * *", err: `day of month field "0"`},
		{expr: "* * * 13 *", err: `month field "13"`},
		{expr: "* * * * 8", err: `day of week field "8"`},
		{expr: "*/0 * * * *", err: `step "0" is not a whole number`},
		{expr: "10-5 * * * *", err: "range 10-5 runs backwards"},
		{expr: "x * * * *", err: `"x" is not a number`},
	} {
		spec, err := parseCron(c.expr)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.expr, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		at := mustTime(c.at)
		if got, ok := spec.prev(at, at.Add(-time.Hour)); !ok || !got.Equal(at) {
			t.Errorf("%q: prev(%s) = %v %v, want itself", c.expr, c.at, got, ok)
		}
		not := mustTime(c.notAt)
		if got, ok := spec.prev(not, not.Add(-time.Second)); ok && got.Equal(not) {
			t.Errorf("%q names %s", c.expr, c.notAt)
		}
	}
	// Day of month OR day of week when both are given: the 13th, whatever the day.
	spec, _ := parseCron("0 0 13 * fri")
	if at := mustTime("2026-04-13T00:00:00Z"); !spec.dayMatches(at) {
		t.Errorf("0 0 13 * fri misses Monday the 13th")
	}
}

func TestWindowEdges(t *testing.T) {
	text := `scenario: w
rules:
  - {domains: [abs.example], action: reject, window: {from: "2026-04-01T09:00:00Z", until: "2026-04-02T09:00:00Z"}}
  - {domains: [open.example], action: reject, window: {from: 2026-04-01T10:00:00+02:00}}
  - {domains: [night.example], action: reject, window: {from: "22:00", until: "06:00"}}
  - {domains: [berlin.example], action: reject, window: {from: "09:00", until: "17:00", zone: Europe/Berlin}}
  - {domains: [abs.example, open.example, night.example, berlin.example], action: sinkhole}
`
	e, clk := modEngine(t, text, 1, t0)
	for _, c := range []struct {
		host, at string
		want     Action
	}{
		{"abs.example", "2026-04-01T08:59:59.999Z", ActionSinkhole},
		{"abs.example", "2026-04-01T09:00:00Z", ActionReject}, // from is inside
		{"abs.example", "2026-04-02T08:59:59.999Z", ActionReject},
		{"abs.example", "2026-04-02T09:00:00Z", ActionSinkhole}, // until is outside
		{"open.example", "2026-04-01T07:59:59Z", ActionSinkhole},
		{"open.example", "2026-04-01T08:00:00Z", ActionReject},
		{"open.example", "2030-01-01T00:00:00Z", ActionReject},
		{"night.example", "2026-04-01T21:59:59Z", ActionSinkhole},
		{"night.example", "2026-04-01T22:00:00Z", ActionReject},
		{"night.example", "2026-04-02T05:59:59Z", ActionReject},
		{"night.example", "2026-04-02T06:00:00Z", ActionSinkhole},
		{"night.example", "2026-04-02T12:00:00Z", ActionSinkhole},
		{"berlin.example", "2026-04-01T06:59:00Z", ActionSinkhole}, // 08:59 in Berlin
		{"berlin.example", "2026-04-01T07:00:00Z", ActionReject},
		{"berlin.example", "2026-01-15T07:30:00Z", ActionSinkhole}, // 08:30, winter time
		{"berlin.example", "2026-01-15T08:00:00Z", ActionReject},
	} {
		clk.set(mustTime(c.at))
		if d := e.Decide(dnsFlow(c.host)); d.Action != c.want {
			t.Errorf("%s at %s: %v, want %v", c.host, c.at, d, c.want)
		}
	}
}

func TestJitterSeeded(t *testing.T) {
	text := `scenario: j
rules:
  - {domains: [slow.example], action: delay, latency: 1s, jitter: 500ms}
`
	run := func(seed uint64) []time.Duration {
		e, _ := modEngine(t, text, seed, t0)
		var out []time.Duration
		for range 100 {
			out = append(out, e.Decide(dnsFlow("slow.example")).Params().Delay())
		}
		return out
	}
	a, b, c := run(5), run(5), run(6)
	if !slices.Equal(a, b) {
		t.Errorf("seed 5 gave two jitter sequences")
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 5 and 6 gave the same jitter")
	}
	lo, hi := slices.Min(a), slices.Max(a)
	if lo < 500*time.Millisecond || hi > 1500*time.Millisecond || hi-lo < 500*time.Millisecond {
		t.Errorf("delays from %v to %v, want spread over 500ms-1.5s", lo, hi)
	}
}

func TestDecideWithModifiersAllocatesNothing(t *testing.T) {
	text := `scenario: a
rules:
  - {domains: [p.example], action: reject, probability: 0.5}
  - {domains: [f.example], action: reject, first: 3}
  - {domains: [w.example], action: reject, window: {from: "09:00", until: "17:00"}, schedule: {cron: "*/5 * * * *", for: 1m}}
  - domains: [ph.example]
    phases: [{for: 10m, action: delay, latency: 1s}, {action: reject}]
  - {action: sinkhole}
`
	e, _ := modEngine(t, text, 1, t0)
	for _, h := range []string{"p.example", "f.example", "w.example", "ph.example"} {
		f := dnsFlow(h)
		if n := testing.AllocsPerRun(200, func() { e.Decide(f) }); n != 0 {
			t.Errorf("%s: %v allocations per Decide", h, n)
		}
	}
}

func TestModifiersObserved(t *testing.T) {
	e, _ := modEngine(t, countRules, 1, t0)
	var got []string
	e.SetObserver(func(ev Event) { got = append(got, fmt.Sprintf("%s/%d", ev.Decision.Action, ev.Decision.Rule.Index)) })
	outcomes(e, "first.example", 3)
	if want := []string{"reject/0", "reject/0", "sinkhole/3"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	hits := e.Hits()
	if hits[0].Hits != 2 || hits[3].Hits != 1 {
		t.Errorf("hits %d and %d, want 2 and 1", hits[0].Hits, hits[3].Hits)
	}
}

func TestNeedsContentPastCountModifiers(t *testing.T) {
	text := `scenario: n
rules:
  - {hosts: [api.example], action: reject, probability: 0.5}
  - {hosts: [api.example], action: http_error, status: 429}
  - {hosts: [plain.example], action: reject, window: {from: "2020-01-01T00:00:00Z", until: "2020-01-02T00:00:00Z"}}
  - {hosts: [plain.example], action: reject}
  - hosts: [later.example]
    phases: [{for: 10m, action: reject}, {action: http_error, status: 503}]
`
	e, clk := modEngine(t, text, 1, t0)
	connect := func(h string) Flow { return Flow{Layer: LayerHTTP, Host: h, Port: 443, Proto: ProtoTCP} }
	// The reject rule passes half the tunnels on: the http_error rule needs their requests.
	if !e.NeedsContent(connect("api.example")) {
		t.Errorf("api.example: a probability: rule before an http_error rule decides nothing outright")
	}
	if e.NeedsContent(connect("plain.example")) {
		t.Errorf("plain.example needs no content")
	}
	if e.NeedsContent(connect("later.example")) {
		t.Errorf("later.example in its reject phase: the tunnel is refused, no content needed")
	}
	clk.add(10 * time.Minute)
	if !e.NeedsContent(connect("later.example")) {
		t.Errorf("later.example in its http_error phase needs the requests")
	}
}
