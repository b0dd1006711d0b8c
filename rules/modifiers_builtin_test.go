package rules

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestBuiltinPhased switches on the built-in cud-2019-phased and walks an
// injected clock through its degrade, outage and recovery.
func TestBuiltinPhased(t *testing.T) {
	set, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	sc := set.Scenario("cud-2019-phased")
	if sc == nil || !sc.Optional {
		t.Fatalf("cud-2019-phased: %v, want an optional built-in scenario", sc)
	}
	e, err := NewEngine(set, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock(t0)
	e.SetClock(clk.now)
	e.SetSeed(3)
	if err := e.Switch("cud-2019-phased", true, nil); err != nil {
		t.Fatal(err)
	}
	infura := Flow{Layer: LayerDNS, Host: "mainnet.infura.io"}
	cluster := Flow{Layer: LayerTCP, Addr: netip.MustParseAddr("47.52.188.149"), Port: 30305, Proto: ProtoTCP}
	tally := func(f Flow, n int) map[string]int {
		m := map[string]int{}
		for range n {
			d := e.Decide(f)
			m[d.Action.String()+"/"+d.Params().RCode.String()]++
		}
		return m
	}

	// Degrade: Infura fails about a third of the time, else answers 5s ±2s late.
	got := tally(infura, 1000)
	if fails := got["reject/servfail"]; fails < 230 || fails > 370 || got["delay/nxdomain"] != 1000-fails {
		t.Errorf("degrade: Infura %v, want ~300 servfail and the rest delayed", got)
	}
	d := e.Decide(Flow{Layer: LayerDNS, Host: "api.etherscan.io"})
	if d.Action != ActionDelay || d.Params().Latency != 3*time.Second {
		t.Errorf("degrade: Etherscan %v latency %v, want a 3s delay", d, d.Params().Latency)
	}
	if d := e.Decide(cluster); d.Action != ActionDelay || d.Params().Latency != 2*time.Second {
		t.Errorf("degrade: cluster %v, want a 2s delay", d)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "pool.ntp.org"}); d.Action != ActionAllow || d.Rule == nil {
		t.Errorf("time service: %v, want allowed by the control rule", d)
	}

	// Outage.
	clk.add(10 * time.Minute)
	if got := tally(infura, 100); got["reject/nxdomain"] != 100 {
		t.Errorf("outage: Infura %v, want 100 NXDOMAIN", got)
	}
	if d := e.Decide(cluster); d.Action != ActionReject {
		t.Errorf("outage: cluster %v, want reject", d)
	}
	if s := e.RuleState(sc.Rules[3]); !strings.Contains(s, "phase 2 of 3 (reject)") {
		t.Errorf("outage: RuleState %q", s)
	}

	// Recovery: the rules allow, and nothing later blocks.
	clk.add(30 * time.Minute)
	for _, f := range []Flow{infura, cluster, {Layer: LayerHTTP, Host: "api.etherscan.io", Port: 443, Proto: ProtoTCP}} {
		if d := e.Decide(f); d.Action != ActionAllow {
			t.Errorf("recovered: %v for %v, want allow", d, f)
		}
	}
}
