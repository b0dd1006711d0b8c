package rules

import "net/netip"

// addrKey is a masked address of one prefix length; IPv4 addresses are kept
// in their 4-byte form so that a /24 and a ::ffff:0:0/120 never collide.
type addrKey struct {
	addr [16]byte
	bits uint8
	is4  bool
}

// addrTable maps address prefixes to rule lists. A lookup costs one map
// probe per distinct prefix length in the table (at most 33 for IPv4 and
// 129 for IPv6, a handful in practice), whatever the number of prefixes.
type addrTable struct {
	m     map[addrKey]uint32
	lens4 []uint8 // distinct IPv4 prefix lengths present, longest first
	lens6 []uint8
	seen4 [33]bool
	seen6 [129]bool
}

func newAddrTable() *addrTable { return &addrTable{m: make(map[addrKey]uint32)} }

func makeKey(a netip.Addr, bits int) addrKey {
	p, _ := a.Prefix(bits)
	return addrKey{addr: p.Addr().As16(), bits: uint8(bits), is4: a.Is4()}
}

// get returns the rule list of exactly prefix p, 0 when none.
func (t *addrTable) get(p netip.Prefix) uint32 { return t.m[makeKey(p.Addr(), p.Bits())] }

func (t *addrTable) set(p netip.Prefix, list uint32) {
	bits := p.Bits()
	if p.Addr().Is4() {
		if !t.seen4[bits] {
			t.seen4[bits] = true
			t.lens4 = insertDesc(t.lens4, uint8(bits))
		}
	} else if !t.seen6[bits] {
		t.seen6[bits] = true
		t.lens6 = insertDesc(t.lens6, uint8(bits))
	}
	t.m[makeKey(p.Addr(), bits)] = list
}

func insertDesc(s []uint8, v uint8) []uint8 {
	i := 0
	for i < len(s) && s[i] > v {
		i++
	}
	s = append(s, 0)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// each calls fn with the rule list of every prefix containing a, until fn
// returns false.
func (t *addrTable) each(a netip.Addr, fn func(list uint32) bool) {
	if len(t.m) == 0 {
		return
	}
	a = a.Unmap().WithZone("")
	lens := t.lens6
	if a.Is4() {
		lens = t.lens4
	}
	for _, bits := range lens {
		if l, ok := t.m[makeKey(a, int(bits))]; ok && !fn(l) {
			return
		}
	}
}
