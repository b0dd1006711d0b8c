package testbed_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

// The lab rules of the control tests: "outage" on at start, "slow"
// optional, and two device groups.
const (
	outageYAML = `scenario: outage
description: the wallet backend is down
devices:
  qa-phones: [192.0.2.0/28]
  this-machine: [127.0.0.1/32]
rules:
  - {domains: [wallet.example], action: reject}
`
	slowYAML = `scenario: slow
optional: true
rules:
  - {domains: [slow.example], action: delay, latency: 300ms}
`
)

// controlAPI talks to a running unicorn's control API, timing each call.
type controlAPI struct {
	t     *testing.T
	base  string
	token string
	hc    *http.Client
}

func newControlAPI(t *testing.T, u *testbed.Unicorn) *controlAPI {
	t.Helper()
	if u.Control == "" {
		t.Fatalf("the banner names no control address:\n%s", strings.Join(u.Banner, "\n"))
	}
	return &controlAPI{t: t, base: "http://" + u.Control, hc: &http.Client{Timeout: 5 * time.Second}}
}

// call sends method path with body (JSON unless "") and decodes the answer
// into out (if not nil). It returns the status and how long the call took.
func (a *controlAPI) call(method, path, body string, out any) (int, time.Duration) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	start := time.Now()
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		a.t.Fatalf("%s %s: reading: %v", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode, took
}

// mustCall is call that fails the test unless the answer is 200.
func (a *controlAPI) mustCall(method, path, body string, out any) {
	a.t.Helper()
	if code, _ := a.call(method, path, body, out); code != http.StatusOK {
		a.t.Fatalf("%s %s %s: status %d", method, path, body, code)
	}
}

func (a *controlAPI) scenario(name string) control.ScenarioJSON {
	a.t.Helper()
	var l control.ScenarioList
	a.mustCall("GET", "/api/scenarios", "", &l)
	for _, sc := range l.Scenarios {
		if sc.Name == name {
			return sc
		}
	}
	a.t.Fatalf("no scenario %s in /api/scenarios: %+v", name, l.Scenarios)
	return control.ScenarioJSON{}
}

// labUnicorn starts unicorn with the lab rules (in their own directory)
// and a fake upstream that resolves wallet.example and slow.example, and
// extra names, to 127.0.0.1.
func labUnicorn(t *testing.T, args ...string) (*testbed.Unicorn, string) {
	t.Helper()
	dir := t.TempDir()
	for name, text := range map[string]string{"outage.yaml": outageYAML, "slow.yaml": slowYAML} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	up := testbed.NewDNS()
	for _, n := range []string{"wallet.example", "slow.example", "site.example"} {
		up.Map(n, netip.MustParseAddr("127.0.0.1"))
	}
	upAddr, _ := up.Start(t)
	u := testbed.Start(t, append([]string{"--rules", filepath.Join(dir, "outage.yaml"), "--rules", filepath.Join(dir, "slow.yaml"), "--upstream", upAddr}, args...)...)
	return u, dir
}

func rcodeOf(t *testing.T, u *testbed.Unicorn, name string) string {
	t.Helper()
	return dns.RcodeToString[ask(t, u.DNS, "udp", name, dns.TypeA).Rcode]
}

// TestControlAPIAndCLI: the API and the CLI against the running binary:
// list, switch for a device group, switch for a while, reset, rule hits,
// events, explain, metrics and the device page; and the CLI's advice when
// no unicorn runs.
func TestControlAPIAndCLI(t *testing.T) {
	u, _ := labUnicorn(t, "--seed", "42")
	api := newControlAPI(t, u)
	ctl := "--control=" + u.Control

	var st control.Status
	if api.mustCall("GET", "/api/status", "", &st); st.Seed != "42" || !slices.Equal(st.On, []string{"outage"}) || st.Reload.Reloads != 0 {
		t.Errorf("/api/status at start: %+v; want seed 42, outage on, no reload", st)
	}
	var health struct {
		OK bool
	}
	if api.mustCall("GET", "/api/health", "", &health); !health.OK {
		t.Error("/api/health is not ok")
	}
	var l control.ScenarioList
	api.mustCall("GET", "/api/scenarios", "", &l)
	if len(l.Scenarios) != 2 || !l.Scenarios[0].On || l.Scenarios[1].On || !slices.Equal(l.Devices["qa-phones"], []string{"192.0.2.0/28"}) {
		t.Fatalf("/api/scenarios at start: %+v", l)
	}
	if got := rcodeOf(t, u, "wallet.example"); got != "NXDOMAIN" {
		t.Fatalf("wallet.example with outage on: %s", got)
	}

	// On for the QA phones only: this machine is not one of them.
	api.mustCall("POST", "/api/scenarios/outage/on", `{"clients": ["qa-phones"]}`, nil)
	if got := rcodeOf(t, u, "wallet.example"); got != "NOERROR" {
		t.Errorf("wallet.example with outage on for qa-phones only, asked from 127.0.0.1: %s, want NOERROR", got)
	}
	api.mustCall("POST", "/api/scenarios/outage/on", `{"clients": ["this-machine"]}`, nil)
	if got := rcodeOf(t, u, "wallet.example"); got != "NXDOMAIN" {
		t.Errorf("wallet.example with outage on for this-machine: %s, want NXDOMAIN", got)
	}

	// The device page (asked from 127.0.0.1) lists the blocked request.
	page := httpGet(t, "http://"+u.Proxy+"/")
	if !strings.Contains(page, "<code>wallet.example</code> (dns): <b>NXDOMAIN</b>, by outage") {
		t.Errorf("the device page does not list the blocked wallet.example:\n%s", page)
	}

	// The CLI.
	if r := testbed.Run(t, "scenario", "off", "outage", ctl); r.Code != 0 || !strings.HasPrefix(r.Stdout, "off  outage") {
		t.Errorf("scenario off: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := rcodeOf(t, u, "wallet.example"); got != "NOERROR" {
		t.Errorf("wallet.example after scenario off: %s", got)
	}
	r := testbed.Run(t, "scenario", "on", "slow", "--for", "10m", ctl)
	if r.Code != 0 || !strings.Contains(r.Stdout, "ON   slow  for every device  until ") {
		t.Errorf("scenario on slow --for 10m: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if sc := api.scenario("slow"); !sc.On || time.Until(sc.RevertAt) < 9*time.Minute || time.Until(sc.RevertAt) > 11*time.Minute {
		t.Errorf("slow after on --for 10m: %+v, want on with a revert in 10 minutes", sc)
	}
	if r := testbed.Run(t, "scenario", "list", ctl); r.Code != 0 || !strings.Contains(r.Stdout, "off  outage") || !strings.Contains(r.Stdout, "ON   slow") {
		t.Errorf("scenario list: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := testbed.Run(t, "scenario", "on", "nosuch", ctl); r.Code != 1 || !strings.Contains(r.Stderr, "no scenario nosuch (loaded: outage, slow)") {
		t.Errorf("scenario on nosuch: exit %d\n%s", r.Code, r.Stderr)
	}
	if r := testbed.Run(t, "events", ctl); r.Code != 0 || !strings.Contains(r.Stdout, "127.0.0.1       dns   wallet.example -> NXDOMAIN  (outage rules[0] ") {
		t.Errorf("events: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := testbed.Run(t, "explain", "--remote", ctl, "slow.example"); r.Code != 0 || !strings.Contains(r.Stdout, "delay by slow rules[0]") {
		t.Errorf("explain --remote slow.example: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	var rl struct{ Rules []control.RuleJSON }
	api.mustCall("GET", "/api/rules", "", &rl)
	if len(rl.Rules) != 2 || rl.Rules[0].Scenario != "outage" || rl.Rules[0].Hits != 2 || rl.Rules[1].Hits != 0 {
		t.Errorf("/api/rules: %+v; want outage's rule with the 2 blocked questions, explain counting none", rl.Rules)
	}
	metrics := httpGet(t, api.base+"/metrics")
	for _, want := range []string{
		`unicorn_decisions_total{action="reject",layer="dns"} 2`,
		`scenario="outage",service=""} 2`,
		`unicorn_scenario_on{scenario="slow"} 1`,
		`unicorn_dns_queries_total 4`,
		`unicorn_dns_upstream_duration_seconds_count`,
		`unicorn_proxy_connections_total 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if r := testbed.Run(t, "scenario", "reset", ctl); r.Code != 0 || api.scenario("slow").On || api.scenario("outage").On {
		t.Errorf("scenario reset: exit %d, scenarios still on\n%s", r.Code, r.Stderr)
	}

	// No unicorn at the address: say how to start one.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l2.Addr().String()
	l2.Close()
	r = testbed.Run(t, "scenario", "list", "--control", closed)
	if r.Code != 1 || !strings.Contains(r.Stderr, "Is unicorn serve running? Start it with make run") {
		t.Errorf("scenario list with nothing at %s: exit %d\n%s", closed, r.Code, r.Stderr)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSwitchUnderLoad: proxied requests run in a bounded loop while the
// outage scenario flips 100 times. No request hangs (each ends, 200 or
// 403, well within its timeout) and no API call takes more than 100 ms.
//
// The machine is shared and busy (2 cores, several test runs, the race
// detector): a process can be descheduled, or stopped by its garbage
// collector, for longer than 100 ms. Two probes measure that, each asked
// every few milliseconds: a trivial HTTP server in this test process (the
// machine), and unicorn's own /api/health, which touches neither the
// engine nor the switches (the unicorn process). An API call over the
// limit fails the test unless a probe request that overlapped it was slow
// too (over half the limit): then the machine or the whole process
// stalled, and the switch did not wait on traffic. At most a tenth of the
// calls may be excused so.
func TestSwitchUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the load test")
	}
	u, _ := labUnicorn(t)
	api := newControlAPI(t, u)
	site, _ := testbed.ServeHTTP(t, "127.0.0.1", testbed.Site(testbed.SiteBody))
	target := "http://wallet.example:" + port(t, site) + "/"

	const (
		flips      = 100
		workers    = 4
		reqTimeout = 5 * time.Second
		apiLimit   = 100 * time.Millisecond
		// hangLimit is far above a request's normal time (a millisecond or
		// two) and far below reqTimeout: a request that waited for a
		// switch would show here.
		hangLimit = 2 * time.Second
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	type tally struct {
		ok, blocked, failed int
		slowest             time.Duration
		errs                []string
	}
	tallies := make([]tally, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{Proxy: http.ProxyURL(u.ProxyURL)}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: reqTimeout}
			tl := &tallies[w]
			for i := 0; i < 100000; i++ { // bounded; stop ends it far sooner
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				resp, err := c.Get(target)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				took := time.Since(start)
				tl.slowest = max(tl.slowest, took)
				switch {
				case err != nil:
					tl.failed++
					if len(tl.errs) < 3 {
						tl.errs = append(tl.errs, err.Error())
					}
				case resp.StatusCode == 200:
					tl.ok++
				case resp.StatusCode == 403:
					tl.blocked++
				default:
					tl.failed++
					tl.errs = append(tl.errs, resp.Status)
				}
			}
		}()
	}
	probeSrv, _ := testbed.ServeHTTP(t, "127.0.0.1", testbed.Site("ok"))
	type span struct {
		start time.Time
		took  time.Duration
	}
	probeURLs := []string{"http://" + probeSrv + "/", api.base + "/api/health"}
	probes := make([][]span, len(probeURLs))
	var probeWG sync.WaitGroup
	for i, url := range probeURLs {
		probeWG.Add(1)
		go func() {
			defer probeWG.Done()
			c := &http.Client{Timeout: reqTimeout}
			for range 100000 {
				select {
				case <-stop:
					return
				case <-time.After(3 * time.Millisecond):
				}
				start := time.Now()
				if resp, err := c.Get(url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				probes[i] = append(probes[i], span{start, time.Since(start)})
			}
		}()
	}
	var lat []time.Duration
	var calls []span
	for i := range flips {
		body := "" // odd flips: off
		switch i % 4 {
		case 0:
			body = `{"clients": ["this-machine"]}`
		case 2:
			body = `{"for": "1h"}`
		}
		start := time.Now()
		code, took := api.call("POST", fmt.Sprintf("/api/scenarios/outage/%s", onOff(i%2 == 0)), body, nil)
		if code != 200 {
			t.Errorf("flip %d: status %d", i, code)
		}
		lat, calls = append(lat, took), append(calls, span{start, took})
		start = time.Now()
		_, took = api.call("GET", "/api/scenarios", "", nil)
		lat, calls = append(lat, took), append(calls, span{start, took})
		time.Sleep(5 * time.Millisecond) // let requests run between flips
	}
	close(stop)
	wg.Wait()
	probeWG.Wait()

	var total tally
	for _, tl := range tallies {
		total.ok += tl.ok
		total.blocked += tl.blocked
		total.failed += tl.failed
		total.slowest = max(total.slowest, tl.slowest)
		total.errs = append(total.errs, tl.errs...)
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	t.Logf("%d API calls during %d proxied requests (%d passed, %d blocked): API p50 %v, p99 %v, max %v; slowest request %v",
		len(lat), total.ok+total.blocked+total.failed, total.ok, total.blocked, p50, p99, worst, total.slowest)
	var stalls int
	for _, c := range calls {
		if c.took <= apiLimit {
			continue
		}
		stalled := slices.ContainsFunc(append(probes[0], probes[1]...), func(p span) bool {
			overlaps := p.start.Before(c.start.Add(c.took)) && c.start.Before(p.start.Add(p.took))
			return overlaps && p.took > apiLimit/2
		})
		if !stalled {
			t.Errorf("an API call took %v, over %v, while both probes stayed fast", c.took, apiLimit)
			continue
		}
		stalls++
	}
	if stalls > 0 {
		t.Logf("%d API calls over %v fell in stalls of the machine or of the unicorn process (a probe request beside them took over %v too)", stalls, apiLimit, apiLimit/2)
	}
	if stalls > len(calls)/10 {
		t.Errorf("%d of %d API calls over %v: too many to blame on the machine", stalls, len(calls), apiLimit)
	}
	if total.failed > 0 {
		t.Errorf("%d requests failed: %v", total.failed, total.errs)
	}
	if total.slowest > hangLimit {
		t.Errorf("a request took %v: it waited on a switch", total.slowest)
	}
	if total.ok == 0 || total.blocked == 0 {
		t.Errorf("%d passed and %d blocked: the flips did not show in the traffic", total.ok, total.blocked)
	}
	// The last flip (i = 99) switched off: the next request passes, and a
	// switch on shows in the very next request.
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u.ProxyURL)}, Timeout: reqTimeout}
	for _, step := range []struct {
		on   bool
		want int
	}{{false, 200}, {true, 403}, {false, 200}} {
		api.mustCall("POST", "/api/scenarios/outage/"+onOff(step.on), "", nil)
		resp, err := c.Get(target)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != step.want {
			t.Errorf("right after switching outage %s, on a kept-alive connection: %d, want %d", onOff(step.on), resp.StatusCode, step.want)
		}
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// TestEventStreamInOrder: an SSE client receives the events of a scripted
// run, in order, with every field, and nothing for allowed names.
func TestEventStreamInOrder(t *testing.T) {
	u, _ := labUnicorn(t)
	api := newControlAPI(t, u)
	api.mustCall("POST", "/api/scenarios/slow/on", "", nil)
	resp, err := http.Get(api.base + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan control.Event, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e control.Event
				if json.Unmarshal([]byte(d), &e) == nil {
					events <- e
				}
			}
		}
	}()
	// The script: blocked, allowed, delayed, blocked over TCP.
	script := []struct {
		name, network, outcome, scenario string
	}{
		{"wallet.example", "udp", "NXDOMAIN", "outage"},
		{"site.example", "udp", "", ""},
		{"slow.example", "udp", "delayed 300ms", "slow"},
		{"api.wallet.example", "tcp", "NXDOMAIN", "outage"},
	}
	for _, s := range script {
		ask(t, u.DNS, s.network, s.name, dns.TypeA)
	}
	var got []control.Event
	timeout := time.After(5 * time.Second)
	for len(got) < 3 {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended after %d events", len(got))
			}
			got = append(got, e)
		case <-timeout:
			t.Fatalf("5 s and %d of 3 events: %+v", len(got), got)
		}
	}
	i := 0
	for _, s := range script {
		if s.outcome == "" {
			continue
		}
		e := got[i]
		i++
		if e.Target != s.name || e.Outcome != s.outcome || e.Scenario != s.scenario || e.Device != "127.0.0.1" ||
			e.Layer != "dns" || !strings.HasSuffix(e.Rule, ".yaml:7") && !strings.HasSuffix(e.Rule, ".yaml:4") || e.Time.IsZero() {
			t.Errorf("event %d = %+v, want %s %s by %s", i, e, s.name, s.outcome, s.scenario)
		}
		if i > 1 && e.Seq <= got[i-2].Seq {
			t.Errorf("events out of order: %d after %d", e.Seq, got[i-2].Seq)
		}
	}
	select {
	case e := <-events:
		t.Errorf("an extra event: %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestEventLogRotation: --events writes JSON Lines and rotates by size,
// keeping --events-keep old files; no event is lost or repeated across them.
func TestEventLogRotation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "events.jsonl")
	u, _ := labUnicorn(t, "--events", file, "--events-max-size", "2KB", "--events-keep", "2")
	const n = 40 // about 250 bytes each: some 10 KB, five files' worth
	for i := range n {
		ask(t, u.DNS, "udp", fmt.Sprintf("n%d.wallet.example", i), dns.TypeA)
	}
	// The hub writes a moment after the answer: wait for the last event.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(file)
		if bytes.Contains(b, []byte(fmt.Sprintf(`"target":"n%d.wallet.example"`, n-1))) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var seqs []uint64
	for _, name := range []string{file + ".2", file + ".1", file} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%v (want FILE, FILE.1 and FILE.2)", err)
		}
		if len(b) > 2048 {
			t.Errorf("%s: %d bytes, over --events-max-size 2KB", name, len(b))
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var e control.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			if e.Outcome != "NXDOMAIN" || e.Scenario != "outage" || e.Device != "127.0.0.1" {
				t.Errorf("%s: event %+v", name, e)
			}
			seqs = append(seqs, e.Seq)
		}
	}
	if _, err := os.Stat(file + ".3"); err == nil {
		t.Errorf("%s.3 exists; --events-keep 2 keeps .1 and .2", file)
	}
	if len(seqs) == 0 || seqs[len(seqs)-1] != n {
		t.Fatalf("the newest file does not end with event %d: %v", n, seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("events across the files are not consecutive: %v", seqs)
		}
	}
	if len(seqs) == n {
		t.Errorf("all %d events survived in 3 files of 2 KB; the oldest file should have been dropped", n)
	}
}

// TestReloadBrokenFileReported: a rule file saved with errors is refused
// (watched: no SIGHUP needed); every error shows in the log and in
// /api/status, the old rules stay in force, and switches survive a good
// reload.
func TestReloadBrokenFileReported(t *testing.T) {
	u, dir := labUnicorn(t)
	api := newControlAPI(t, u)
	file := filepath.Join(dir, "outage.yaml")
	api.mustCall("POST", "/api/scenarios/slow/on", `{"clients": ["this-machine"]}`, nil)

	broken := strings.Replace(outageYAML, "action: reject}", "action: blakhole}\n  - {service: nosuch, action: reject}", 1)
	if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	u.WaitLog(t, map[string]string{"msg": "reload failed; the rules in force are unchanged", "trigger": "file change"})
	var st control.Status
	deadline := time.Now().Add(5 * time.Second)
	for api.mustCall("GET", "/api/status", "", &st); st.Reload.OK && time.Now().Before(deadline); api.mustCall("GET", "/api/status", "", &st) {
		time.Sleep(20 * time.Millisecond)
	}
	if st.Reload.OK || len(st.Reload.Errors) != 2 ||
		!strings.HasPrefix(st.Reload.Errors[0].At, file+":7:") || !strings.Contains(st.Reload.Errors[0].Error, "blakhole") ||
		!strings.HasPrefix(st.Reload.Errors[1].At, file+":8:") || !strings.Contains(st.Reload.Errors[1].Error, "nosuch") {
		t.Errorf("/api/status reload: %+v; want both errors, at %s:7 and :8", st.Reload, file)
	}
	var logged int
	for _, l := range u.Logs() {
		if l.Str("msg") == "rule error" {
			logged++
		}
	}
	if logged != 2 {
		t.Errorf("%d rule errors logged, want 2:\n%s", logged, u.Stderr())
	}
	if got := rcodeOf(t, u, "wallet.example"); got != "NXDOMAIN" {
		t.Errorf("wallet.example after the refused reload: %s, want NXDOMAIN from the rules in force", got)
	}

	// A good file: in force, the error gone, slow still on for this machine.
	good := strings.Replace(outageYAML, "action: reject}", "action: reject, rcode: refused}", 1)
	if err := os.WriteFile(file, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	u.WaitLog(t, map[string]string{"msg": "rules reloaded"})
	if got := rcodeOf(t, u, "wallet.example"); got != "REFUSED" {
		t.Errorf("wallet.example after the good reload: %s, want REFUSED", got)
	}
	st = control.Status{} // absent fields must not keep the old values
	api.mustCall("GET", "/api/status", "", &st)
	if !st.Reload.OK || len(st.Reload.Errors) != 0 || st.Reload.Failures != 1 {
		t.Errorf("/api/status after the good reload: %+v", st.Reload)
	}
	if sc := api.scenario("slow"); !sc.On || !slices.Equal(sc.Clients, []string{"127.0.0.1/32"}) {
		t.Errorf("slow after the reload: %+v; the switch (on for this-machine) should survive", sc)
	}
}

// TestControlTokenOffLoopback: on a non-loopback address (192.0.2.20, in
// a namespace of the test's own) the control API needs the token unicorn
// generated and printed; the CLI says so without it and works with it.
func TestControlTokenOffLoopback(t *testing.T) {
	if why := testbed.NetnsUnavailable(); why != "" {
		t.Skip(why)
	}
	srv := testbed.NewNetns(t, "ctlsrv")
	cli := testbed.NewNetns(t, "ctlcli")
	testbed.Veth(t, srv, "192.0.2.20/24", cli, "192.0.2.21/24")
	u := testbed.StartIn(t, srv, "--dns", "192.0.2.20:5353", "--proxy", "192.0.2.20:8080",
		"--control", "192.0.2.20:8053", "--upstream", "192.0.2.99:53", "--log-format", "json", "--ca-dir", t.TempDir())
	if u.Control != "192.0.2.20:8053" || len(u.ControlToken) != 32 {
		t.Fatalf("banner: control %q, token %q; want 192.0.2.20:8053 and a generated token\n%s", u.Control, u.ControlToken, strings.Join(u.Banner, "\n"))
	}
	run := func(args ...string) testbed.Result {
		t.Helper()
		return runIn(t, cli, append([]string{"scenario", "list", "--control", u.Control}, args...)...)
	}
	if r := run(); r.Code != 1 || !strings.Contains(r.Stderr, "wants its control token: give --token TOKEN") {
		t.Errorf("without the token: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := run("--token", strings.Repeat("0", 32)); r.Code != 1 || !strings.Contains(r.Stderr, "wants its control token") {
		t.Errorf("with a wrong token: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := run("--token", u.ControlToken); r.Code != 0 || !strings.Contains(r.Stdout, "ON   cud-2019") {
		t.Errorf("with the token: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// runIn runs the unicorn binary with args inside n, bounded like
// testbed.Run, without the UNICORN_* variables of the test's environment.
func runIn(t *testing.T, n *testbed.Netns, args ...string) testbed.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testbed.RunTimeout)
	defer cancel()
	argv := n.Exec(append([]string{testbed.Binary(t)}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = testEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := testbed.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s did not finish within %v", strings.Join(argv, " "), testbed.RunTimeout)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return r
}

// TestEventsFollow: `unicorn events --follow` prints blocked requests as
// they happen, and Ctrl-C ends it cleanly.
func TestEventsFollow(t *testing.T) {
	u, _ := labUnicorn(t)
	cmd := exec.Command(testbed.Binary(t), "events", "--follow", "--control", u.Control)
	cmd.Env = testEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // by its own pid; harmless once it has exited
	})
	// The first event may come through the recent list or the stream;
	// the others, asked once it has shown (and the stream is most likely
	// connected), through the stream. Either way none may be missed.
	ask(t, u.DNS, "udp", "n0.wallet.example", dns.TypeA)
	timeout := time.After(5 * time.Second)
	for seen := 0; seen < 3; {
		if seen == 1 {
			time.Sleep(200 * time.Millisecond)
			for i := 1; i < 3; i++ {
				ask(t, u.DNS, "udp", fmt.Sprintf("n%d.wallet.example", i), dns.TypeA)
			}
		}
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("events --follow ended: %s", stderr.String())
			}
			want := fmt.Sprintf("n%d.wallet.example -> NXDOMAIN", seen)
			if !strings.Contains(l, want) {
				t.Fatalf("line %q, want %q (in order)", l, want)
			}
			seen++
		case <-timeout:
			t.Fatalf("5 s and not 3 events; stderr: %s", stderr.String())
		}
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("events --follow after Ctrl-C: %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Error("events --follow did not end within 5 s of Ctrl-C")
	}
}

// testEnv is the environment for the commands a test runs itself: no
// UNICORN_* settings of the caller, and no second of sleep at exit for a
// race-enabled binary.
func testEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "UNICORN_") || strings.HasPrefix(kv, "GORACE=")
	})
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// TestScenarioOnBehind: switching on a scenario that comes after one
// that is on says that the earlier one's rules win where both match.
func TestScenarioOnBehind(t *testing.T) {
	t.Parallel()
	u, _ := labUnicorn(t)
	ctl := "--control=" + u.Control
	r := testbed.Run(t, "scenario", "on", "slow", ctl)
	if r.Code != 0 || !strings.Contains(r.Stdout, "ON   slow  for every device\n") ||
		!strings.Contains(r.Stdout, "after outage (on): where both match, the earlier rules win") {
		t.Errorf("scenario on slow behind outage: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	testbed.Run(t, "scenario", "off", "outage", ctl)
	if r := testbed.Run(t, "scenario", "on", "slow", ctl); r.Code != 0 || strings.Contains(r.Stdout, "after") {
		t.Errorf("scenario on slow with outage off: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}
