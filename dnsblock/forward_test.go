package dnsblock

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// allowWorld starts a server that allows everything, forwarding to ups.
func allowWorld(t *testing.T, timeout time.Duration, ups ...string) *world {
	t.Helper()
	return newWorld(t, Config{Decider: &blocker{}, Upstreams: ups, Timeout: timeout})
}

func aRecords(r *dns.Msg) []string {
	var s []string
	for _, rr := range r.Answer {
		s = append(s, rr.String())
	}
	return s
}

func TestForwardAndCache(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1", "example.com. 300 IN AAAA 2001:db8::1")
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)

	r := w.ask(t, "udp", query("example.com.", dns.TypeA, true))
	if got := aRecords(r); len(got) != 1 || got[0] != "example.com.\t300\tIN\tA\t192.0.2.1" {
		t.Fatalf("answer %v, want the upstream's", got)
	}
	if r.Rcode != dns.RcodeSuccess || !r.RecursionAvailable || r.IsEdns0() == nil {
		t.Errorf("rcode %s RA %v OPT %v", dns.RcodeToString[r.Rcode], r.RecursionAvailable, r.IsEdns0())
	}
	if up.Calls() != 1 {
		t.Fatalf("upstream calls %d, want 1", up.Calls())
	}

	// From the cache, 100 s later, in another case, over TCP, without EDNS.
	w.clock.Advance(100 * time.Second)
	for _, network := range transports {
		r = w.ask(t, network, query("EXAMPLE.com.", dns.TypeA, true))
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 200 {
			t.Errorf("%s: cached answer %v, want TTL 200", network, r.Answer)
		}
		if r.Answer[0].Header().Name != "EXAMPLE.com." {
			t.Errorf("%s: owner %q; a compressed owner follows the question as asked", network, r.Answer[0].Header().Name)
		}
	}
	if up.Calls() != 1 {
		t.Errorf("upstream calls %d after cache hits, want 1", up.Calls())
	}
	r = w.ask(t, "udp", query("example.com.", dns.TypeA, false))
	if r.IsEdns0() != nil {
		t.Errorf("client without EDNS got OPT %v", r.IsEdns0())
	}
	// Another type is another cache entry.
	w.ask(t, "udp", query("example.com.", dns.TypeAAAA, true))
	if up.Calls() != 2 {
		t.Errorf("upstream calls %d after AAAA, want 2", up.Calls())
	}
	// Expired: asked again.
	w.clock.Advance(201 * time.Second)
	r = w.ask(t, "udp", query("example.com.", dns.TypeA, true))
	if up.Calls() != 3 || r.Answer[0].Header().Ttl != 300 {
		t.Errorf("after expiry: calls %d, answer %v; want 3 and a fresh TTL", up.Calls(), r.Answer)
	}
}

func TestNegativeCache(t *testing.T) {
	up := dnstest.NewUpstream() // NXDOMAIN, SOA TTL 300 minimum 30
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)
	r := w.ask(t, "udp", query("nope.example.", dns.TypeA, true))
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Fatalf("%v, want NXDOMAIN with SOA", r)
	}
	w.clock.Advance(10 * time.Second)
	r = w.ask(t, "udp", query("nope.example.", dns.TypeA, true))
	if up.Calls() != 1 || r.Rcode != dns.RcodeNameError {
		t.Errorf("calls %d, rcode %s; want the cached NXDOMAIN", up.Calls(), dns.RcodeToString[r.Rcode])
	}
	w.clock.Advance(21 * time.Second) // past the SOA minimum of 30 s
	w.ask(t, "udp", query("nope.example.", dns.TypeA, true))
	if up.Calls() != 2 {
		t.Errorf("calls %d, want 2: negative answers live min(SOA TTL, MINIMUM)", up.Calls())
	}
}

func TestServFailNotCached(t *testing.T) {
	up := dnstest.NewUpstream().WithRcode(dns.RcodeServerFailure)
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)
	for i := range 3 {
		r := w.ask(t, "udp", query("example.com.", dns.TypeA, true))
		if r.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
		}
		if up.Calls() != i+1 {
			t.Errorf("calls %d after %d queries: SERVFAIL was cached", up.Calls(), i+1)
		}
	}
}

// closedPort returns a loopback UDP address nobody listens on.
func closedPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestUpstreamDownIsServFailWithinTimeout(t *testing.T) {
	silent := dnstest.NewUpstream().WithSilence()
	silentAddr, _ := silent.Start(t)
	const timeout = 300 * time.Millisecond
	for name, ups := range map[string][]string{
		"silent": {silentAddr},
		"closed": {closedPort(t)},
		"both":   {closedPort(t), silentAddr},
	} {
		t.Run(name, func(t *testing.T) {
			w := allowWorld(t, timeout, ups...)
			for _, network := range transports {
				start := time.Now()
				r := w.ask(t, network, query("example.com.", dns.TypeA, true))
				took := time.Since(start)
				if r.Rcode != dns.RcodeServerFailure {
					t.Errorf("%s: rcode %s, want SERVFAIL", network, dns.RcodeToString[r.Rcode])
				}
				if took > timeout+500*time.Millisecond {
					t.Errorf("%s: SERVFAIL after %v, want within %v", network, took, timeout)
				}
				if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeNoReachableAuthority {
					t.Errorf("%s: EDE %v, want No Reachable Authority", network, e)
				}
			}
		})
	}
}

func TestFailover(t *testing.T) {
	good := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	goodAddr, _ := good.Start(t)
	silent := dnstest.NewUpstream().WithSilence()
	silentAddr, _ := silent.Start(t)
	broken := dnstest.NewUpstream().WithRcode(dns.RcodeRefused)
	brokenAddr, _ := broken.Start(t)
	for name, ups := range map[string][]string{
		"closed": {closedPort(t), goodAddr},
		"silent": {silentAddr, goodAddr},
		"broken": {brokenAddr, goodAddr},
	} {
		t.Run(name, func(t *testing.T) {
			w := allowWorld(t, time.Second, ups...)
			r := w.ask(t, "udp", query("example.com.", dns.TypeA, true))
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("%v, want the second upstream's answer", r)
			}
		})
	}
}

func TestTruncatedUpstreamRetriedOverTCP(t *testing.T) {
	up := dnstest.NewUpstream().WithTruncation().WithAnswer("big.example.", "big.example. 300 IN TXT \"hello\"")
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)
	r := w.ask(t, "udp", query("big.example.", dns.TypeTXT, true))
	if r.Truncated || len(r.Answer) != 1 {
		t.Errorf("TC %v, answer %v; want the full TCP answer", r.Truncated, r.Answer)
	}
	if up.TCPCalls() != 1 {
		t.Errorf("TCP calls %d, want 1", up.TCPCalls())
	}
}

func TestLargeAnswerTruncatedForSmallClient(t *testing.T) {
	var txts []string
	for i := range 20 {
		txts = append(txts, "big.example. 300 IN TXT \""+strings.Repeat("x", 50)+string(rune('a'+i))+"\"")
	}
	up := dnstest.NewUpstream().WithAnswer("big.example.", txts...)
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)
	// TCP first, to fill the cache; then UDP without EDNS (512 bytes).
	if r := w.ask(t, "tcp", query("big.example.", dns.TypeTXT, false)); len(r.Answer) != 20 {
		t.Fatalf("TCP: %d answers, want 20", len(r.Answer))
	}
	raw, err := w.exchangeRaw(query("big.example.", dns.TypeTXT, false))
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) > 512 || !r.Truncated || r.Question[0].Name != "big.example." {
		t.Errorf("%d bytes, TC %v, question %v; want ≤ 512 with TC", len(raw), r.Truncated, r.Question)
	}
}

func TestNamesRememberForwardedAddresses(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("www.example.com.",
		"www.example.com. 300 IN CNAME cdn.example.net.",
		"cdn.example.net. 300 IN A 192.0.2.7",
		"cdn.example.net. 300 IN AAAA 2001:db8::7",
	).WithAnswer("other.example.", "other.example. 300 IN A 192.0.2.8")
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)
	w.ask(t, "udp", query("WWW.Example.com.", dns.TypeA, true))
	w.ask(t, "tcp", query("www.example.com.", dns.TypeAAAA, true))
	names := w.srv.Names()
	for _, a := range []string{"192.0.2.7", "2001:db8::7", "::ffff:192.0.2.7"} {
		if n, ok := names.Lookup(mustAddr(a)); !ok || n != "www.example.com" {
			t.Errorf("Lookup(%s) = %q, %v; want www.example.com", a, n, ok)
		}
	}
	if _, ok := names.Lookup(mustAddr("192.0.2.8")); ok {
		t.Error("an address never answered is known")
	}
	// The last name seen wins.
	w.ask(t, "udp", query("other.example.", dns.TypeA, true))
	if n, _ := names.Lookup(mustAddr("192.0.2.8")); n != "other.example" {
		t.Errorf("Lookup(192.0.2.8) = %q", n)
	}
}

func TestCacheOff(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	w := newWorld(t, Config{Decider: &blocker{}, Upstreams: []string{addr}, CacheSize: -1})
	for range 3 {
		w.ask(t, "udp", query("example.com.", dns.TypeA, true))
	}
	if up.Calls() != 3 {
		t.Errorf("calls %d with the cache off, want 3", up.Calls())
	}
}

// TestConcurrentQueries runs blocked, cached and missed questions from many
// goroutines against one small cache, for the race detector.
func TestConcurrentQueries(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	s, err := NewServer(Config{
		Decider:   &blocker{rule: testRule(rules.ActionReject, rules.Params{})},
		Upstreams: []string{addr}, CacheSize: 4, NamesSize: 4, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"example.com.", "infura.io.", "a.example.", "b.example.", "c.example.", "d.example.", "e.example."}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			w := newFakeWriter(g%2 == 0)
			for i := range 200 {
				m := query(names[(g+i)%len(names)], dns.TypeA, i%3 == 0)
				s.ServeDNS(w, m)
				r := new(dns.Msg)
				if err := r.Unpack(w.last); err != nil || r.Id != m.Id {
					t.Errorf("reply %v, %v to query %d", r, err, m.Id)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := s.cache.c.len(); n > 4 {
		t.Errorf("cache holds %d, bound 4", n)
	}
}

func TestIPv6Loopback(t *testing.T) {
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN AAAA 2001:db8::1")
	addr, _ := up.Start(t)
	s, err := NewServer(Config{Decider: &blocker{}, Upstreams: []string{addr}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(t.Context(), pc, nil)
	t.Cleanup(func() { s.Shutdown() })
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(query("example.com.", dns.TypeAAAA, true), pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("::1 client (a default client) got %v", r)
	}
}
