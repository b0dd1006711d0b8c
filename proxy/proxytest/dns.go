// Package proxytest holds test helpers for package proxy: a resolver that
// asks a fake DNS server on loopback for the test names.
package proxytest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/miekg/dns"
)

// NewResolver starts a fake DNS server on 127.0.0.1 (dnstest.Upstream) that
// answers A and AAAA questions for the names in hosts (without trailing
// dot, any case) and NXDOMAIN for every other name, and returns a pure-Go
// resolver that asks only that server. The server stops when tb ends.
func NewResolver(tb testing.TB, hosts map[string][]netip.Addr) *net.Resolver {
	tb.Helper()
	up := dnstest.NewUpstream()
	for name, addrs := range hosts {
		fqdn := dns.Fqdn(name)
		for _, a := range addrs {
			typ := "A"
			if !a.Is4() {
				typ = "AAAA"
			}
			up.WithAnswer(fqdn, fmt.Sprintf("%s 60 IN %s %s", fqdn, typ, a))
		}
	}
	addr, _ := up.Start(tb)
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}
