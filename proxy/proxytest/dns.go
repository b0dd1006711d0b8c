// Package proxytest holds test helpers for package proxy: a fake DNS
// server on loopback that unicorn's proxy resolves test names with.
package proxytest

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// NewResolver starts a DNS server on 127.0.0.1:0 (UDP) that answers A and
// AAAA questions for the names in hosts (without trailing dot, any case)
// and NXDOMAIN for every other name, and returns a pure-Go resolver that
// asks only that server. The server stops when tb ends.
func NewResolver(tb testing.TB, hosts map[string][]netip.Addr) *net.Resolver {
	tb.Helper()
	zone := make(map[string][]netip.Addr, len(hosts))
	for name, addrs := range hosts {
		zone[dns.Fqdn(strings.ToLower(name))] = addrs
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		qq := q.Question[0]
		addrs, ok := zone[strings.ToLower(qq.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
			w.WriteMsg(m)
			return
		}
		for _, a := range addrs {
			hdr := dns.RR_Header{Name: qq.Name, Class: dns.ClassINET, Ttl: 60}
			switch {
			case a.Is4() && qq.Qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case a.Is6() && qq.Qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
		w.WriteMsg(m)
	})

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxytest: listen: %v", err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.ActivateAndServe()
	}()
	select {
	case <-started:
	case <-served:
		tb.Fatalf("proxytest: DNS server did not start")
	}
	tb.Cleanup(func() {
		srv.Shutdown()
		<-served
	})

	addr := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}
