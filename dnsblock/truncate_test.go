package dnsblock

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

func TestTruncate(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("infura.io.", "infura.io. 300 IN A 198.51.100.1")
	addr, _ := up.Start(t)
	dec := &blocker{rule: testRule(rules.ActionTruncate, rules.Params{})}
	w := newWorld(t, Config{Decider: dec, Upstreams: []string{addr}})

	// miekg's client: over UDP a reply with TC and nothing else ...
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.Exchange(query("infura.io.", dns.TypeA, true), w.udp)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || r.Rcode != dns.RcodeSuccess || len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 {
		t.Fatalf("udp reply %v, want NOERROR with TC and no records", r)
	}
	if up.Calls() != 0 {
		t.Errorf("upstream asked %d times for a truncated UDP answer", up.Calls())
	}
	// ... and the retry over TCP gets the real answer.
	c.Net = "tcp"
	r, _, err = c.Exchange(query("infura.io.", dns.TypeA, true), w.tcp)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.51.100.1" {
		t.Fatalf("tcp reply %v, want the upstream's answer", r)
	}

	// Go's own resolver retries over TCP by itself when it sees TC.
	var networks []string
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		networks = append(networks, network)
		to := w.udp
		if network == "tcp" {
			to = w.tcp
		}
		return (&net.Dialer{}).DialContext(ctx, network, to)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := res.LookupNetIP(ctx, "ip4", "infura.io")
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].String() != "198.51.100.1" {
		t.Errorf("Go resolver got %v", addrs)
	}
	if len(networks) < 2 || networks[0] != "udp" || networks[len(networks)-1] != "tcp" {
		t.Errorf("Go resolver dialled %v, want udp then tcp", networks)
	}
}

func TestDelayOnBytesResolvesOnTime(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("infura.io.", "infura.io. 300 IN A 198.51.100.1")
	addr, _ := up.Start(t)
	dec := &blocker{rule: testRule(rules.ActionDelay, rules.Params{Latency: 2 * time.Second, DelayOn: rules.DelayOnFirstByte, Direction: rules.DirDown})}
	w := newWorld(t, Config{Decider: dec, Upstreams: []string{addr}})
	for _, network := range transports {
		start := time.Now()
		r := w.ask(t, network, query("infura.io.", dns.TypeA, true))
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: a first_byte delay held the DNS answer %v", network, took)
		}
		if len(r.Answer) != 1 {
			t.Errorf("%s: answer %v", network, r.Answer)
		}
	}
}
