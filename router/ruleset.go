package router

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Table is the one nftables table unicorn owns; nothing else is touched.
const Table = "unicorn"

// Family is the table's nftables family: one table for IPv4 and IPv6.
const Family = "inet"

// Params is everything the ruleset is generated from.
type Params struct {
	// LAN is the interface the devices are on. MANDATORY.
	LAN string
	// TransparentPort and DNSPort are where the LAN's TCP and DNS are
	// redirected to (on the address of the LAN interface). MANDATORY.
	TransparentPort, DNSPort uint16
	// Scenarios are the engine's scenarios in priority order; those that
	// are on become rules, in that order, first match wins as in the engine.
	Scenarios []rules.ScenarioState
	// Learned are addresses learned from DNS for the names of a rule.
	Learned map[*rules.Rule][]netip.Addr
	// Comment marks the table: who installed it, until when (see Meta).
	Comment string
	// Gen is the ruleset's generation, 1 to MaxGen (0 counts as 1): the
	// forward chain lets the packets of a flow decided under this very
	// generation through at once (see ForwardRules). Each change of the
	// rules or the sets takes the next one (NextGen).
	Gen uint32
}

// The generation mark: the bits of the conntrack mark that unicorn owns.
// A forwarded flow from the LAN that the rules let through gets the
// ruleset's generation in these bits; its later packets, both ways, are
// accepted by one comparison instead of crossing every rule again. A
// change of the rules or of the learned sets installs a new generation,
// so the next packet of every open flow is decided again by the rules now
// in force. The other bits of the mark stay as they are: other firewalls
// (connmark policy routing, VPN clients) keep theirs.
const (
	GenMask uint32 = 0xfff00000
	// MaxGen is the highest generation; NextGen wraps to 1 after it.
	MaxGen uint32 = GenMask >> genShift
)

// genShift places a generation in GenMask.
const genShift = 20

// NextGen returns the generation after g.
func NextGen(g uint32) uint32 {
	if g >= MaxGen {
		return 1
	}
	return g + 1
}

// Regenerate returns the nft commands that put generation gen in force
// without replacing the table (after a change of the learned sets, in the
// same transaction): the forward chain's rules, replaced.
func Regenerate(lan string, gen uint32) []string {
	out := []string{fmt.Sprintf("flush chain %s %s forward", Family, Table)}
	for _, l := range ForwardRules(lan, gen) {
		out = append(out, fmt.Sprintf("add rule %s %s forward %s", Family, Table, l))
	}
	return out
}

// ForwardRules returns the rules of the forward chain for generation gen
// on the LAN interface lan (see GenMask): a flow decided under gen passes
// at once; every other packet from the LAN crosses the decide chain,
// whose matching rule rejects, drops or returns; a packet that returns is
// let through and its flow marked with gen.
func ForwardRules(lan string, gen uint32) []string {
	if gen == 0 || gen > MaxGen {
		gen = 1
	}
	lan = quote(lan)
	mark := gen << genShift
	return []string{
		fmt.Sprintf("ct mark and 0x%08x == 0x%08x accept", GenMask, mark),
		fmt.Sprintf("iifname %s jump decide", lan),
		fmt.Sprintf("iifname %s ct mark set ct mark and 0x%08x or 0x%08x", lan, ^GenMask, mark),
	}
}

// Script returns the nft script that installs the table from scratch in
// one transaction: it creates the table if missing, deletes it, and
// defines it again, so that applying it replaces whatever unicorn had
// installed and never touches another table.
func Script(p Params) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {}\ndelete table %s %s\n", Family, Table, Family, Table)
	b.WriteString(Define(p))
	return b.String()
}

// Define returns the table definition alone (what --dry-run prints).
func Define(p Params) string {
	var b strings.Builder
	lan := quote(p.LAN)
	fmt.Fprintf(&b, "table %s %s {\n", Family, Table)
	if p.Comment != "" {
		fmt.Fprintf(&b, "\tcomment %s\n", quote(p.Comment))
	}
	rs := ruleLines(&p)
	for _, s := range rs.sets {
		fmt.Fprintf(&b, "\n\tset %s {\n\t\ttype %s\n\t\tflags timeout\n\t\ttimeout %s\n", s.name, s.typ, learnedTimeout)
		if len(s.elems) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(s.elems, ", "))
		}
		b.WriteString("\t}\n")
	}
	fmt.Fprintf(&b, `
	# Every DNS question from the LAN, whatever resolver the device was
	# configured with, goes to unicorn's DNS; every other TCP connection
	# not for this machine to the transparent listener.
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %[1]s meta l4proto { tcp, udp } th dport 53 redirect to :%[2]d
		iifname %[1]s fib daddr type local accept
		iifname %[1]s meta l4proto tcp redirect to :%[3]d
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		iifname %[1]s oifname != %[1]s masquerade
	}

	# What is still forwarded (UDP, ICMP, other protocols) crosses the
	# rules of the scenarios that are on, in priority order, once per
	# flow and ruleset generation (the conntrack mark's bits %[4]s).
	chain forward {
		type filter hook forward priority filter; policy accept;
`, lan, p.DNSPort, p.TransparentPort, fmt.Sprintf("0x%08x", GenMask))
	for _, l := range ForwardRules(p.LAN, p.Gen) {
		fmt.Fprintf(&b, "\t\t%s\n", l)
	}
	b.WriteString("\t}\n\n\tchain decide {\n")
	for _, l := range rs.lines {
		fmt.Fprintf(&b, "\t\t%s\n", l)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// maxComment keeps rule comments within what nft stores (128 bytes).
const maxComment = 120

// learnedTimeout is how long an address learned from DNS stays in a set
// unless it is seen again.
const learnedTimeout = "1h"

type nftSet struct {
	name, typ string
	elems     []string
}

type generated struct {
	sets  []nftSet
	lines []string
}

// SetName is the name of the set holding the learned IPv4 (v6 false) or
// IPv6 addresses of the rule at priority position i.
func SetName(i int, v6 bool) string {
	if v6 {
		return "n" + strconv.Itoa(i) + "_6"
	}
	return "n" + strconv.Itoa(i) + "_4"
}

// ruleLines turns the rules of the scenarios that are on into nft rules.
// Each unicorn rule becomes up to one line per address family, kind of
// destination (its prefixes, or the set of addresses learned for its
// names) and transport (for rules with ports); lines keep the engine's
// order, so the first matching line is the first matching rule.
func ruleLines(p *Params) generated {
	var g generated
	i := 0
	for _, st := range p.Scenarios {
		if !st.On {
			continue
		}
		for _, r := range st.Scenario.Rules {
			g.rule(i, st, r, p.Learned[r])
			i++
		}
	}
	return g
}

func (g *generated) rule(i int, st rules.ScenarioState, r *rules.Rule, learned []netip.Addr) {
	if r.Modifiers != nil {
		// probability, first, every, windows and phases decide flow by
		// flow and over time: a packet filter cannot; such rules act at
		// the DNS and transparent TCP layers only, and here as if absent.
		g.lines = append(g.lines, "# "+strings.ReplaceAll(r.Ref(), "\n", " ")+": has modifiers; decided by unicorn at the DNS and TCP layers only")
		return
	}
	svc := r.Target()
	named := hasNames(r)
	if named {
		for _, v6 := range []bool{false, true} {
			s := nftSet{name: SetName(i, v6), typ: "ipv4_addr"}
			if v6 {
				s.typ = "ipv6_addr"
			}
			for _, a := range learned {
				if a.Is6() == v6 {
					s.elems = append(s.elems, a.String())
				}
			}
			g.sets = append(g.sets, s)
		}
	}
	comment := r.Ref() + ": " + r.Action.String()
	if len(comment) > maxComment {
		comment = comment[:maxComment]
	}
	comment = quote(comment)
	for _, v6 := range []bool{false, true} {
		fam, ver := "ip", 4
		if v6 {
			fam, ver = "ip6", 6
		}
		var match []string
		if scope, all := intersect(st.Clients, r.Clients()); !all {
			ps := ofFamily(scope, v6)
			if len(ps) == 0 {
				continue // no device of this family is in scope
			}
			match = append(match, fmt.Sprintf("%s saddr %s", fam, prefixSet(ps)))
		}
		var dests []string
		switch {
		case svc == nil:
			dests = []string{fmt.Sprintf("meta nfproto ipv%d", ver)}
		default:
			if ps := ofFamily(svc.Prefixes, v6); len(ps) > 0 {
				dests = append(dests, fmt.Sprintf("%s daddr %s", fam, prefixSet(ps)))
			}
			if named {
				dests = append(dests, fmt.Sprintf("%s daddr @%s", fam, SetName(i, v6)))
			}
			if len(dests) == 0 && len(svc.Prefixes) == 0 {
				dests = []string{fmt.Sprintf("meta nfproto ipv%d", ver)} // ports only
			}
		}
		var transports []string
		if svc != nil && len(svc.Ports) > 0 {
			for _, pr := range []rules.Proto{rules.ProtoUDP, rules.ProtoTCP} {
				if ports := portSet(svc.Ports, pr); ports != "" {
					transports = append(transports, fmt.Sprintf("%s dport %s", pr, ports))
				}
			}
			if len(transports) == 0 {
				continue
			}
		} else {
			transports = []string{""}
		}
		for _, d := range dests {
			for _, tp := range transports {
				line := strings.Join(slices.DeleteFunc(append(slices.Clone(match), d, tp), func(s string) bool { return s == "" }), " ")
				for _, v := range verdicts(r.Action, tp) {
					g.lines = append(g.lines, line+" "+v+" comment "+comment)
				}
			}
		}
	}
}

// hasNames reports whether r matches names, and so has sets of learned
// addresses (a rule with modifiers has no nft rules, and no sets).
func hasNames(r *rules.Rule) bool {
	svc := r.Target()
	return r.Modifiers == nil && svc != nil && (svc.NumNames() > 0 || len(svc.Regex) > 0)
}

// verdicts maps an action onto the firewall, as DESIGN.md's table says:
// reject is a reset (TCP) or an ICMP port unreachable, blackhole a drop,
// sinkhole (connect nowhere) a reject; every other action passes this
// layer untouched (return: the forward chain marks the flow and accepts
// it), which also ends the search, as the first matching rule does in
// the engine.
func verdicts(a rules.Action, transport string) []string {
	switch a {
	case rules.ActionReject, rules.ActionSinkhole:
		switch {
		case strings.HasPrefix(transport, "tcp"):
			return []string{"reject with tcp reset"}
		case strings.HasPrefix(transport, "udp"):
			return []string{"reject with icmpx type port-unreachable"}
		}
		return []string{"meta l4proto tcp reject with tcp reset", "reject with icmpx type port-unreachable"}
	case rules.ActionBlackhole:
		return []string{"drop"}
	}
	return []string{"return"}
}

// intersect returns the devices in both scopes (nil: every device); all
// reports that both are nil.
func intersect(a, b []netip.Prefix) (scope []netip.Prefix, all bool) {
	switch {
	case a == nil && b == nil:
		return nil, true
	case a == nil:
		return b, false
	case b == nil:
		return a, false
	}
	for _, p := range a {
		for _, q := range b {
			if !p.Overlaps(q) {
				continue
			}
			// Prefixes overlap only when one contains the other: the
			// longer one is the intersection.
			if p.Bits() >= q.Bits() {
				scope = append(scope, p)
			} else {
				scope = append(scope, q)
			}
		}
	}
	return scope, false
}

func ofFamily(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked()
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

// unmapBits is what an IPv4-mapped prefix loses when unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// prefixSet is an nft anonymous set of prefixes, with the prefixes that
// lie inside another one left out (nft refuses overlapping intervals).
func prefixSet(ps []netip.Prefix) string {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	var out []string
	var last netip.Prefix
	for _, p := range ps {
		if last.IsValid() && last.Bits() <= p.Bits() && last.Contains(p.Addr()) {
			continue
		}
		last = p
		if p.IsSingleIP() {
			out = append(out, p.Addr().String())
		} else {
			out = append(out, p.String())
		}
	}
	return "{ " + strings.Join(out, ", ") + " }"
}

// portSet is an nft set of the ports of proto in rs (ranges without a
// protocol count for both), overlapping ranges merged; "" if none.
func portSet(rs []rules.PortRange, proto rules.Proto) string {
	var sel [][2]int
	for _, r := range rs {
		if r.Proto == rules.ProtoAny || r.Proto == proto {
			sel = append(sel, [2]int{int(r.Lo), int(r.Hi)})
		}
	}
	if len(sel) == 0 {
		return ""
	}
	slices.SortFunc(sel, func(a, b [2]int) int { return cmp.Compare(a[0], b[0]) })
	merged := [][2]int{sel[0]}
	for _, r := range sel[1:] {
		m := &merged[len(merged)-1]
		if r[0] <= m[1]+1 {
			m[1] = max(m[1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	var out []string
	for _, r := range merged {
		if r[0] == r[1] {
			out = append(out, strconv.Itoa(r[0]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", r[0], r[1]))
		}
	}
	return "{ " + strings.Join(out, ", ") + " }"
}

// quote makes s an nft string: double quotes, which nft strings cannot
// contain, become single quotes.
func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, "'") + `"`
}
