package dnsblock

import (
	"testing"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// TestSwitchOnHidesCachedAnswers: a name answered and cached while it was
// allowed is blocked as soon as a scenario that blocks it is switched on:
// the cache never serves it past the rules, and the upstream is not asked.
// Switched off again, the cached answer comes back.
func TestSwitchOnHidesCachedAnswers(t *testing.T) {
	set, err := rules.Parse("outage.yaml", []byte("scenario: outage\nrules:\n  - {domains: [infura.io], action: reject}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(set, nil) // loaded, off
	if err != nil {
		t.Fatal(err)
	}
	up := dnstest.NewUpstream().WithAnswer("mainnet.infura.io.", "mainnet.infura.io. 300 IN A 198.51.100.1")
	addr, _ := up.Start(t)
	w := newWorld(t, Config{Decider: e, Upstreams: []string{addr}})

	if r := w.ask(t, "udp", query("mainnet.infura.io.", dns.TypeA, true)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("before the switch: %s %v, want the upstream's answer", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if err := e.Switch("outage", true, nil); err != nil {
		t.Fatal(err)
	}
	for _, network := range transports {
		if r := w.ask(t, network, query("mainnet.infura.io.", dns.TypeA, true)); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Errorf("%s after the switch: %s %v, want NXDOMAIN and no cached answer", network, dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
	if err := e.Switch("outage", false, nil); err != nil {
		t.Fatal(err)
	}
	if r := w.ask(t, "udp", query("mainnet.infura.io.", dns.TypeA, true)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("switched off again: %s %v, want the answer", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if n := up.Calls(); n != 1 {
		t.Errorf("upstream asked %d times, want once (then the cache; never while blocked)", n)
	}
}
