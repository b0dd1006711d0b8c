package testbed

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
)

// The addresses of a Topology: documentation ranges only (RFC 5737 and
// RFC 3849), routed nowhere outside the namespaces.
const (
	// TopoLAN is the router's LAN interface: a bridge the devices hang on.
	TopoLAN = "lan0"
	// TopoWAN is the router's interface towards Inet.
	TopoWAN = "wan0"

	RouterLAN4  = "192.0.2.1"
	RouterLAN6  = "2001:db8:1::1"
	PhoneAddr4  = "192.0.2.10" // Phone
	PhoneAddr6  = "2001:db8:1::10"
	Phone2Addr4 = "192.0.2.11" // Phone2, the device a clients: rule spares
	Phone2Addr6 = "2001:db8:1::11"

	RouterWAN4 = "198.51.100.1"
	RouterWAN6 = "2001:db8:2::1"
	InetWAN4   = "198.51.100.2"
	InetWAN6   = "2001:db8:2::2"

	// The fake world's services, on Inet.
	InfuraAddr4    = "203.0.113.10" // mainnet.infura.io: HTTPS (fake Infura), UDP echo on 443
	InfuraAddr6    = "2001:db8:3::10"
	EtherscanAddr4 = "203.0.113.11" // api.etherscan.io: HTTPS (fake Etherscan)
	SiteAddr4      = "203.0.113.12" // example.org: HTTP, HTTPS, UDP echo on 443
	SiteAddr6      = "2001:db8:3::12"
	BootnodeAddr4  = "203.0.113.20" // a Status bootnode by address: TCP and UDP echo on BootnodePort
	BootnodeAddr6  = "2001:db8:3::20"
	ResolverAddr4  = "203.0.113.53" // the fake world's authoritative DNS, port 53
	ResolverAddr6  = "2001:db8:3::53"
	DoHAddr4       = "203.0.113.54" // dns.google: DoH on 443 (/dns-query), DoT on 853

	BootnodePort = 30303
)

// TopoNames are the names the fake world's DNS knows, and their addresses.
var TopoNames = map[string][]string{
	"mainnet.infura.io":  {InfuraAddr4, InfuraAddr6},
	"ropsten.infura.io":  {InfuraAddr4, InfuraAddr6},
	"api.etherscan.io":   {EtherscanAddr4},
	"example.org":        {SiteAddr4, SiteAddr6},
	"dns.google":         {DoHAddr4},
	"cloudflare-dns.com": {DoHAddr4},
}

// Topology is a home network in network namespaces: two devices (Phone,
// Phone2) on a bridge (TopoLAN) of Router, whose other interface (TopoWAN)
// leads to Inet, the fake internet. Devices route everything via the
// router (192.0.2.1, 2001:db8:1::1); the router routes everything to Inet.
// Nothing forwards or translates until a test turns it on (unicorn router
// up, or Forward for a baseline). Inet runs, in this test process, the
// fake world's services (see the address constants): an authoritative
// DNS for TopoNames, the fake Infura and Etherscan and a site over HTTPS
// with TestCA certificates, TCP and UDP echo servers standing in for a
// bootnode and for QUIC, and DoH and DoT endpoints. Everything is removed
// when the test ends: servers first, then the namespaces by name.
type Topology struct {
	Phone, Phone2, Router, Inet *Netns
	// DNS is the authoritative DNS of the fake world (ResolverAddr4:53).
	DNS *DNS
	// Echo counts what reached the TCP and UDP echo servers.
	Echo *Echo
}

// NewTopology builds a Topology, or skips tb with the reason when
// namespaces cannot be made here (not root, no iproute2).
func NewTopology(tb testing.TB) *Topology {
	tb.Helper()
	if why := NetnsUnavailable(); why != "" {
		tb.Skipf("skipping a test in network namespaces: %s", why)
	}
	t := &Topology{
		Router: NewNetns(tb, "router"),
		Inet:   NewNetns(tb, "inet"),
		Phone:  NewNetns(tb, "phone"),
		Phone2: NewNetns(tb, "phone2"),
		DNS:    NewDNS(),
		Echo:   &Echo{},
	}
	r := t.Router
	r.IP(tb, "link", "add", TopoLAN, "type", "bridge")
	r.IP(tb, "link", "set", TopoLAN, "up")
	addrs(tb, r, TopoLAN, RouterLAN4+"/24", RouterLAN6+"/64")
	for i, dev := range []struct {
		ns     *Netns
		a4, a6 string
	}{{t.Phone, PhoneAddr4, PhoneAddr6}, {t.Phone2, Phone2Addr4, Phone2Addr6}} {
		port := "lanp" + strconv.Itoa(i+1)
		r.IP(tb, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", dev.ns.Name)
		r.IP(tb, "link", "set", port, "master", TopoLAN, "up")
		dev.ns.IP(tb, "link", "set", "eth0", "up")
		addrs(tb, dev.ns, "eth0", dev.a4+"/24", dev.a6+"/64")
		dev.ns.IP(tb, "route", "add", "default", "via", RouterLAN4)
		dev.ns.IP(tb, "-6", "route", "add", "default", "via", RouterLAN6)
	}
	r.IP(tb, "link", "add", TopoWAN, "type", "veth", "peer", "name", "eth0", "netns", t.Inet.Name)
	r.IP(tb, "link", "set", TopoWAN, "up")
	addrs(tb, r, TopoWAN, RouterWAN4+"/24", RouterWAN6+"/64")
	r.IP(tb, "route", "add", "default", "via", InetWAN4)
	r.IP(tb, "-6", "route", "add", "default", "via", InetWAN6)

	in := t.Inet
	in.IP(tb, "link", "set", "eth0", "up")
	addrs(tb, in, "eth0", InetWAN4+"/24", InetWAN6+"/64")
	// The services' addresses live on Inet's loopback (no dummy
	// interfaces needed): the router routes to them via InetWAN.
	for _, a := range []string{InfuraAddr4, EtherscanAddr4, SiteAddr4, BootnodeAddr4, ResolverAddr4, DoHAddr4} {
		addrs(tb, in, "lo", a+"/32")
	}
	for _, a := range []string{InfuraAddr6, SiteAddr6, BootnodeAddr6, ResolverAddr6} {
		addrs(tb, in, "lo", a+"/128")
	}
	// Without the router's NAT (the plain forwarding baseline), replies
	// find their way back.
	in.IP(tb, "route", "add", "192.0.2.0/24", "via", RouterWAN4)
	in.IP(tb, "-6", "route", "add", "2001:db8:1::/64", "via", RouterWAN6)

	t.startServices(tb)
	return t
}

// addrs adds addresses to dev in n, without IPv6 duplicate address
// detection (which would keep them unusable for a second or two).
func addrs(tb testing.TB, n *Netns, dev string, cidrs ...string) {
	tb.Helper()
	for _, c := range cidrs {
		args := []string{"addr", "add", c, "dev", dev}
		if p := netip.MustParsePrefix(c); p.Addr().Is6() {
			args = append(args, "nodad")
		}
		n.IP(tb, args...)
	}
}

// Forward turns on plain IPv4 and IPv6 forwarding in the router, without
// unicorn: the baseline of the router benchmarks.
func (t *Topology) Forward(tb testing.TB) {
	tb.Helper()
	for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		t.Router.Sh(tb, "echo 1 > "+p)
	}
}

// Sh runs a shell command line inside n and fails tb if it fails.
func (n *Netns) Sh(tb testing.TB, line string) string {
	tb.Helper()
	out, err := ipCmd("netns", "exec", n.Name, "sh", "-c", line)
	if err != nil {
		tb.Fatalf("testbed: in %s: %s: %v: %s", n.Name, line, err, out)
	}
	return out
}

// startServices starts the fake world's servers in Inet.
func (t *Topology) startServices(tb testing.TB) {
	tb.Helper()
	for name, as := range TopoNames {
		var ips []netip.Addr
		for _, a := range as {
			ips = append(ips, netip.MustParseAddr(a))
		}
		t.DNS.Map(name, ips...)
	}
	for _, a := range []string{ResolverAddr4, ResolverAddr6} {
		hp := net.JoinHostPort(a, "53")
		pc, err := t.Inet.ListenPacket("udp", hp)
		if err != nil {
			tb.Fatalf("testbed: fake world DNS: %v", err)
		}
		l, err := t.Inet.Listen("tcp", hp)
		if err != nil {
			pc.Close()
			tb.Fatalf("testbed: fake world DNS: %v", err)
		}
		t.DNS.serveOn(tb, pc, l)
	}
	tlsConf := TestCA().ServerConfig()
	for _, s := range []struct {
		addrs []string
		port  string
		h     http.Handler
		tls   bool
	}{
		{[]string{InfuraAddr4, InfuraAddr6}, "443", Infura(), true},
		{[]string{EtherscanAddr4}, "443", Etherscan(), true},
		{[]string{SiteAddr4, SiteAddr6}, "443", Site(SiteBody), true},
		{[]string{SiteAddr4, SiteAddr6}, "80", Site(SiteBody), false},
		{[]string{DoHAddr4}, "443", t.DNS.DoH(), true},
	} {
		for _, a := range s.addrs {
			l, err := t.Inet.Listen("tcp", net.JoinHostPort(a, s.port))
			if err != nil {
				tb.Fatalf("testbed: fake world: %v", err)
			}
			conf := tlsConf
			if !s.tls {
				conf = nil
			}
			serveOn(tb, l, s.h, conf)
		}
	}
	l, err := t.Inet.Listen("tcp", net.JoinHostPort(DoHAddr4, "853"))
	if err != nil {
		tb.Fatalf("testbed: fake world DoT: %v", err)
	}
	t.DNS.serveDoT(tb, l, tlsConf)

	bp := strconv.Itoa(BootnodePort)
	for _, hp := range []string{
		net.JoinHostPort(BootnodeAddr4, bp), net.JoinHostPort(BootnodeAddr6, bp),
	} {
		l, err := t.Inet.Listen("tcp", hp)
		if err != nil {
			tb.Fatalf("testbed: fake bootnode: %v", err)
		}
		t.Echo.serveTCP(tb, l)
	}
	for _, hp := range []string{
		net.JoinHostPort(BootnodeAddr4, bp), net.JoinHostPort(BootnodeAddr6, bp),
		net.JoinHostPort(InfuraAddr4, "443"), net.JoinHostPort(InfuraAddr6, "443"),
		net.JoinHostPort(SiteAddr4, "443"), net.JoinHostPort(SiteAddr6, "443"),
	} {
		pc, err := t.Inet.ListenPacket("udp", hp)
		if err != nil {
			tb.Fatalf("testbed: fake UDP service: %v", err)
		}
		t.Echo.serveUDP(tb, pc)
	}
}

// Echo is the TCP and UDP echo servers of a Topology. They send back what
// they receive and count, per local "ip:port/proto", what reached them.
type Echo struct {
	mu   sync.Mutex
	seen map[string]int
}

// Seen returns how many connections (TCP) or datagrams (UDP) reached the
// echo server at hostport ("203.0.113.20:30303") over proto ("tcp" or "udp").
func (e *Echo) Seen(hostport, proto string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return 0
	}
	return e.seen[ap.String()+"/"+proto]
}

func (e *Echo) count(local net.Addr, proto string) {
	ap, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen == nil {
		e.seen = make(map[string]int)
	}
	e.seen[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()+"/"+proto]++
}

func (e *Echo) serveTCP(tb testing.TB, l net.Listener) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.count(c.LocalAddr(), "tcp")
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				copyEcho(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

func (e *Echo) serveUDP(tb testing.TB, pc net.PacketConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			e.count(pc.LocalAddr(), "udp")
			pc.WriteTo(buf[:n], from)
		}
	}()
	tb.Cleanup(func() {
		pc.Close()
		<-done
	})
}

// String lists what reached the echo servers, for failure messages.
func (e *Echo) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprint(e.seen)
}

// copyEcho sends back what c sends until it closes.
func copyEcho(c net.Conn) { io.Copy(c, c) }
