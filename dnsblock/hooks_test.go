package dnsblock

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// TestCanaryDomain: use-application-dns.net is NXDOMAIN, always (no rule
// asks for it), over UDP and TCP and in any letter case, and never goes
// upstream; its subdomains are forwarded like any name.
func TestCanaryDomain(t *testing.T) {
	up := dnstest.NewUpstream().
		WithAnswer("use-application-dns.net.", "use-application-dns.net. 300 IN A 192.0.2.7").
		WithAnswer("x.use-application-dns.net.", "x.use-application-dns.net. 300 IN A 192.0.2.8")
	addr, _ := up.Start(t)
	w := newWorld(t, Config{Decider: &blocker{}, Upstreams: []string{addr}})
	for _, network := range transports {
		for _, name := range []string{"use-application-dns.net.", "Use-Application-DNS.NET."} {
			r := w.ask(t, network, query(name, dns.TypeA, true))
			if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
				t.Errorf("%s %s: %s %v, want NXDOMAIN", network, name, dns.RcodeToString[r.Rcode], r.Answer)
			}
		}
	}
	if up.Calls() != 0 {
		t.Errorf("the canary went upstream %d times", up.Calls())
	}
	if r := w.ask(t, "udp", query("x.use-application-dns.net.", dns.TypeA, false)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("subdomain of the canary: %s %v, want the upstream's answer", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

// TestOnBlocked: the hook sees every blocked question, over UDP and TCP,
// with the client and a name it may keep, and no allowed one.
func TestOnBlocked(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	var mu sync.Mutex
	var got []string
	w := newWorldWith(t, Config{Decider: &blocker{rule: testRule(rules.ActionReject, rules.Params{})}, Upstreams: []string{addr}},
		func(s *Server) {
			s.OnBlocked(func(client netip.Addr, name string, d rules.Decision) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, client.String()+" "+name+" "+d.Action.String())
			})
		})
	for _, network := range transports {
		w.ask(t, network, query("mainnet.infura.io.", dns.TypeA, false))
		w.ask(t, network, query("example.com.", dns.TypeA, false))
	}
	mu.Lock()
	defer mu.Unlock()
	want := "127.0.0.1 mainnet.infura.io. reject"
	if len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("hook saw %q, want %q twice", got, want)
	}
}
