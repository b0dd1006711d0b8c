package testbed_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

// TestFirstTwoThenReal starts the binary with a first: 2 rule and a fixed
// seed: the seed is logged and printed, the first two DNS answers for the
// name are NXDOMAIN from unicorn, and the third is the real answer.
func TestFirstTwoThenReal(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	lo := netip.MustParseAddr("127.0.0.1")
	w.DNS.Map("wallet.test", lo)
	file := writeFile(t, "first.yaml", `scenario: flaky-start
rules:
  - {hosts: [wallet.test], action: reject, first: 2}
`)
	u := w.Start(t, "--rules", file, "--seed", "4242")
	if !strings.Contains(strings.Join(u.Banner, "\n"), "seed 4242") {
		t.Errorf("banner does not print the seed:\n%s", strings.Join(u.Banner, "\n"))
	}
	u.WaitLog(t, map[string]string{"msg": "serving", "seed": "4242"})

	for i := 1; i <= 3; i++ {
		r := ask(t, u.DNS, "udp", "wallet.test", dns.TypeA)
		if i <= 2 {
			if r.Rcode != dns.RcodeNameError || ede(r) == nil {
				t.Errorf("answer %d: rcode %s, EDE %v; want NXDOMAIN from unicorn", i, dns.RcodeToString[r.Rcode], ede(r))
			}
			if n := w.DNS.Questions("wallet.test"); n != 0 {
				t.Errorf("answer %d: the upstream was asked %d time(s)", i, n)
			}
			continue
		}
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), []string{"127.0.0.1"}) {
			t.Errorf("answer 3: rcode %s, answers %v; want the real NOERROR [127.0.0.1]", dns.RcodeToString[r.Rcode], answerAddrs(r))
		}
		if n := w.DNS.Questions("wallet.test"); n != 1 {
			t.Errorf("answer 3: the upstream was asked %d time(s), want 1", n)
		}
	}
}

// TestSeedRepeatsARun runs the binary three times with a probability: 0.5
// rule: the same --seed gives the same answers to the same questions, and
// another seed different ones.
func TestSeedRepeatsARun(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	w.DNS.Map("flaky.test", netip.MustParseAddr("127.0.0.1"))
	file := writeFile(t, "flaky.yaml", `scenario: flaky
rules:
  - {hosts: [flaky.test], action: reject, probability: 0.5}
`)
	run := func(seed string) string {
		u := w.Start(t, "--rules", file, "--seed", seed)
		defer u.Stop()
		var b strings.Builder
		for range 24 {
			r := ask(t, u.DNS, "udp", "flaky.test", dns.TypeA)
			switch r.Rcode {
			case dns.RcodeNameError:
				b.WriteString("x")
			case dns.RcodeSuccess:
				b.WriteString("o")
			default:
				t.Fatalf("rcode %s, want NXDOMAIN or NOERROR", dns.RcodeToString[r.Rcode])
			}
		}
		return b.String()
	}
	a, b, c := run("7"), run("7"), run("8")
	if a != b {
		t.Errorf("--seed 7 gave %s, then %s", a, b)
	}
	if a == c {
		t.Errorf("--seeds 7 and 8 both gave %s", a)
	}
	if !strings.Contains(a, "x") || !strings.Contains(a, "o") {
		t.Errorf("probability 0.5 over 24 questions gave %s (x: NXDOMAIN, o: NOERROR)", a)
	}
}
