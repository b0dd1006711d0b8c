package dnsblock

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lines returns the log lines containing every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

const decisionMsg = `msg="dns decision"`

func TestDecisionLogFoldsRepeats(t *testing.T) {
	w, _, _ := blockedWorld(t, rules.ActionReject, rules.Params{})
	for i := range 50 {
		w.ask(t, transports[i%2], query("Mainnet.infura.io.", dns.TypeA, true))
	}
	if got := w.logs.lines(decisionMsg); len(got) != 1 || strings.Contains(got[0], "repeated=") {
		t.Fatalf("decision lines after 50 queries, want the first only:\n%s", strings.Join(got, "\n"))
	}
	w.clock.Advance(foldWindow + time.Millisecond)
	waitFor(t, "the summary line", func() bool { return len(w.logs.lines("repeated=")) > 0 })
	sum := w.logs.lines("repeated=")
	if len(sum) != 1 {
		t.Fatalf("summary lines:\n%s", strings.Join(sum, "\n"))
	}
	for _, want := range []string{decisionMsg, "level=INFO", "client=127.0.0.1", "name=Mainnet.infura.io.", "qtype=A",
		"action=reject", "scenario=cud-2019", "rule=1", "repeated=49"} {
		if !strings.Contains(sum[0], want) {
			t.Errorf("summary lacks %q: %s", want, sum[0])
		}
	}
	// Nothing more was asked: no more lines, and the decision is
	// forgotten, so that the next one is logged in full again.
	w.clock.Advance(foldWindow + time.Millisecond)
	waitFor(t, "the decision to be forgotten", func() bool {
		l := w.srv.dlog
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.keys) == 0
	})
	w.ask(t, "udp", query("mainnet.infura.io.", dns.TypeA, true))
	if got := w.logs.lines(decisionMsg); len(got) != 3 || strings.Contains(got[2], "repeated=") {
		t.Errorf("decision lines, want first, summary, first:\n%s", strings.Join(got, "\n"))
	}
}

func TestDecisionLogSeparatesNamesAndTypes(t *testing.T) {
	w, _, _ := blockedWorld(t, rules.ActionReject, rules.Params{})
	for range 3 {
		w.ask(t, "udp", query("a.infura.io.", dns.TypeA, true))
		w.ask(t, "udp", query("b.infura.io.", dns.TypeA, true))
	}
	w.ask(t, "udp", query("a.infura.io.", dns.TypeAAAA, true))
	if n := len(w.logs.lines(decisionMsg)); n != 3 {
		t.Fatalf("%d decision lines, want 3 (a A, b A, a AAAA):\n%s", n, w.logs)
	}
	w.stop(t) // reports what is pending
	for _, want := range [][]string{
		{"name=a.infura.io.", "qtype=A ", "repeated=2"},
		{"name=b.infura.io.", "qtype=A ", "repeated=2"},
	} {
		if n := len(w.logs.lines(want...)); n != 1 {
			t.Errorf("%d lines with %q:\n%s", n, want, w.logs)
		}
	}
	if n := len(w.logs.lines(decisionMsg)); n != 5 {
		t.Errorf("%d decision lines, want 3 first and 2 summaries:\n%s", n, w.logs)
	}
}

// TestDecisionLogBounds: beyond its line budget the log counts decisions
// per client and rule; beyond its key bound it reports and forgets the
// oldest decision.
func TestDecisionLogBounds(t *testing.T) {
	logs := &logBuffer{}
	clock := newTestClock()
	l := newDecisionLog(newTestLogger(logs), clock.Now)
	l.maxLines, l.maxKeys = 5, 3
	rule := testRule(rules.ActionReject, rules.Params{})
	d := rules.Decision{Action: rules.ActionReject, Rule: rule}
	client := netip.MustParseAddr("192.0.2.7")
	note := func(name string) {
		l.note(client, &request{name: name, lower: strings.ToLower(name), qtype: dns.TypeA}, d)
		if len(l.keys) > l.maxKeys {
			t.Fatalf("%d keys, bound %d", len(l.keys), l.maxKeys)
		}
	}
	note("n0.example.")
	note("n0.example.")
	note("n1.example.")
	note("n2.example.")
	note("n3.example.") // evicts n0, reporting its repeat
	if got := logs.lines("name=n0.example.", "repeated=1"); len(got) != 1 {
		t.Fatalf("evicted decision's repeat not reported:\n%s", logs)
	}
	for i := 4; i < 20; i++ { // the budget is spent at n3: these are counted
		note(fmt.Sprintf("n%d.example.", i))
	}
	if n := len(logs.lines(decisionMsg)); n != 5 {
		t.Fatalf("%d lines, want the budget of 5:\n%s", n, logs)
	}
	clock.Advance(foldWindow)
	l.flush()
	got := logs.lines(decisionMsg, "name=*")
	if len(got) != 1 || !strings.Contains(got[0], "repeated=16") || !strings.Contains(got[0], "client=192.0.2.7") ||
		!strings.Contains(got[0], "scenario=cud-2019") || strings.Contains(got[0], "qtype=") {
		t.Errorf("client-and-rule line, want repeated=16:\n%s", logs)
	}
	if len(l.keys) != 0 || l.head != nil || l.tail != nil || len(l.coarse) != 0 {
		t.Errorf("flush left %d keys, %d counts", len(l.keys), len(l.coarse))
	}
}

func TestDecisionLogQuietCostsNothing(t *testing.T) {
	l := newDecisionLog(discardLogger(), time.Now)
	q := &request{name: "a.example.", lower: "a.example.", qtype: dns.TypeA}
	d := rules.Decision{Action: rules.ActionReject, Rule: testRule(rules.ActionReject, rules.Params{})}
	client := netip.MustParseAddr("127.0.0.1")
	if n := testing.AllocsPerRun(100, func() { l.note(client, q, d) }); n != 0 || len(l.keys) != 0 {
		t.Errorf("quiet log: %v allocations, %d keys", n, len(l.keys))
	}
	l = newDecisionLog(newTestLogger(&logBuffer{}), time.Now)
	l.note(client, q, d)
	if n := testing.AllocsPerRun(100, func() { l.note(client, q, d) }); n != 0 {
		t.Errorf("a repeat costs %v allocations", n)
	}
}
