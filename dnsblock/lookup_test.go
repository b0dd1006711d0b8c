package dnsblock

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// TestLookup: unicorn's own lookups (for the proxy) fail over, use the
// cache the DNS front end fills, and never ask the rules.
func TestLookup(t *testing.T) {
	up := dnstest.NewUpstream().
		WithAnswer("api.example.", "api.example. 300 IN A 192.0.2.7", "api.example. 300 IN AAAA 2001:db8::7").
		WithAnswer("mainnet.infura.io.", "mainnet.infura.io. 60 IN A 192.0.2.9")
	addr, _ := up.Start(t)
	dead := dnstest.NewUpstream().WithSilence()
	deadAddr, _ := dead.Start(t)
	b := &blocker{rule: testRule(rules.ActionReject, rules.Params{})}
	s, err := NewServer(Config{
		Decider:   b,
		Upstreams: []string{deadAddr, addr},
		Timeout:   400 * time.Millisecond,
		Logger:    newTestLogger(&logBuffer{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()

	got, err := s.Lookup(context.Background(), "API.example")
	want := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Lookup = %v, %v; want %v (IPv4 first), found past the silent first upstream", got, err, want)
	}
	if n := b.calls.Load(); n != 0 {
		t.Errorf("Lookup asked the rules %d times; unicorn's own lookups never go through them", n)
	}
	// A name the rules block still resolves for unicorn itself.
	if got, err := s.Lookup(context.Background(), "mainnet.infura.io"); err != nil || len(got) != 1 {
		t.Errorf("Lookup of a blocked name = %v, %v; want the upstream's answer", got, err)
	}
	calls := up.Calls()
	again, err := s.Lookup(context.Background(), "api.example")
	if err != nil || len(again) != 2 || up.Calls() != calls {
		t.Errorf("second Lookup = %v, %v with %d more upstream calls; want it from the cache", again, err, up.Calls()-calls)
	}
	again[0] = netip.MustParseAddr("198.51.100.1") // the caller owns the slice
	if third, _ := s.Lookup(context.Background(), "api.example"); third[0] != want[0] {
		t.Errorf("a caller's change reached the cache: %v", third)
	}
	if name, ok := s.Names().Lookup(want[0]); !ok || name != "api.example" {
		t.Errorf("Names().Lookup(%v) = %q, %v; own lookups are remembered too", want[0], name, ok)
	}
	if _, err := s.Lookup(context.Background(), "missing.example"); err == nil {
		t.Error("Lookup of a name without addresses: no error")
	}
}

// TestServeAllSharesTheCache: one server on two addresses answers from one
// cache, so a name asked on one is cached for the other.
func TestServeAllSharesTheCache(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("api.example.", "api.example. 300 IN A 192.0.2.7")
	addr, _ := up.Start(t)
	s, err := NewServer(Config{Decider: &blocker{}, Upstreams: []string{addr}, Logger: newTestLogger(&logBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	var udps []net.PacketConn
	var tcps []net.Listener
	for _, host := range []string{"127.0.0.1", "127.0.0.2"} {
		pc, err := net.ListenPacket("udp", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		udps, tcps = append(udps, pc), append(tcps, l)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServeAll(context.Background(), udps, tcps) }()
	ask := func(network, server string) {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("api.example.", dns.TypeA)
		r, _, err := (&dns.Client{Net: network, Timeout: 2 * time.Second}).Exchange(m, server)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("%s %s: %v %v", network, server, err, r)
		}
	}
	ask("udp", udps[0].LocalAddr().String())
	ask("udp", udps[1].LocalAddr().String())
	ask("tcp", tcps[1].Addr().String())
	if n := up.Calls(); n != 1 {
		t.Errorf("upstream asked %d times, want once: the second address has the same cache", n)
	}
	s.Shutdown()
	if err := <-served; err != nil {
		t.Errorf("ServeAll: %v", err)
	}
}
