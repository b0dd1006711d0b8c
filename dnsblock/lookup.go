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
	// Most lookups of a busy proxy are cache hits: answer those without
	// a goroutine. A and AAAA misses are asked together, as a stub would.
	v4, ok4 := s.cachedAddrs(name, dns.TypeA)
	v6, ok6 := s.cachedAddrs(name, dns.TypeAAAA)
	var err4, err6 error
	switch {
	case ok4 && ok6:
	case ok4:
		v6, err6 = s.lookupType(name, dns.TypeAAAA)
	case ok6:
		v4, err4 = s.lookupType(name, dns.TypeA)
	default:
		aaaa := make(chan error, 1)
		go func() {
			var err error
			v6, err = s.lookupType(name, dns.TypeAAAA)
			aaaa <- err
		}()
		v4, err4 = s.lookupType(name, dns.TypeA)
		select {
		case err6 = <-aaaa:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// The slices belong to cached answers: copy, never append to them.
	addrs := make([]netip.Addr, 0, len(v4)+len(v6))
	addrs = append(append(addrs, v4...), v6...)
	if len(addrs) == 0 {
		if err := errors.Join(err4, err6); err != nil {
			return nil, fmt.Errorf("lookup %s: %w", host, err)
		}
		return nil, fmt.Errorf("lookup %s: no addresses", host)
	}
	return addrs, nil
}

// cachedAddrs returns the cached addresses of one type for name, if the
// cache holds an answer.
func (s *Server) cachedAddrs(name string, qtype uint16) ([]netip.Addr, bool) {
	if a := s.cache.get(cacheKey{name: name, qtype: qtype, qclass: dns.ClassINET}, s.now()); a != nil {
		return a.addrs, true
	}
	return nil, false
}

// lookupType asks the upstreams for the addresses of one type for name. A
// negative answer is no addresses and no error.
func (s *Server) lookupType(name string, qtype uint16) ([]netip.Addr, error) {
	key := cacheKey{name: name, qtype: qtype, qclass: dns.ClassINET}
	a, err := s.resolve(key, dns.Question{Name: name, Qtype: qtype, Qclass: dns.ClassINET})
	if err != nil {
		return nil, err
	}
	return a.addrs, nil
}
