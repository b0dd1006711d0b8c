package testbed

import (
	"errors"
	"net"
	"strconv"
)

// NetFakes is the fake internet of `unicorn testbed up --netns`: a
// Topology (devices Phone and Phone2 on the LAN bridge of Router, Router's
// WAN leading to Inet; see NewTopology) whose Inet runs the app's services
// on RFC 5737 and RFC 3849 addresses, over HTTPS with TestCA's
// certificates, with the fake world's resolver at ResolverAddr4:53. The
// router forwards plainly, so every service is reachable from the devices
// until `unicorn router up` runs in the router's namespace. Nothing is
// made in the calling process's own namespace: the veths and the bridge
// live in the four namespaces, and go with them.
type NetFakes struct {
	// Namespaces are the namespaces' names by role: "phone", "phone2",
	// "router" and "inet".
	Namespaces map[string]string
	// DNS is the fake world's resolver ("203.0.113.53:53", UDP and TCP);
	// the router's unicorn takes the LAN's DNS over whatever the address.
	DNS string
	// Targets are what the probe tries, by the names the app uses.
	Targets []ProbeTarget
	// Listeners says what runs where.
	Listeners []Listener

	Topo *Topology
	s    *session
}

// StartNetFakes builds the namespaces and starts the fake internet in
// them; Close stops it and removes the namespaces. It needs root.
func StartNetFakes() (*NetFakes, error) {
	if why := NetnsUnavailable(); why != "" {
		return nil, errors.New("testbed: " + why)
	}
	f := &NetFakes{s: &session{}}
	err := f.s.run(func() {
		f.Topo = NewTopology(f.s)
		f.Targets = f.Topo.StartAppServices(f.s)
		f.Topo.Forward(f.s)
	})
	if err != nil {
		return nil, err
	}
	t := f.Topo
	f.Namespaces = map[string]string{"phone": t.Phone.Name, "phone2": t.Phone2.Name, "router": t.Router.Name, "inet": t.Inet.Name}
	f.DNS = net.JoinHostPort(ResolverAddr4, "53")
	np := strconv.Itoa(NodePort)
	hp := func(a, port string) string { return net.JoinHostPort(a, port) }
	f.Listeners = []Listener{
		{"resolver", "udp+tcp", f.DNS + ", " + hp(ResolverAddr6, "53"), "the fake world's DNS: the names below, NXDOMAIN for the rest"},
		{"infura", "https", hp(InfuraAddr4, "443") + ", " + hp(InfuraAddr6, "443"), "JSON-RPC (eth_blockNumber, eth_getBalance, eth_call, eth_sendRawTransaction, batches; WebSocket newHeads): https://mainnet.infura.io/v3/testbed"},
		{"etherscan", "https", hp(EtherscanAddr4, "443"), "account txlist API: https://api.etherscan.io/api?module=account&action=txlist&address=0x01"},
		{"prices", "https", hp(PricesAddr4, "443"), "price API: https://min-api.cryptocompare.com/data/price?fsym=ETH&tsyms=USD"},
		{"example", "http+https", SiteAddr4 + " :80 :443, " + SiteAddr6, "a site no scenario touches: https://example.org/"},
		{"encrypted-dns", "https+dot", hp(DoHAddr4, "443") + ", :853", "DoH (" + DoHPath + ") and DoT as dns.google and cloudflare-dns.com"},
		{"status-cluster", "tcp+udp", hp(StatusNodeAddr4, np), "Status bootnode and mailserver boot-1 (HELLO/WELCOME over TCP, PING/PONG over UDP)"},
		{"echo", "tcp+udp", hp(BootnodeAddr4, np) + ", " + hp(BootnodeAddr6, np), "an echo server where a bootnode would be"},
		{"community", "tcp+udp", hp(CommunityAddr4, np), "community node: must stay reachable"},
	}
	return f, nil
}

// Close stops the servers and removes the namespaces; it may be called
// twice.
func (f *NetFakes) Close() error { return f.s.close() }
