package rules

import "testing"

// TestPresets checks each built-in preset: optional, so it never runs
// unasked, and deciding the catalogue's services the way its name says.
func TestPresets(t *testing.T) {
	set, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	https := func(host string) Flow { return Flow{Layer: LayerHTTP, Host: host, Port: 443, Proto: ProtoTCP} }
	for _, tt := range []struct {
		scenario string
		flow     Flow
		action   Action
		check    func(p *Params) bool
	}{
		{"preset-provider-slow", https("mainnet.infura.io"), ActionDelay, func(p *Params) bool {
			return p.Latency == 10e9 && p.DelayOn == DelayOnFirstByte && p.Direction == DirDown
		}},
		{"preset-provider-flapping", https("mainnet.infura.io"), ActionCut, func(p *Params) bool { return p.After == 15e9 && p.Close == CloseRST }},
		{"preset-rate-limited", https("mainnet.infura.io"), ActionHTTPError, func(p *Params) bool { return p.Status == 429 }},
		{"preset-rate-limited", https("api.etherscan.io"), ActionHTTPError, func(p *Params) bool { return p.Status == 200 }},
		{"preset-censor-dns-poisoning", Flow{Layer: LayerDNS, Host: "mainnet.infura.io"}, ActionSpoof, func(p *Params) bool {
			return len(p.Addrs) == 1 && p.Addrs[0].String() == "203.0.113.66"
		}},
		{"preset-censor-sni-reset", Flow{Layer: LayerTLS, Host: "api.etherscan.io", Port: 443, Proto: ProtoTCP}, ActionTLSReset, func(p *Params) bool { return p.Close == CloseRST }},
		{"preset-censor-throttle", https("mainnet.infura.io"), ActionThrottle, func(p *Params) bool { return p.Rate == 8000 && p.Direction == DirBoth }},
		{"preset-censor-throttle", Flow{Layer: LayerTCP, Addr: addr("47.91.156.93"), Port: 443, Proto: ProtoTCP}, ActionThrottle, nil},
	} {
		t.Run(tt.scenario, func(t *testing.T) {
			sc := set.Scenario(tt.scenario)
			if sc == nil || !sc.Optional {
				t.Fatalf("scenario %s: %v, want a built-in optional scenario", tt.scenario, sc)
			}
			e, err := NewEngine(set, []string{tt.scenario})
			if err != nil {
				t.Fatal(err)
			}
			d := e.Peek(tt.flow)
			if d.Action != tt.action || d.Scenario() != tt.scenario || (tt.check != nil && !tt.check(d.Params())) {
				t.Fatalf("decided %v with %+v", d, d.Params())
			}
		})
	}
	for _, name := range set.Defaults() {
		if len(name) > 7 && name[:7] == "preset-" {
			t.Errorf("preset %s is active by default", name)
		}
	}
}
