package rules

import (
	"testing"
	"time"
)

// BenchmarkDecideModifiers decides a DNS flow for a rule with each kind of
// modifier, and for the same rule with none (the baseline of the ratios).
func BenchmarkDecideModifiers(b *testing.B) {
	set, err := Parse("m.yaml", []byte(`scenario: m
rules:
  - {domains: [none.example], action: reject}
  - {domains: [prob.example], action: reject, probability: 0.3}
  - {domains: [first.example], action: reject, first: 1000000000}
  - {domains: [spent.example], action: reject, first: 1}
  - {domains: [every.example], action: reject, every: 3}
  - {domains: [window.example], action: reject, window: {from: "00:00", until: "23:59"}}
  - {domains: [schedule.example], action: reject, schedule: {cron: "*/15 9-17 * * mon-fri", for: 5m}}
  - domains: [phases.example]
    phases: [{for: 10m, action: delay, latency: 1s}, {for: 30m, action: reject}, {action: allow}]
  - {domains: [spent.example], action: sinkhole}
`))
	if err != nil {
		b.Fatal(err)
	}
	e, err := NewEngine(set, set.Defaults())
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	e.SetClock(func() time.Time { return at })
	e.SetSeed(1)
	for _, host := range []string{"none", "prob", "first", "spent", "every", "window", "schedule", "phases"} {
		f := Flow{Layer: LayerDNS, Host: "www." + host + ".example"}
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(f)
			}
		})
	}
}
