package dnsblock

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// FuzzServeDNS feeds any message miekg/dns can parse to the handler. The
// properties: no panic (the handler's recover would log one), and every
// reply unpacks, carries the query's ID and is no larger than 512 bytes for
// a UDP client without EDNS.
func FuzzServeDNS(f *testing.F) {
	for _, m := range []*dns.Msg{
		query("infura.io.", dns.TypeA, true),
		query("MaIn.InFuRa.Io.", dns.TypeAAAA, false),
		query(".", dns.TypeNS, true),
		query(strings.Repeat("a.", 120), dns.TypeTXT, false),
		{MsgHdr: dns.MsgHdr{Id: 1}},
	} {
		b, _ := m.Pack()
		f.Add(b)
	}
	logs := &logBuffer{}
	actions := []rules.Action{rules.ActionReject, rules.ActionSinkhole, rules.ActionSpoof, rules.ActionBlackhole, rules.ActionAllow}
	spoof := rules.Params{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	s, err := NewServer(Config{
		Decider: rules.DeciderFunc(func(fl rules.Flow) rules.Decision {
			a := actions[len(fl.Host)%len(actions)]
			return rules.Decision{Action: a, Rule: testRule(a, spoof)}
		}),
		Upstreams: []string{"127.0.0.1:1"}, // closed: forwarding fails fast, on loopback
		Timeout:   50 * time.Millisecond,
		Logger:    newTestLogger(logs),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			return
		}
		w := newFakeWriter(false)
		s.ServeDNS(w, req)
		if strings.Contains(logs.String(), "panic") {
			t.Fatalf("handler panicked:\n%s", logs)
		}
		if w.writes == 0 {
			return // blackhole
		}
		r := new(dns.Msg)
		if err := r.Unpack(w.last); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if r.Id != req.Id || !r.Response {
			t.Fatalf("reply %v to query %d", r.MsgHdr, req.Id)
		}
		if req.IsEdns0() == nil && len(w.last) > dns.MinMsgSize {
			t.Fatalf("reply of %d bytes to a client without EDNS", len(w.last))
		}
	})
}
