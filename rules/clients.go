package rules

import (
	"net/netip"
	"strings"
)

// ClientSet is a set of client address ranges, used by front ends to decide
// whom they serve. The zero value contains nothing.
type ClientSet struct {
	prefixes []netip.Prefix
}

// NewClientSet returns the set of the given prefixes.
func NewClientSet(prefixes ...netip.Prefix) ClientSet {
	return ClientSet{prefixes: append([]netip.Prefix(nil), prefixes...)}
}

// DefaultClients is whom unicorn serves unless told otherwise: loopback,
// private (RFC 1918, RFC 6598 shared, IPv6 ULA) and link-local ranges. It
// keeps unicorn from being an open resolver or proxy on the internet.
func DefaultClients() ClientSet {
	var ps []netip.Prefix
	for _, s := range []string{
		"127.0.0.0/8", "::1/128", // loopback
		"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", // RFC 1918
		"100.64.0.0/10",  // RFC 6598 shared address space (carrier NAT, hotspots)
		"169.254.0.0/16", // link-local
		"fc00::/7",       // unique local
		"fe80::/10",      // link-local
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ClientSet{prefixes: ps}
}

// Empty reports whether the set has no prefixes (the zero value).
func (c ClientSet) Empty() bool { return len(c.prefixes) == 0 }

// Contains reports whether a is in the set. IPv4-mapped IPv6 addresses are
// treated as IPv4, and an IPv6 zone is ignored.
func (c ClientSet) Contains(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range c.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c ClientSet) String() string {
	s := make([]string, len(c.prefixes))
	for i, p := range c.prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// ParsePrefix parses an address or CIDR ("192.0.2.1", "2001:db8::/32") into
// a prefix; a bare address is a single-address prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
