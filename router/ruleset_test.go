package router

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/chaos-unicorn/unicorn/testbed"
)

const testRules = `
scenario: t
services:
  cluster: {ips: [203.0.113.20, 203.0.113.0/24, "2001:db8:3::/64"], ports: [30303, 30300-30310/udp, 443/tcp]}
  infura: {domains: [infura.io]}
devices: {qa: [192.0.2.10/32]}
rules:
  - {hosts: [ipfs.infura.io], action: allow}
  - {service: infura, action: blackhole}
  - {service: cluster, action: reject, clients: [qa]}
  - {ports: [853], action: reject}
  - {service: infura, action: reject, probability: 0.5}
`

func testEngine(t *testing.T) *rules.Engine {
	t.Helper()
	set, err := rules.LoadFS(fstest.MapFS{"t.yaml": {Data: []byte(testRules)}}, "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func testParams(t *testing.T) Params {
	e := testEngine(t)
	infura := e.Scenarios()[0].Scenario.Rules[1]
	return Params{
		LAN: "lan0", TransparentPort: 15001, DNSPort: 53, Scenarios: e.Scenarios(),
		Learned: map[*rules.Rule][]netip.Addr{infura: {netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:3::10")}},
		Comment: "unicorn test", Gen: 7,
	}
}

func TestDefine(t *testing.T) {
	def := Define(testParams(t))
	for _, want := range []string{
		`iifname "lan0" meta l4proto { tcp, udp } th dport 53 redirect to :53`,
		`iifname "lan0" meta l4proto tcp redirect to :15001`,
		`set n1_4 {`, `elements = { 203.0.113.10 }`, `elements = { 2001:db8:3::10 }`,
		// an allowed flow returns to the forward chain, which marks it
		`ip daddr @n0_4 return comment "t rules[0] (t.yaml:8): allow"`,
		"ct mark and 0xfff00000 == 0x00700000 accept\n\t\tiifname \"lan0\" jump decide\n\t\tiifname \"lan0\" ct mark set ct mark and 0x000fffff or 0x00700000\n",
		`ip6 daddr @n1_6 drop`,
		// overlapping prefixes merged, ports merged per protocol, clients scoped
		`ip saddr { 192.0.2.10 } ip daddr { 203.0.113.0/24 } udp dport { 30300-30310 } reject with icmpx type port-unreachable`,
		`ip saddr { 192.0.2.10 } ip daddr { 203.0.113.0/24 } tcp dport { 443, 30303 } reject with tcp reset`,
		`meta nfproto ipv4 udp dport { 853 } reject with icmpx type port-unreachable`,
	} {
		if !strings.Contains(def, want) {
			t.Errorf("ruleset lacks %q", want)
		}
	}
	if !strings.Contains(def, "# t rules[4] (t.yaml:12): has modifiers") || strings.Contains(def, "n4_4") {
		t.Errorf("the rule with a probability became nft rules")
	}
	// qa has no IPv6 address: the cluster rule has no IPv6 line.
	if strings.Contains(def, "ip6 daddr { 2001:db8:3::/64 }") {
		t.Errorf("IPv6 line for a rule scoped to IPv4 devices only")
	}
	if t.Failed() {
		t.Log(def)
	}
}

// TestScriptApplies loads the generated script into nftables in a
// namespace of its own, twice (replacing itself), and removes it.
func TestScriptApplies(t *testing.T) {
	if why := testbed.NetnsUnavailable(); why != "" {
		t.Skipf("skipping: %s", why)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft is not installed (apt-get install nftables; .ci/run does): %v", err)
	}
	ns := testbed.NewNetns(t, "nft")
	ns.IP(t, "link", "add", "lan0", "type", "bridge")
	script := Script(testParams(t))
	for range 2 {
		if out := ns.Sh(t, "nft -f - <<'EOF'\n"+script+"EOF\nnft list table inet unicorn"); !strings.Contains(out, "203.0.113.10") {
			t.Fatalf("listed table lacks the learned address:\n%s", out)
		}
	}
	// A change of the learned sets puts a new generation in force in place.
	regen := "add element inet unicorn n1_4 { 203.0.113.99 }\n" + strings.Join(Regenerate("lan0", MaxGen), "\n") + "\n"
	if out := ns.Sh(t, "nft -f - <<'EOF'\n"+regen+"EOF\nnft list chain inet unicorn forward"); !strings.Contains(out, "ct mark 0xfff00000/12 accept") || strings.Contains(out, "0x00700000") {
		t.Errorf("forward chain after Regenerate(MaxGen):\n%s", out)
	}
	ns.Sh(t, "nft delete table inet unicorn")
	if out := ns.Sh(t, "nft list tables"); strings.Contains(out, "unicorn") {
		t.Errorf("table left: %s", out)
	}
}

// TestDefineScenarioScope: a scenario switched on for some devices only
// (Engine.Switch) limits every line of its rules to them, on top of a
// rule's own clients:, and a scenario switched off has no lines.
func TestDefineScenarioScope(t *testing.T) {
	e := testEngine(t)
	if err := e.Switch("t", true, []netip.Prefix{netip.MustParsePrefix("192.0.2.11/32")}); err != nil {
		t.Fatal(err)
	}
	def := Define(Params{LAN: "lan0", TransparentPort: 1, DNSPort: 2, Scenarios: e.Scenarios()})
	if !strings.Contains(def, `ip saddr { 192.0.2.11 } ip daddr @n1_4 drop`) {
		t.Errorf("the blackhole rule is not limited to the scenario's device:\n%s", def)
	}
	if strings.Contains(def, "ip6 ") || strings.Contains(def, "meta nfproto ipv6") {
		t.Errorf("IPv6 lines for a scenario scoped to one IPv4 device:\n%s", def)
	}
	// rules[2] is for qa (192.0.2.10) only: no device is in both scopes.
	if strings.Contains(def, "rules[2]") {
		t.Errorf("a rule whose clients are outside the scenario's scope has lines:\n%s", def)
	}
	if err := e.Switch("t", false, nil); err != nil {
		t.Fatal(err)
	}
	def = Define(Params{LAN: "lan0", TransparentPort: 1, DNSPort: 2, Scenarios: e.Scenarios()})
	if strings.Contains(def, "comment \"t rules") {
		t.Errorf("lines of a scenario that is off:\n%s", def)
	}
}

// TestNextGen: generations run from 1 to MaxGen and wrap to 1, never 0
// (the mark of a flow unicorn never decided).
func TestNextGen(t *testing.T) {
	for _, c := range [][2]uint32{{0, 1}, {1, 2}, {MaxGen - 1, MaxGen}, {MaxGen, 1}} {
		if got := NextGen(c[0]); got != c[1] {
			t.Errorf("NextGen(%d) = %d, want %d", c[0], got, c[1])
		}
	}
	if MaxGen<<genShift != GenMask {
		t.Errorf("MaxGen %#x does not fill GenMask %#x", MaxGen, GenMask)
	}
}
