package dnsblock

import (
	"testing"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// TestStats: every answered question counts once, whichever path answered
// it; the second ask of a name is a cache hit; each upstream exchange is
// timed into one latency bucket.
func TestStats(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	w := newWorld(t, Config{Decider: &blocker{rule: testRule(rules.ActionReject, rules.Params{})}, Upstreams: []string{addr}})
	for _, network := range transports {
		w.ask(t, network, query("example.com.", dns.TypeA, true))
		w.ask(t, network, query("mainnet.infura.io.", dns.TypeA, true))
	}
	st := w.srv.Stats()
	if st.Queries != 4 {
		t.Errorf("Queries = %d, want 4", st.Queries)
	}
	if st.Upstream != 1 || st.CacheHits != 1 {
		t.Errorf("Upstream = %d, CacheHits = %d; want 1 and 1 (the second example.com from the cache)", st.Upstream, st.CacheHits)
	}
	var n uint64
	for _, c := range st.UpstreamLatency {
		n += c
	}
	if n != st.Upstream || st.UpstreamTime <= 0 {
		t.Errorf("latency buckets hold %d exchanges (of %d), total %v", n, st.Upstream, st.UpstreamTime)
	}
}
