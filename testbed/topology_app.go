package testbed

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// The app's services a Topology gets from StartAppServices, on Inet
// beside the Topology's own (see the address constants there).
const (
	StatusNodeAddr4 = "203.0.113.21" // boot-1: a Status node speaking the probe's protocol on NodePort
	PricesAddr4     = "203.0.113.30" // min-api.cryptocompare.com: HTTPS (fake price API)
	CommunityAddr4  = "203.0.113.50" // the community node, on NodePort
)

// StartAppServices adds to t's fake internet what the probe tries besides
// Infura, Etherscan and example.org: a Status node (boot-1) and the
// community node on NodePort (TCP and UDP), and the price API over HTTPS
// as min-api.cryptocompare.com. It returns the probe's targets, by the
// names the app uses. Everything stops when tb ends.
func (t *Topology) StartAppServices(tb testing.TB) []ProbeTarget {
	tb.Helper()
	for _, a := range []string{StatusNodeAddr4, CommunityAddr4, PricesAddr4} {
		addrs(tb, t.Inet, "lo", a+"/32")
	}
	t.DNS.Map("min-api.cryptocompare.com", netip.MustParseAddr(PricesAddr4))
	for _, n := range []struct{ name, ip string }{{"boot-1", StatusNodeAddr4}, {CommunityName, CommunityAddr4}} {
		var node *Node
		err := t.Inet.Do(func() (err error) {
			node, err = StartNode(n.name, n.ip, NodePort)
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { node.Close() })
	}
	l, err := t.Inet.Listen("tcp", net.JoinHostPort(PricesAddr4, "443"))
	if err != nil {
		tb.Fatalf("testbed: fake price API: %v", err)
	}
	serveOn(tb, l, Prices(), TestCA().ServerConfig())
	np := strconv.Itoa(NodePort)
	return []ProbeTarget{
		{Service: "infura", Kind: ProbeJSONRPC, URL: "https://mainnet.infura.io/v3/testbed"},
		{Service: "etherscan", Kind: ProbeHTTP, URL: "https://api.etherscan.io/api?module=account&action=txlist&address=0x01"},
		{Service: "prices", Kind: ProbeHTTP, URL: "https://min-api.cryptocompare.com/data/price?fsym=ETH&tsyms=USD"},
		{Service: "status-cluster", Kind: ProbeNode, Addr: net.JoinHostPort(StatusNodeAddr4, np), UDP: true},
		{Service: "community", Kind: ProbeNode, Addr: net.JoinHostPort(CommunityAddr4, np), UDP: true},
		{Service: "example", Kind: ProbeHTTP, URL: "https://example.org/"},
	}
}
