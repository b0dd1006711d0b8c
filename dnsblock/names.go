package dnsblock

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// DefaultNamesSize is how many addresses Names remembers when
// Config.NamesSize is zero.
const DefaultNamesSize = 65536

// Names remembers, for each address seen in a forwarded A or AAAA answer,
// the name a client asked for when it got that address. IP-level front ends
// use it to attribute a connection to a name. Memory is bounded: when full,
// the least recently seen addresses are forgotten first (CLOCK eviction).
// A Names is safe for concurrent use.
type Names struct {
	c *clock[netip.Addr, string]
}

func newNames(max int) *Names {
	return &Names{c: newClock[netip.Addr, string](max)}
}

// Lookup returns the name addr was last seen in an answer for: the name as
// the client asked it, in lower case, without the trailing dot (for a
// CNAME chain, the first name of the chain). IPv4-mapped IPv6 addresses are
// looked up as IPv4.
func (n *Names) Lookup(addr netip.Addr) (name string, ok bool) {
	return n.c.get(addr.Unmap())
}

// Len returns how many addresses are remembered.
func (n *Names) Len() int { return n.c.len() }

// record remembers every A and AAAA address in answer as belonging to name
// (lower case, no trailing dot). It returns the addresses, so that cache
// hits can refresh them without parsing again.
func (n *Names) record(name string, answer []dns.RR) []netip.Addr {
	var addrs []netip.Addr
	for _, rr := range answer {
		var a netip.Addr
		switch rr := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(rr.A)
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(rr.AAAA)
		default:
			continue
		}
		if a = a.Unmap(); a.IsValid() {
			addrs = append(addrs, a)
			n.c.put(a, name)
		}
	}
	return addrs
}

// refresh marks addrs as seen again for name.
func (n *Names) refresh(name string, addrs []netip.Addr) {
	for _, a := range addrs {
		n.c.put(a, name)
	}
}

// namesKey turns a lower-case question name into the form Names stores.
func namesKey(lower string) string {
	if len(lower) > 1 {
		return strings.TrimSuffix(lower, ".")
	}
	return lower
}
