package dnsblock

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestClockIsBounded(t *testing.T) {
	c := newClock[int, int](4)
	for i := range 100 {
		c.put(i, i)
		if c.len() > 4 {
			t.Fatalf("%d entries, bound is 4", c.len())
		}
	}
	if v, ok := c.get(99); !ok || v != 99 {
		t.Errorf("the newest entry is gone")
	}
	// A recently read entry survives the next eviction.
	c.get(97)
	c.put(100, 100)
	if _, ok := c.get(97); !ok {
		t.Errorf("a referenced entry was evicted first")
	}
}

func TestNamesBounded(t *testing.T) {
	n := newNames(8)
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		n.record(fmt.Sprintf("host%d.example", i), []dns.RR{&dns.A{A: a.AsSlice()}})
	}
	if n.Len() != 8 {
		t.Errorf("Len %d, want 8", n.Len())
	}
	if name, ok := n.Lookup(netip.MustParseAddr("192.0.2.99")); !ok || name != "host99.example" {
		t.Errorf("Lookup(newest) = %q, %v", name, ok)
	}
}

func TestTTLOffsets(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.Response = true
	for _, s := range []string{"a.example. 10 IN CNAME b.example.", "b.example. 20 IN A 192.0.2.1"} {
		rr, _ := dns.NewRR(s)
		m.Answer = append(m.Answer, rr)
	}
	soa, _ := dns.NewRR("example. 30 IN SOA ns.example. h.example. 1 2 3 4 5")
	m.Ns = append(m.Ns, soa)
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAnswer(m, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if a.qEnd != 12+len("a.example.")+1 {
		t.Errorf("qEnd %d", a.qEnd)
	}
	var got []uint32
	for _, o := range a.ttls {
		got = append(got, uint32(wire[o])<<24|uint32(wire[o+1])<<16|uint32(wire[o+2])<<8|uint32(wire[o+3]))
	}
	if fmt.Sprint(got) != "[10 20 30]" {
		t.Errorf("TTLs at offsets %v = %v, want [10 20 30]", a.ttls, got)
	}
	if want := time.Unix(10, 0); !a.expires.Equal(want) {
		t.Errorf("expires %v, want %v (the smallest TTL)", a.expires, want)
	}
	for _, bad := range [][]byte{nil, wire[:11], wire[:len(wire)-1], append(wire[:len(wire):len(wire)], 0)} {
		if _, _, err := ttlOffsets(bad); err == nil {
			t.Errorf("ttlOffsets accepted %d bad bytes", len(bad))
		}
	}
}
