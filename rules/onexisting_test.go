package rules

import "testing"

func TestDecisionOnExisting(t *testing.T) {
	set, err := Parse("live.yaml", []byte(`
scenario: live
rules:
  - {hosts: [a.test], action: reject}
  - {hosts: [b.test], action: reject, on_existing: keep}
  - {hosts: [c.test], action: throttle, rate: 1mbit}
  - {hosts: [d.test], action: throttle, rate: 1mbit, on_existing: degrade}
  - {hosts: [e.test], action: tls_reset}
  - {hosts: [f.test], action: reject, probability: 0.5, on_existing: cut}
  - hosts: [g.test]
    on_existing: degrade
    phases:
      - {for: 10m, action: throttle, rate: 1mbit}
      - {action: reject}
  - {hosts: [h.test], action: spoof, addresses: [192.0.2.1]}
`))
	if err != nil {
		t.Fatal(err)
	}
	sc := set.Scenario("live")
	d := func(i int, a Action) Decision { return Decision{Action: a, Rule: sc.Rules[i]} }
	for _, c := range []struct {
		d    Decision
		want OnExisting
	}{
		{Decision{}, OnExistingKeep},
		{d(0, ActionReject), OnExistingCut},
		{d(1, ActionReject), OnExistingKeep},
		{d(2, ActionThrottle), OnExistingKeep},
		{d(3, ActionThrottle), OnExistingDegrade},
		{d(4, ActionTLSReset), OnExistingCut},
		{d(5, ActionReject), OnExistingKeep}, // a per-flow draw: open flows had theirs
		{d(6, ActionThrottle), OnExistingDegrade},
		{d(6, ActionReject), OnExistingCut}, // degrade of a blocking phase
		{d(7, ActionSpoof), OnExistingKeep},
	} {
		if got := c.d.OnExisting(); got != c.want {
			t.Errorf("%v: %v, want %v", c.d, got, c.want)
		}
	}
}
