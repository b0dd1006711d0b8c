package dnsblock

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Lookup resolves host to its addresses at the upstream resolvers, with
// the server's failover, timeout and cache, and never through the rules:
// it is unicorn's own lookup, for the proxy's allowed hosts. IPv4
// addresses come first. The addresses are remembered in Names like any
// forwarded answer. Lookup works whether or not the server is serving.
func (s *Server) Lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	name := dns.Fqdn(strings.ToLower(host))
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("lookup %s: not a domain name", host)
	}
	type result struct {
		addrs []netip.Addr
		err   error
	}
	// A and AAAA are asked together, as a stub resolver would.
	aaaa := make(chan result, 1)
	go func() {
		addrs, err := s.lookupType(name, dns.TypeAAAA)
		aaaa <- result{addrs, err}
	}()
	v4, err4 := s.lookupType(name, dns.TypeA)
	var r6 result
	select {
	case r6 = <-aaaa:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The slices belong to cached answers: copy, never append to them.
	addrs := make([]netip.Addr, 0, len(v4)+len(r6.addrs))
	addrs = append(append(addrs, v4...), r6.addrs...)
	if len(addrs) == 0 {
		if err := errors.Join(err4, r6.err); err != nil {
			return nil, fmt.Errorf("lookup %s: %w", host, err)
		}
		return nil, fmt.Errorf("lookup %s: no addresses", host)
	}
	return addrs, nil
}

// lookupType returns the addresses of one type for name, from the cache
// or the upstreams. A negative answer is no addresses and no error.
func (s *Server) lookupType(name string, qtype uint16) ([]netip.Addr, error) {
	key := cacheKey{name: name, qtype: qtype, qclass: dns.ClassINET}
	if a := s.cache.get(key, s.now()); a != nil {
		return a.addrs, nil
	}
	a, err := s.resolve(key, dns.Question{Name: name, Qtype: qtype, Qclass: dns.ClassINET})
	if err != nil {
		return nil, err
	}
	return a.addrs, nil
}
