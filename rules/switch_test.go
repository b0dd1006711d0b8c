package rules

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"
)

const (
	outageRules = `scenario: outage
description: wallet down
rules:
  - {domains: [wallet.example], action: reject}
`
	slowRules = `scenario: slow
optional: true
rules:
  - {domains: [wallet.example, slow.example], action: delay, latency: 2s}
  - {domains: [page.example], methods: [POST], action: http_error, status: 503}
`
)

// switchSet loads the files, as name, text pairs, in that order.
func switchSet(t *testing.T, files ...string) *Set {
	t.Helper()
	fsys := fstest.MapFS{}
	var names []string
	for i := 0; i+1 < len(files); i += 2 {
		fsys[files[i]] = &fstest.MapFile{Data: []byte(files[i+1])}
		names = append(names, files[i])
	}
	set, err := LoadFS(fsys, names...)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func switchEngine(t *testing.T) *Engine {
	t.Helper()
	set := switchSet(t, "a.yaml", outageRules, "b.yaml", slowRules)
	e, err := NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func onNames(e *Engine) []string {
	var names []string
	for _, sc := range e.Active() {
		names = append(names, sc.Name)
	}
	return names
}

func TestSwitchOnAndOff(t *testing.T) {
	e := switchEngine(t)
	wallet := Flow{Layer: LayerDNS, Host: "wallet.example"}
	slow := Flow{Layer: LayerDNS, Host: "slow.example"}
	if got := onNames(e); !slices.Equal(got, []string{"outage"}) {
		t.Fatalf("on at start = %v, want the non-optional [outage]", got)
	}
	if d := e.Decide(slow); d.Action != ActionAllow {
		t.Fatalf("optional scenario acts while off: %v", d)
	}

	if err := e.Switch("slow", true, nil); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(slow); d.Action != ActionDelay || d.Scenario() != "slow" {
		t.Fatalf("after switching slow on: %v, want delay by slow", d)
	}
	// outage ranks first (it was active at load), so it still decides wallet.
	if d := e.Decide(wallet); d.Action != ActionReject {
		t.Fatalf("wallet: %v, want reject by the higher-priority outage", d)
	}
	if err := e.Switch("outage", false, nil); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(wallet); d.Action != ActionDelay {
		t.Fatalf("wallet with outage off: %v, want delay by slow", d)
	}
	e.Reset()
	if got := onNames(e); len(got) != 0 {
		t.Fatalf("after Reset on = %v", got)
	}
	if d := e.Decide(wallet); d.Matched() {
		t.Fatalf("after Reset: %v, want no rule", d)
	}

	err := e.Switch("nope", true, nil)
	if err == nil || !strings.Contains(err.Error(), "no scenario nope (loaded: outage, slow)") {
		t.Fatalf("unknown scenario: %v", err)
	}
}

func TestSwitchForDevices(t *testing.T) {
	e := switchEngine(t)
	qa := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}
	if err := e.Switch("outage", true, qa); err != nil {
		t.Fatal(err)
	}
	in := Flow{Layer: LayerDNS, Host: "wallet.example", Client: addr("192.0.2.5")}
	out := Flow{Layer: LayerDNS, Host: "wallet.example", Client: addr("192.0.2.99")}
	if d := e.Decide(in); d.Action != ActionReject {
		t.Fatalf("device in scope: %v, want reject", d)
	}
	if d := e.Decide(out); d.Matched() {
		t.Fatalf("device out of scope: %v, want untouched", d)
	}
	var st ScenarioState
	for _, s := range e.Scenarios() {
		if s.Scenario.Name == "outage" {
			st = s
		}
	}
	if !st.On || !slices.Equal(st.Clients, qa) || !st.AppliesToClient(addr("192.0.2.5")) || st.AppliesToClient(addr("192.0.2.99")) {
		t.Fatalf("state %+v", st)
	}
	// Switching on again for everyone widens the scope.
	if err := e.Switch("outage", true, nil); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(out); d.Action != ActionReject {
		t.Fatalf("after widening: %v, want reject", d)
	}
}

func TestSwitchNeedsContent(t *testing.T) {
	e := switchEngine(t)
	f := Flow{Layer: LayerHTTP, Host: "page.example", Port: 443}
	if e.NeedsContent(f) {
		t.Fatal("content rule of an optional scenario that is off asks for interception")
	}
	if err := e.Switch("slow", true, nil); err != nil {
		t.Fatal(err)
	}
	if !e.NeedsContent(f) {
		t.Fatal("content rule of a scenario switched on is not seen")
	}
}

func TestSwitchObservedHitsAndPeek(t *testing.T) {
	e := switchEngine(t)
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	e.SetClock(func() time.Time { return at })
	var events []Event
	e.SetObserver(func(ev Event) { events = append(events, ev) })
	if err := e.Switch("outage", true, nil); err != nil {
		t.Fatal(err)
	}

	f := Flow{Layer: LayerHTTP, Host: "wallet.example", Port: 443, Client: addr("192.0.2.7"),
		Header: func(string) string { return "" }}
	e.Decide(f)
	e.Decide(Flow{Layer: LayerDNS, Host: "other.example"}) // no rule: no event, no hit
	if d := e.Peek(f); d.Action != ActionReject {
		t.Fatalf("Peek: %v", d)
	}
	if len(events) != 1 {
		t.Fatalf("events = %d, want 1 (Peek and plain allows make none)", len(events))
	}
	ev := events[0]
	if !ev.Time.Equal(at) || ev.Flow.Host != "wallet.example" || ev.Flow.Client != addr("192.0.2.7") ||
		ev.Flow.Header != nil || ev.Decision.Action != ActionReject || ev.Decision.Rule.Pos.Line != 4 {
		t.Fatalf("event %+v", ev)
	}
	hits := e.Hits()
	if len(hits) != 3 || hits[0].Hits != 1 || hits[1].Hits != 0 {
		t.Fatalf("hits %+v, want 1 for outage rules[0] (Peek not counted)", hits)
	}
	for _, st := range e.Scenarios() {
		if st.Scenario.Name == "outage" && !st.Since.Equal(at) {
			t.Fatalf("outage since %v, want the engine clock %v", st.Since, at)
		}
	}
}

func TestOnChange(t *testing.T) {
	e := switchEngine(t)
	var seen []string
	remove := e.OnChange(func() {
		// The new state is in force when watchers run.
		seen = append(seen, e.Peek(Flow{Layer: LayerDNS, Host: "slow.example"}).Action.String())
	})
	if err := e.Switch("slow", true, nil); err != nil {
		t.Fatal(err)
	}
	e.Reset()
	if err := e.Reload(switchSet(t, "a.yaml", outageRules, "b.yaml", slowRules)); err != nil {
		t.Fatal(err)
	}
	remove()
	if err := e.Switch("slow", true, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []string{"delay", "allow", "allow"}) {
		t.Fatalf("watcher saw %v", seen)
	}
}

func TestReloadKeepsSwitches(t *testing.T) {
	e := switchEngine(t)
	qa := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}
	if err := e.Switch("outage", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Switch("slow", true, qa); err != nil {
		t.Fatal(err)
	}
	e.Decide(Flow{Layer: LayerDNS, Host: "slow.example", Client: addr("192.0.2.1")})

	edited := switchSet(t, "a.yaml", outageRules, "b.yaml", strings.Replace(slowRules, "latency: 2s", "latency: 5s", 1),
		"c.yaml", "scenario: added\nrules:\n  - {domains: [new.example], action: reject}\n")
	if err := e.Reload(edited); err != nil {
		t.Fatal(err)
	}
	if got := onNames(e); !slices.Equal(got, []string{"slow"}) {
		t.Fatalf("on after reload = %v, want [slow] as switched", got)
	}
	d := e.Decide(Flow{Layer: LayerDNS, Host: "slow.example", Client: addr("192.0.2.1")})
	if d.Action != ActionDelay || d.Params().Latency != 5*time.Second {
		t.Fatalf("after reload: %v latency %v, want the edited 5s", d, d.Params().Latency)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "slow.example", Client: addr("192.0.2.99")}); d.Matched() {
		t.Fatalf("device scope lost in reload: %v", d)
	}
	if e.Hits()[0].Rule.Scenario != "outage" {
		t.Fatalf("priority after reload: %v first", e.Hits()[0].Rule.Ref())
	}

	// A broken set changes nothing.
	if err := e.Reload(nil); err == nil {
		t.Fatal("Reload(nil) succeeded")
	}
}

func TestSwitchWhileDeciding(t *testing.T) {
	e := switchEngine(t)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200_000 && !stop.Load(); i++ {
				d := e.Decide(Flow{Layer: LayerDNS, Host: "wallet.example"})
				// Either scenario may be on, never something else.
				if d.Matched() && d.Action != ActionReject && d.Action != ActionDelay {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 200 {
		if err := e.Switch("slow", i%2 == 0, nil); err != nil {
			t.Error(err)
		}
		if err := e.Switch("outage", i%3 == 0, nil); err != nil {
			t.Error(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d decisions neither reject nor delay", bad.Load())
	}
}

// TestSwitchDecidesBySNI: a proxy reads the ClientHello of a blind tunnel
// only while a tls_reset rule (an action or a phase) is on.
func TestSwitchDecidesBySNI(t *testing.T) {
	set := switchSet(t, "a.yaml", outageRules,
		"c.yaml", "scenario: censor\noptional: true\nrules:\n  - {domains: [censored.example], action: tls_reset}\n",
		"d.yaml", "scenario: phased\noptional: true\nrules:\n  - domains: [later.example]\n    phases:\n      - {for: 1m, action: delay, latency: 1s}\n      - {action: tls_reset, mode: alert}\n")
	e, err := NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	if e.DecidesBySNI() {
		t.Fatal("DecidesBySNI with no tls_reset rule on")
	}
	for _, name := range []string{"censor", "phased"} {
		if err := e.Switch(name, true, nil); err != nil {
			t.Fatal(err)
		}
		if !e.DecidesBySNI() {
			t.Fatalf("%s on: DecidesBySNI is false", name)
		}
		if err := e.Switch(name, false, nil); err != nil {
			t.Fatal(err)
		}
		if e.DecidesBySNI() {
			t.Fatalf("%s off: DecidesBySNI is still true", name)
		}
	}
}
