package testbed

import (
	"net/netip"
	"testing"
)

// World is a fake internet on loopback: one upstream resolver that maps
// ScenarioNames to 127.0.0.1, and the fake services, each over plain HTTP
// and over TLS on its own port of 127.0.0.1. Reach a service by name
// through unicorn with the port of its address, e.g.
// http://example.org:<port of Site>/. Every field is set by NewWorld;
// everything stops when the test ends.
type World struct {
	// DNS is the upstream resolver: pass DNSAddr to unicorn with
	// --upstream, map test names with DNS.Map, and count the questions
	// that reached it with DNS.Questions.
	DNS     *DNS
	DNSAddr string // "127.0.0.1:port", UDP and TCP

	// Site serves SiteBody (the fake example.org), over HTTP and TLS.
	Site, SiteTLS string
	// Infura is the fake Infura JSON-RPC endpoint (see Infura).
	Infura, InfuraTLS string
	// Etherscan is the fake Etherscan REST API (see Etherscan).
	Etherscan, EtherscanTLS string
}

// NewWorld starts a World.
func NewWorld(tb testing.TB) *World {
	tb.Helper()
	w := &World{DNS: NewDNS()}
	for _, n := range ScenarioNames {
		w.DNS.Map(n, loopback)
	}
	w.DNSAddr, _ = w.DNS.Start(tb)
	w.Site, _ = ServeHTTP(tb, "127.0.0.1", Site(SiteBody))
	w.SiteTLS, _ = ServeHTTPS(tb, "127.0.0.1", Site(SiteBody))
	w.Infura, _ = ServeHTTP(tb, "127.0.0.1", Infura())
	w.InfuraTLS, _ = ServeHTTPS(tb, "127.0.0.1", Infura())
	w.Etherscan, _ = ServeHTTP(tb, "127.0.0.1", Etherscan())
	w.EtherscanTLS, _ = ServeHTTPS(tb, "127.0.0.1", Etherscan())
	return w
}

// Start starts unicorn (see Start) with --upstream set to the World's
// resolver, which is then also Unicorn.Upstream.
func (w *World) Start(tb testing.TB, args ...string) *Unicorn {
	tb.Helper()
	u := Start(tb, append([]string{"--upstream", w.DNSAddr}, args...)...)
	u.Upstream = w.DNS
	return u
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
