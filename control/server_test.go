package control_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/chaos-unicorn/unicorn/control/controltest"
	"github.com/chaos-unicorn/unicorn/rules"
)

const labRules = `scenario: outage
description: wallet down
devices:
  qa-phones: [192.0.2.0/28]
rules:
  - {domains: [wallet.example], action: reject}
`

const slowRules = `scenario: slow
optional: true
rules:
  - {domains: [slow.example], action: delay, latency: 2s}
`

// fixture is a control server over a real engine with two scenarios,
// "outage" (on) and "slow" (optional, off), on a fake clock.
type fixture struct {
	engine *rules.Engine
	hub    *control.Hub
	clock  *controltest.Clock
	srv    *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	set, err := rules.LoadFS(fstest.MapFS{
		"outage.yaml": {Data: []byte(labRules)},
		"slow.yaml":   {Data: []byte(slowRules)},
	}, "outage.yaml", "slow.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	clock := controltest.NewClock(time.Date(2019, 4, 1, 9, 0, 0, 0, time.UTC))
	e.SetClock(clock.Now)
	hub := control.NewHub(control.HubConfig{})
	hub.Attach(e)
	t.Cleanup(func() { hub.Close() })
	s, err := control.New(control.Config{Engine: e, Hub: hub, Switches: control.NewSwitches(e, clock, nil), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() { s.Close() })
	return &fixture{engine: e, hub: hub, clock: clock, srv: srv}
}

// call does method path with body and decodes the JSON answer into out.
func (f *fixture) call(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func (f *fixture) scenario(t *testing.T, name string) control.ScenarioJSON {
	t.Helper()
	var l control.ScenarioList
	f.call(t, "GET", "/api/scenarios", "", &l)
	for _, sc := range l.Scenarios {
		if sc.Name == name {
			return sc
		}
	}
	t.Fatalf("no scenario %s in %+v", name, l)
	return control.ScenarioJSON{}
}

func (f *fixture) decide(host, client string) rules.Action {
	return f.engine.Decide(rules.Flow{Layer: rules.LayerDNS, Host: host, Client: netip.MustParseAddr(client)}).Action
}

// TestAutoRevert: a switch for 10 minutes reverts at 10 minutes by the
// injected clock, not before, to the state before it; an untimed switch
// in between cancels the revert.
func TestAutoRevert(t *testing.T) {
	f := newFixture(t)
	if code := f.call(t, "POST", "/api/scenarios/slow/on", `{"for": "10m", "clients": ["qa-phones"]}`, nil); code != 200 {
		t.Fatalf("switch on: %d", code)
	}
	sc := f.scenario(t, "slow")
	if !sc.On || len(sc.Clients) != 1 || sc.Clients[0] != "192.0.2.0/28" || !sc.RevertAt.Equal(f.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("after on for 10m for qa-phones: %+v", sc)
	}
	if f.decide("slow.example", "192.0.2.3") != rules.ActionDelay || f.decide("slow.example", "198.51.100.1") != rules.ActionAllow {
		t.Fatal("slow is not on for qa-phones only")
	}
	f.clock.Advance(10*time.Minute - time.Second)
	if !f.scenario(t, "slow").On {
		t.Fatal("slow reverted before its 10 minutes")
	}
	f.clock.Advance(time.Second)
	if sc := f.scenario(t, "slow"); sc.On || !sc.RevertAt.IsZero() {
		t.Fatalf("slow after 10 minutes: %+v, want off with no revert pending", sc)
	}
	if f.decide("slow.example", "192.0.2.3") != rules.ActionAllow {
		t.Fatal("the engine still delays slow.example after the revert")
	}

	// Off for 5 minutes brings "outage" back on, for every device.
	f.call(t, "POST", "/api/scenarios/outage/off", `{"for": "5m"}`, nil)
	if f.decide("wallet.example", "198.51.100.1") != rules.ActionAllow {
		t.Fatal("outage still rejects after off")
	}
	f.clock.Advance(5 * time.Minute)
	if sc := f.scenario(t, "outage"); !sc.On || len(sc.Clients) != 0 {
		t.Fatalf("outage after its 5 minutes off: %+v, want on for every device", sc)
	}

	// An untimed switch cancels a pending revert.
	f.call(t, "POST", "/api/scenarios/slow/on", `{"for": "1m"}`, nil)
	f.call(t, "POST", "/api/scenarios/slow/on", ``, nil)
	if f.clock.Pending() != 0 {
		t.Errorf("%d reverts pending after an untimed switch", f.clock.Pending())
	}
	f.clock.Advance(time.Hour)
	if !f.scenario(t, "slow").On {
		t.Error("slow went off although the last switch had no time limit")
	}
	// Reset: everything off, nothing pending.
	f.call(t, "POST", "/api/scenarios/slow/on", `{"for": "1m"}`, nil)
	f.call(t, "POST", "/api/reset", ``, nil)
	if f.clock.Pending() != 0 || f.scenario(t, "slow").On || f.scenario(t, "outage").On {
		t.Error("reset left a scenario on or a revert pending")
	}
}

func TestAPIErrors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/api/scenarios/nosuch/on", "", "no scenario nosuch (loaded: outage, slow)"},
		{"POST", "/api/scenarios/slow/on", `{"for": "ten minutes"}`, `"ten minutes" is not a duration`},
		{"POST", "/api/scenarios/slow/on", `{"clients": ["qa-tablets"]}`, "groups: qa-phones"},
		{"POST", "/api/scenarios/slow/on", `{"fro": "1m"}`, `unknown field "fro"`},
		{"POST", "/api/scenarios/slow/off", `{"clients": ["qa-phones"]}`, "switch it on with clients"},
		{"GET", "/api/nosuch", "", "no endpoint GET /api/nosuch"},
		{"GET", "/api/explain?target=x", "", "explain is not available"},
	} {
		var e struct{ Error string }
		code := f.call(t, tc.method, tc.path, tc.body, &e)
		if code < 400 || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s %s: %d %q, want an error with %q", tc.method, tc.path, tc.body, code, e.Error, tc.want)
		}
	}
}

// TestRulesAndEvents: hits per rule, events in the ring and on /metrics.
func TestRulesAndEvents(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		f.decide("wallet.example", "192.0.2.5")
	}
	f.decide("other.example", "192.0.2.5")
	f.hub.Flush()
	var r struct{ Rules []control.RuleJSON }
	f.call(t, "GET", "/api/rules", "", &r)
	if len(r.Rules) != 2 || r.Rules[0].Hits != 3 || r.Rules[0].At != "outage.yaml:6" || r.Rules[1].Hits != 0 {
		t.Errorf("rules %+v; want outage.yaml:6 with 3 hits and slow's rule with 0", r.Rules)
	}
	var ev struct{ Events []control.Event }
	f.call(t, "GET", "/api/events/recent?device=192.0.2.5", "", &ev)
	if len(ev.Events) != 3 || ev.Events[2].Outcome != "NXDOMAIN" || ev.Events[2].Target != "wallet.example" {
		t.Errorf("recent events %+v", ev.Events)
	}
	resp, err := http.Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`unicorn_decisions_total{action="reject",layer="dns"} 3`,
		`unicorn_rule_hits_total{action="reject",at="outage.yaml:6",rule="0",scenario="outage",service=""} 3`,
		`unicorn_scenario_on{scenario="slow"} 0`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestTokenPolicy: which addresses need a token.
func TestTokenPolicy(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8053": false, "127.0.0.2:8053": false, "[::1]:8053": false, "localhost:8053": false,
		"0.0.0.0:8053": true, "[::]:8053": true, ":8053": true, "192.0.2.1:8053": true, "[2001:db8::1]:8053": true,
	} {
		if got := control.TokenRequired(addr); got != want {
			t.Errorf("TokenRequired(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestTokenAndOrigin: with a token, a real listener refuses requests
// without it or with a wrong one; a cross-site POST is refused even with
// no token; a DNS-rebinding Host on loopback is refused.
func TestTokenAndOrigin(t *testing.T) {
	f := newFixture(t)
	serve := func(token string) string {
		e := f.engine
		s, _ := control.New(control.Config{Engine: e, Hub: f.hub, Token: token})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(l)
		t.Cleanup(func() { s.Close() })
		return "http://" + l.Addr().String()
	}
	do := func(method, url string, hdr map[string]string) int {
		req, _ := http.NewRequest(method, url, nil)
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := serve("s3cret")
	for _, tc := range []struct {
		hdr  map[string]string
		path string
		want int
	}{
		{nil, "/api/health", 401},
		{map[string]string{"Authorization": "Bearer wrong"}, "/api/health", 401},
		{map[string]string{"Authorization": "Bearer s3cret"}, "/api/health", 200},
		{nil, "/api/health?token=s3cret", 200},
		{nil, "/", 401},
	} {
		if got := do("GET", base+tc.path, tc.hdr); got != tc.want {
			t.Errorf("GET %s with %v: %d, want %d", tc.path, tc.hdr, got, tc.want)
		}
	}
	open := serve("")
	if got := do("POST", open+"/api/reset", map[string]string{"Origin": "http://evil.example"}); got != 403 {
		t.Errorf("cross-site POST: %d, want 403", got)
	}
	if got := do("GET", open+"/api/health", map[string]string{"Host": "evil.example:8053"}); got != 403 {
		t.Errorf("rebinding Host on loopback: %d, want 403", got)
	}
	if !f.scenario(t, "outage").On {
		t.Error("a refused reset switched outage off")
	}
	if got := do("GET", open+"/api/health", nil); got != 200 {
		t.Errorf("plain loopback request: %d", got)
	}
}

// TestSSE: a stream receives the events of a scripted run in order, and
// a reconnect with Last-Event-ID gets what it missed.
func TestSSE(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		b := make([]byte, 4096)
		var acc []byte
		for {
			n, err := resp.Body.Read(b)
			acc = append(acc, b[:n]...)
			for {
				i := bytes.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- string(acc[:i])
				acc = acc[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	for i := range 5 {
		f.decide(fmt.Sprintf("n%d.wallet.example", i), "192.0.2.9")
	}
	timeout := time.After(5 * time.Second)
	var got []control.Event
	for len(got) < 5 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended after %d events", len(got))
			}
			if d, ok := strings.CutPrefix(l, "data: "); ok {
				var e control.Event
				json.Unmarshal([]byte(d), &e)
				got = append(got, e)
			}
		case <-timeout:
			t.Fatalf("5 s and %d of 5 events", len(got))
		}
	}
	for i, e := range got {
		if e.Target != fmt.Sprintf("n%d.wallet.example", i) || e.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/events", nil)
	req.Header.Set("Last-Event-ID", "3")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	b := make([]byte, 4096)
	var all []byte
	for !bytes.Contains(all, []byte("id: 5")) {
		n, err := r2.Body.Read(b)
		all = append(all, b[:n]...)
		if err != nil {
			break
		}
	}
	if bytes.Contains(all, []byte("id: 3\n")) || !bytes.Contains(all, []byte("id: 4\n")) {
		t.Errorf("replay after 3:\n%s", all)
	}
}

// TestDecideWithObserverAllocatesNothing: the hub adds no allocation to a
// blocked decision.
func TestDecideWithObserverAllocatesNothing(t *testing.T) {
	f := newFixture(t)
	fl := rules.Flow{Layer: rules.LayerDNS, Host: "wallet.example", Client: netip.MustParseAddr("192.0.2.5")}
	if n := testing.AllocsPerRun(1000, func() { f.engine.Decide(fl) }); n != 0 {
		t.Errorf("Decide with the hub attached allocates %v times", n)
	}
}

// TestTimedSwitchToSameState: switching off for a while a scenario that
// is off, or on for a while one already on for the same devices, schedules
// nothing.
func TestTimedSwitchToSameState(t *testing.T) {
	f := newFixture(t)
	f.call(t, "POST", "/api/scenarios/slow/off", `{"for": "10m"}`, nil)
	f.call(t, "POST", "/api/scenarios/outage/on", `{"for": "10m"}`, nil)
	if n := f.clock.Pending(); n != 0 {
		t.Errorf("%d reverts pending for switches that changed nothing", n)
	}
	if sc := f.scenario(t, "slow"); !sc.RevertAt.IsZero() {
		t.Errorf("slow shows a revert: %+v", sc)
	}
}
