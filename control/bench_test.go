package control_test

import (
	"net/netip"
	"testing"
	"testing/fstest"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/chaos-unicorn/unicorn/rules"
)

// BenchmarkDecideBlocked compares a blocked DNS decision without an
// observer (bare) and with the event hub attached (hub): what the event
// stream adds to the hot path. The hub's own goroutine runs meanwhile;
// decisions it could not take in time are dropped and reported.
func BenchmarkDecideBlocked(b *testing.B) {
	set, err := rules.LoadFS(fstest.MapFS{"lab.yaml": {Data: []byte(labRules)}}, "lab.yaml")
	if err != nil {
		b.Fatal(err)
	}
	f := rules.Flow{Layer: rules.LayerDNS, Host: "api.wallet.example", Client: netip.MustParseAddr("192.0.2.5")}
	for _, withHub := range []bool{false, true} {
		name := "bare"
		if withHub {
			name = "hub"
		}
		b.Run(name, func(b *testing.B) {
			e, err := rules.NewEngine(set, set.Defaults())
			if err != nil {
				b.Fatal(err)
			}
			var h *control.Hub
			if withHub {
				h = control.NewHub(control.HubConfig{})
				h.Attach(e)
				defer h.Close()
			}
			b.ReportAllocs()
			for b.Loop() {
				if e.Decide(f).Action != rules.ActionReject {
					b.Fatal("not rejected")
				}
			}
			if h != nil {
				h.Flush()
				b.ReportMetric(float64(h.Dropped())/float64(b.N), "dropped/op")
			}
		})
	}
}
