package rules

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustEngine(t testing.TB, yaml string, active ...string) *Engine {
	t.Helper()
	set, err := Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if len(active) == 0 {
		active = set.Defaults()
	}
	e, err := NewEngine(set, active)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

const engineRules = `
scenario: lab
services:
  wallet: {domains: [wallet.example], ports: [443]}
  cluster: {ips: [198.51.100.0/24, "2001:db8:5::/48"], ports: [443, 30303/udp]}
  smtp: {ports: [25/tcp]}
  exact: {hosts: [only.example]}
  odd: {regex: ['^ad[0-9]+\.']}
devices:
  qa: [192.0.2.0/28]
rules:
  - {domains: [ok.wallet.example], action: allow}
  - {service: wallet, action: reject, rcode: servfail}
  - {service: cluster, action: blackhole, clients: [qa]}
  - {service: cluster, action: reject}
  - {service: smtp, action: reject}
  - {service: exact, action: sinkhole}
  - {service: odd, action: reject}
  - {domains: [late.example], action: http_error, status: 502}
`

func TestDecide(t *testing.T) {
	e := mustEngine(t, engineRules)
	qa, other := addr("192.0.2.3"), addr("203.0.113.50")
	tests := []struct {
		name   string
		flow   Flow
		action Action
		rule   int // -1: no rule
	}{
		{"dns suffix", Flow{Layer: LayerDNS, Host: "api.wallet.example"}, ActionReject, 1},
		{"dns apex, upper case, trailing dot", Flow{Layer: LayerDNS, Host: "WALLET.Example."}, ActionReject, 1},
		{"allow exception wins by order", Flow{Layer: LayerDNS, Host: "a.ok.wallet.example"}, ActionAllow, 0},
		{"not a suffix of a label", Flow{Layer: LayerDNS, Host: "notwallet.example"}, ActionAllow, -1},
		{"port constrains name at tcp", Flow{Layer: LayerHTTP, Host: "wallet.example", Port: 80, Proto: ProtoTCP}, ActionAllow, -1},
		{"port matches name at tcp", Flow{Layer: LayerHTTP, Host: "wallet.example", Port: 443, Proto: ProtoTCP}, ActionReject, 1},
		{"cluster ip for qa device", Flow{Layer: LayerTCP, Client: qa, Addr: addr("198.51.100.7"), Port: 443, Proto: ProtoTCP}, ActionBlackhole, 2},
		{"cluster ip for other device", Flow{Layer: LayerTCP, Client: other, Addr: addr("198.51.100.7"), Port: 443, Proto: ProtoTCP}, ActionReject, 3},
		{"cluster ip, unknown client", Flow{Layer: LayerTCP, Addr: addr("198.51.100.7"), Port: 443, Proto: ProtoTCP}, ActionReject, 3},
		{"cluster ipv4-mapped", Flow{Layer: LayerTCP, Addr: addr("::ffff:198.51.100.7"), Port: 443, Proto: ProtoTCP}, ActionReject, 3},
		{"cluster ipv6", Flow{Layer: LayerTCP, Addr: addr("2001:db8:5::1"), Port: 443, Proto: ProtoTCP}, ActionReject, 3},
		{"cluster udp port", Flow{Layer: LayerUDP, Addr: addr("198.51.100.7"), Port: 30303, Proto: ProtoUDP}, ActionReject, 3},
		{"cluster tcp on udp-only port", Flow{Layer: LayerTCP, Addr: addr("198.51.100.7"), Port: 30303, Proto: ProtoTCP}, ActionAllow, -1},
		{"cluster other port", Flow{Layer: LayerTCP, Addr: addr("198.51.100.7"), Port: 80, Proto: ProtoTCP}, ActionAllow, -1},
		{"outside cluster", Flow{Layer: LayerTCP, Addr: addr("198.51.101.7"), Port: 443, Proto: ProtoTCP}, ActionAllow, -1},
		{"port-only service", Flow{Layer: LayerTCP, Addr: addr("203.0.113.1"), Port: 25, Proto: ProtoTCP}, ActionReject, 4},
		{"port-only service never matches dns", Flow{Layer: LayerDNS, Host: "mail.example"}, ActionAllow, -1},
		{"exact host", Flow{Layer: LayerDNS, Host: "only.example"}, ActionSinkhole, 5},
		{"exact host, not subdomain", Flow{Layer: LayerDNS, Host: "x.only.example"}, ActionAllow, -1},
		{"regex", Flow{Layer: LayerDNS, Host: "AD12.example"}, ActionReject, 6},
		{"http_error passes dns, naming its rule", Flow{Layer: LayerDNS, Host: "late.example"}, ActionAllow, 7},
		{"http_error at http", Flow{Layer: LayerHTTP, Host: "late.example", Port: 443, Proto: ProtoTCP}, ActionHTTPError, 7},
		{"empty flow", Flow{Layer: LayerTCP}, ActionAllow, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(tt.flow)
			if d.Action != tt.action {
				t.Errorf("Decide(%v) = %v, want %v", tt.flow, d, tt.action)
			}
			got := -1
			if d.Rule != nil {
				got = d.Rule.Index
			}
			if got != tt.rule {
				t.Errorf("Decide(%v) by rule %d, want %d", tt.flow, got, tt.rule)
			}
		})
	}
}

func TestDecideBuiltin(t *testing.T) {
	set, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Defaults(); len(got) != 1 || got[0] != BuiltinDefault {
		t.Fatalf("default scenarios %v, want [%s]", got, BuiltinDefault)
	}
	e, err := NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flow    Flow
		action  Action
		service string
	}{
		{Flow{Layer: LayerDNS, Host: "mainnet.infura.io"}, ActionReject, "infura"},
		{Flow{Layer: LayerHTTP, Host: "api.etherscan.io", Port: 443, Proto: ProtoTCP}, ActionReject, "etherscan"},
		{Flow{Layer: LayerTCP, Addr: addr("47.91.156.93"), Port: 443, Proto: ProtoTCP}, ActionReject, "status-cluster-2019"},
		{Flow{Layer: LayerUDP, Addr: addr("206.189.243.57"), Port: 30404, Proto: ProtoUDP}, ActionReject, "status-cluster-2019"},
		{Flow{Layer: LayerDNS, Host: "2.pool.ntp.org"}, ActionAllow, "time"},
		{Flow{Layer: LayerDNS, Host: "min-api.cryptocompare.com"}, ActionAllow, ""}, // third parties are opt-in
		{Flow{Layer: LayerDNS, Host: "example.org"}, ActionAllow, ""},
	}
	for _, tt := range tests {
		d := e.Decide(tt.flow)
		svc := ""
		if d.Rule != nil {
			svc = d.Rule.Service
			if !strings.HasPrefix(d.Rule.Pos.File, "builtin:") || d.Rule.Pos.Line == 0 {
				t.Errorf("%v: rule position %q, want builtin:file:line", tt.flow, d.Rule.Pos)
			}
		}
		if d.Action != tt.action || svc != tt.service {
			t.Errorf("Decide(%v) = %v service %q, want %v service %q", tt.flow, d, svc, tt.action, tt.service)
		}
	}
	// Opt in to the third parties: now prices fail too, and cud-2019 still decides Infura.
	if err := e.Swap(set, []string{"cud-2019", "cud-2019-third-parties"}); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "min-api.cryptocompare.com"}); d.Action != ActionReject || d.Scenario() != "cud-2019-third-parties" {
		t.Errorf("with third parties on, prices: %v", d)
	}
	// cud-2020 blocks its own fleet and not the 2019 one.
	if err := e.Swap(set, []string{"cud-2020"}); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Flow{Layer: LayerTCP, Addr: addr("47.75.99.169"), Port: 443, Proto: ProtoTCP}); d.Action != ActionReject {
		t.Errorf("cud-2020 eth.prod boot node: %v", d)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "api.etherscan.io"}); d.Action != ActionAllow {
		t.Errorf("cud-2020 etherscan: %v, want allow", d)
	}
}

func TestSwapKeepsRulesOnError(t *testing.T) {
	e := mustEngine(t, engineRules)
	set := e.Set()
	if err := e.Swap(set, []string{"lab", "nosuch"}); err == nil || !strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), "loaded: lab") {
		t.Fatalf("Swap with unknown scenario: %v", err)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "wallet.example"}); d.Action != ActionReject {
		t.Errorf("after failed swap: %v, want the old rules in force", d)
	}
	if err := e.Swap(set, nil); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "wallet.example"}); d.Action != ActionAllow {
		t.Errorf("with no active scenario: %v, want allow", d)
	}
}

// TestSwapConcurrent decides while swapping; run with -race.
func TestSwapConcurrent(t *testing.T) {
	e := mustEngine(t, engineRules)
	set := e.Set()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				d := e.Decide(Flow{Layer: LayerDNS, Host: "wallet.example"})
				if d.Action != ActionReject && d.Action != ActionAllow {
					t.Errorf("torn decision %v", d)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		active := []string{"lab"}
		if i%2 == 1 {
			active = nil
		}
		if err := e.Swap(set, active); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestRuleRefNamesScenarioAndPosition(t *testing.T) {
	e := mustEngine(t, engineRules)
	d := e.Decide(Flow{Layer: LayerDNS, Host: "wallet.example"})
	if got, want := d.Rule.Ref(), "lab rules[1] (test.yaml:13)"; got != want {
		t.Errorf("Ref() = %q, want %q", got, want)
	}
	if d.Params().RCode != RCodeServFail || d.Params().TTL != DefaultBlockTTL {
		t.Errorf("params %+v", d.Params())
	}
}

// TestFirstMatchWinsAtEveryLayer: a rule whose action means nothing at a
// layer still wins there as the first match, so a broader rule below it
// does not take the flow instead.
func TestFirstMatchWinsAtEveryLayer(t *testing.T) {
	e := mustEngine(t, `
scenario: x
rules:
  - {hosts: [api.example.com], action: http_error, status: 502}
  - {domains: [example.com], action: reject}
`)
	for _, tt := range []struct {
		flow   Flow
		action Action
		rule   int
	}{
		{Flow{Layer: LayerDNS, Host: "api.example.com"}, ActionAllow, 0},
		{Flow{Layer: LayerTCP, Host: "api.example.com", Port: 443, Proto: ProtoTCP}, ActionAllow, 0},
		{Flow{Layer: LayerHTTP, Host: "api.example.com", Port: 443, Proto: ProtoTCP}, ActionHTTPError, 0},
		{Flow{Layer: LayerDNS, Host: "www.example.com"}, ActionReject, 1},
	} {
		d := e.Decide(tt.flow)
		if d.Action != tt.action || d.Rule == nil || d.Rule.Index != tt.rule {
			t.Errorf("Decide(%v) = %v, want %v by rules[%d]", tt.flow, d, tt.action, tt.rule)
		}
	}
}

// TestDecideLongName: a host longer than DNS allows is no name, decided
// at once rather than in time that grows with its length squared.
func TestDecideLongName(t *testing.T) {
	e := mustEngine(t, engineRules)
	long := strings.Repeat("a.", 200_000) + "wallet.example"
	start := time.Now()
	d := e.Decide(Flow{Layer: LayerHTTP, Host: long, Port: 443, Proto: ProtoTCP})
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("Decide of a %d-byte name took %v", len(long), el)
	}
	if d.Rule != nil {
		t.Errorf("over-long name matched %v", d)
	}
}

// TestDecideAllocatesNothing: front ends pass names borrowed from their
// read buffers (dnsblock's UDP loop), which relies on Decide neither
// allocating nor keeping Flow.Host.
func TestDecideAllocatesNothing(t *testing.T) {
	rules := engineRules
	flows := []Flow{
		{Layer: LayerDNS, Host: "API.wallet.example."},
		{Layer: LayerDNS, Host: "ad12.example"},
		{Layer: LayerDNS, Host: "www.example.org"},
		{Layer: LayerTCP, Client: addr("192.0.2.3"), Addr: addr("198.51.100.7"), Port: 443, Proto: ProtoTCP},
	}
	if raceEnabled {
		// The race detector makes sync.Pool drop items at random, so
		// regexp (which pools its machines) allocates now and then: leave
		// the regex rule out, and check the rest of Decide.
		rules = strings.Replace(rules, "  - {service: odd, action: reject}\n", "", 1)
		flows = slices.DeleteFunc(flows, func(f Flow) bool { return f.Host == "ad12.example" })
	}
	e := mustEngine(t, rules)
	for _, f := range flows {
		if n := testing.AllocsPerRun(100, func() { e.Decide(f) }); n != 0 {
			t.Errorf("Decide(%v) allocates %.0f times", f, n)
		}
	}
}

func TestParamsDelay(t *testing.T) {
	p := Params{Latency: 100 * time.Millisecond, Jitter: 30 * time.Millisecond}
	lo, hi := time.Hour, time.Duration(0)
	for range 2000 {
		d := p.Delay()
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 70*time.Millisecond || hi > 130*time.Millisecond || hi-lo < 40*time.Millisecond {
		t.Errorf("2000 delays spread over [%v, %v], want within [70ms, 130ms] and spread out", lo, hi)
	}
	if d := (&Params{Latency: 10 * time.Millisecond, Jitter: time.Second}).Delay(); d < 0 {
		t.Errorf("Delay() = %v, never below zero", d)
	}
}
