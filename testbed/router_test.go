package testbed

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// routerRules: the phone (192.0.2.10) loses Infura and the bootnode, and
// everybody loses Etherscan; the second phone keeps Infura and the
// bootnode (clients: scoping). DNS-over-HTTPS (dns.google) stays
// reachable for the phone and is logged; the second phone loses it.
const routerRules = `
scenario: outage
services:
  infura: {domains: [infura.io]}
  etherscan: {domains: [etherscan.io]}
  bootnode: {ips: [203.0.113.20, "2001:db8:3::20"], ports: [30303]}
  encrypted-dns: {domains: [dns.google], ports: [443, 853]}
devices:
  phone: [192.0.2.10/32, "2001:db8:1::10/128"]
  phone2: [192.0.2.11/32, "2001:db8:1::11/128"]
rules:
  - {service: infura, action: reject, clients: [phone]}
  - {service: etherscan, action: reject}
  - {service: bootnode, action: reject, clients: [phone]}
  - {service: encrypted-dns, action: reject, clients: [phone2]}
`

func writeRules(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "outage.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// routerDNS is the DNS server the devices were given: the router.
var routerDNS = net.JoinHostPort(RouterLAN4, "53")

// TestRouterMode: the phone and a second phone behind `unicorn router
// up`, with no proxy configured, their default route and DNS via the
// router. What each device sees, blocked and allowed, and a capture on the
// fake internet's side showing that nothing from the phone reached a
// blocked destination.
func TestRouterMode(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping router mode in network namespaces")
	}
	topo := NewTopology(t)
	u := topo.StartRouter(t, "--rules", writeRules(t, routerRules))
	if tbl := topo.Table(t); !strings.Contains(tbl, "redirect to :15001") {
		t.Fatalf("no redirect in the installed table:\n%s", tbl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	phone, phone2 := topo.Phone, topo.Phone2
	capture := topo.Capture(t)

	// DNS: the router's own, and a resolver hard-coded in the app (the
	// fake world's, which would answer), over UDP and TCP: NXDOMAIN.
	for _, server := range []string{routerDNS, net.JoinHostPort(ResolverAddr4, "53"), net.JoinHostPort(ResolverAddr6, "53")} {
		for _, network := range []string{"udp", "tcp"} {
			r, err := phone.Query(ctx, server, network, "mainnet.infura.io", dns.TypeA)
			if err != nil || r.Rcode != dns.RcodeNameError {
				t.Errorf("phone asks %s over %s for mainnet.infura.io: %v %v, want NXDOMAIN", server, network, rcode(r), err)
			}
		}
	}
	r, err := phone.Query(ctx, routerDNS, "udp", "use-application-dns.net", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("the DoH canary: %v %v, want NXDOMAIN", rcode(r), err)
	}

	// The blocked name's address is learned (unicorn looks the name up
	// itself) and lands in the firewall's set.
	waitFor(t, 10*time.Second, "the table to hold mainnet.infura.io's addresses", func() bool {
		tbl := topo.Table(t)
		return strings.Contains(tbl, InfuraAddr4) && strings.Contains(tbl, InfuraAddr6)
	})

	// HTTPS to a hard-coded address with the name in SNI: a TLS alert.
	for _, c := range []struct{ addr, name string }{
		{InfuraAddr4, "mainnet.infura.io"}, {InfuraAddr6, "mainnet.infura.io"}, {EtherscanAddr4, "api.etherscan.io"},
	} {
		err := tlsHandshake(ctx, phone, net.JoinHostPort(c.addr, "443"), c.name)
		if err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Errorf("phone TLS to %s (SNI %s): %v, want a TLS access_denied alert", c.addr, c.name, err)
		}
	}
	// By address, no SNI (an app with a cached address): the name comes
	// from what unicorn learned; a reset.
	if err := tcpSilent(ctx, phone, net.JoinHostPort(InfuraAddr4, "443")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("phone TCP to %s:443 without a name: %v, want a reset", InfuraAddr4, err)
	}
	// QUIC (UDP 443) to the blocked name's addresses: refused, so the app
	// falls back to TCP, which is blocked as above.
	for _, a := range []string{InfuraAddr4, InfuraAddr6} {
		if err := echoOnce(ctx, phone, "udp", net.JoinHostPort(a, "443")); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("phone QUIC to %s:443: %v, want refused", a, err)
		}
	}
	// The bootnode by address, TCP and UDP, IPv4 and IPv6.
	bp := strconv.Itoa(BootnodePort)
	for _, a := range []string{BootnodeAddr4, BootnodeAddr6} {
		if err := echoOnce(ctx, phone, "tcp", net.JoinHostPort(a, bp)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("phone TCP to bootnode %s: %v, want a reset", a, err)
		}
		if err := echoOnce(ctx, phone, "udp", net.JoinHostPort(a, bp)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("phone UDP to bootnode %s: %v, want refused", a, err)
		}
	}
	// Nothing of that reached the fake internet.
	blocked := map[netip.Addr]bool{}
	for _, a := range []string{InfuraAddr4, InfuraAddr6, EtherscanAddr4, BootnodeAddr4, BootnodeAddr6} {
		blocked[netip.MustParseAddr(a)] = true
	}
	pkts := capture.Stop()
	if len(pkts) == 0 {
		t.Errorf("the capture saw no packet at all: it captures nothing")
	}
	for _, p := range pkts {
		if blocked[p.Dst] {
			t.Errorf("a packet reached a blocked destination: %v", p)
		}
	}
	for _, s := range []string{BootnodeAddr4 + ":" + bp, "[" + BootnodeAddr6 + "]:" + bp, InfuraAddr4 + ":443", "[" + InfuraAddr6 + "]:443"} {
		for _, proto := range []string{"tcp", "udp"} {
			if n := topo.Echo.Seen(s, proto); n != 0 {
				t.Errorf("%s %s received %d from the phone", proto, s, n)
			}
		}
	}
	t.Logf("capture: %d packets on the fake internet's side, none to a blocked destination", len(pkts))

	// Allowed traffic works end to end, through the transparent listener
	// (TCP) and plain forwarding (UDP), IPv4 and IPv6.
	hc := phone.HTTPClient(routerDNS)
	for _, u := range []string{"https://example.org/", "http://example.org/", "https://[" + SiteAddr6 + "]/"} {
		if body, err := get(hc, u); err != nil || body != SiteBody {
			t.Errorf("phone GET %s: %q %v", u, body, err)
		}
	}
	for _, a := range []string{SiteAddr4, SiteAddr6} {
		if err := echoOnce(ctx, phone, "udp", net.JoinHostPort(a, "443")); err != nil {
			t.Errorf("phone QUIC to example.org %s: %v", a, err)
		}
	}

	// clients: scoping spares the second phone.
	hc2 := phone2.HTTPClient(routerDNS)
	if body, err := get(hc2, "https://mainnet.infura.io/"); err != nil || !strings.Contains(body, "JSON-RPC wants POST") {
		t.Errorf("phone2 GET https://mainnet.infura.io/: %q %v, want the fake Infura", body, err)
	}
	for _, a := range []string{BootnodeAddr4, BootnodeAddr6} {
		for _, proto := range []string{"tcp", "udp"} {
			if err := echoOnce(ctx, phone2, proto, net.JoinHostPort(a, bp)); err != nil {
				t.Errorf("phone2 %s to bootnode %s: %v", proto, a, err)
			}
		}
	}
	if err := echoOnce(ctx, phone2, "udp", net.JoinHostPort(InfuraAddr4, "443")); err != nil {
		t.Errorf("phone2 QUIC to Infura: %v", err)
	}
	// Etherscan is blocked for every device.
	if _, err := get(hc2, "https://api.etherscan.io/api"); err == nil {
		t.Errorf("phone2 reached Etherscan")
	}

	// Encrypted DNS: the phone's DoT and DoH go through and are logged;
	// the second phone's DoH is refused.
	if err := tlsHandshake(ctx, phone, net.JoinHostPort(DoHAddr4, "853"), "dns.google"); err != nil {
		t.Errorf("phone DoT: %v", err)
	}
	u.WaitLog(t, map[string]string{"msg": "encrypted DNS past unicorn's resolver", "protocol": "dns-over-tls", "client": PhoneAddr4})
	if body, err := get(hc, "https://dns.google"+DoHPath+"?dns=AAABAAABAAAAAAAAB2V4YW1wbGUDb3JnAAABAAE"); err != nil {
		t.Errorf("phone DoH: %q %v", body, err)
	}
	u.WaitLog(t, map[string]string{"msg": "encrypted DNS past unicorn's resolver", "protocol": "dns-over-https", "client": PhoneAddr4, "action": "allow"})
	if err := tlsHandshake(ctx, phone2, net.JoinHostPort(DoHAddr4, "443"), "dns.google"); err == nil {
		t.Errorf("phone2 reached DoH, which its rule rejects")
	}
}

func rcode(r *dns.Msg) string {
	if r == nil {
		return "no answer"
	}
	return dns.RcodeToString[r.Rcode]
}

// waitFor polls cond every 100ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tlsHandshake completes a TLS handshake from n to addr with SNI name,
// trusting the test CA.
func tlsHandshake(ctx context.Context, n *Netns, addr, name string) error {
	c, err := n.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	conf := TestCA().ClientConfig()
	conf.ServerName = name
	return tls.Client(c, conf).HandshakeContext(ctx)
}

// tcpSilent connects from n to addr, sends nothing, and reads: what a
// client of a server-first protocol sees.
func tcpSilent(ctx context.Context, n *Netns, addr string) error {
	c, err := n.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// get fetches u with hc within 10 s and returns the body.
func get(hc *http.Client, u string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestRouterRestores: every way router mode ends leaves no unicorn table
// and forwarding as it was: the time limit, `router down` from another
// terminal, SIGTERM, SIGKILL (the crash guard), and renewal postpones the
// limit.
func TestRouterRestores(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping router mode in network namespaces")
	}
	topo := NewTopology(t)
	rules := writeRules(t, routerRules)
	forwarding := func() string {
		return topo.Router.Sh(t, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding | tr '\\n' ' '")
	}
	if f := forwarding(); f != "0 0" {
		t.Fatalf("forwarding before: %q", f)
	}
	// The machine's own firewall: a table of its own, which router mode
	// must leave exactly as it was, every way it ends.
	topo.Router.Sh(t, "nft -f - <<'EOF'\n"+ownTable+"EOF")
	own := topo.Router.Sh(t, "nft list table inet mine")
	gone := func(what string) {
		t.Helper()
		waitFor(t, 10*time.Second, "no unicorn table after "+what, func() bool { return topo.Table(t) == "" })
		if f := forwarding(); f != "0 0" {
			t.Errorf("forwarding after %s: %q, want 0 0 as before", what, f)
		}
		if got := topo.Router.Sh(t, "nft list table inet mine 2>&1 || true"); got != own {
			t.Errorf("the machine's own table after %s:\n%s\nwant it untouched:\n%s", what, got, own)
		}
	}

	t.Run("ttl", func(t *testing.T) {
		r := topo.RunRouter(t, "--rules", rules, "--ttl", "2s")
		if r.Code != 0 || r.Elapsed < 1500*time.Millisecond || r.Elapsed > 15*time.Second {
			t.Errorf("router up --ttl 2s: exit %d after %v\n%s", r.Code, r.Elapsed, r.Stderr)
		}
		if !strings.Contains(r.Stderr, "router mode expired") {
			t.Errorf("no expiry in the log:\n%s", r.Stderr)
		}
		gone("--ttl")
	})

	t.Run("down", func(t *testing.T) {
		u := topo.StartRouter(t, "--rules", rules)
		if f := forwarding(); f != "1 1" {
			t.Errorf("forwarding while up: %q", f)
		}
		st := topo.Router.Run(t, Binary(t), "router", "status")
		if st.Code != 0 || !strings.Contains(st.Stdout, "router mode is on: LAN lan0, unicorn pid "+strconv.Itoa(u.Pid())+" running") {
			t.Errorf("status: exit %d\n%s%s", st.Code, st.Stdout, st.Stderr)
		}
		again := topo.RunRouter(t, "--rules", rules, "--dns", "[::]:5300", "--transparent", "[::]:15002")
		if again.Code == 0 || !strings.Contains(again.Stderr, "router mode is already on") {
			t.Errorf("a second router up: exit %d\n%s", again.Code, again.Stderr)
		}
		if topo.Table(t) == "" {
			t.Fatalf("the refused second router up removed the first one's table")
		}
		down := topo.Router.Run(t, Binary(t), "router", "down")
		if down.Code != 0 || !strings.Contains(down.Stdout, "removed table inet unicorn") {
			t.Errorf("router down: exit %d\n%s%s", down.Code, down.Stdout, down.Stderr)
		}
		if err := u.WaitExit(10 * time.Second); err != nil {
			t.Errorf("router up after router down: %v", err)
		}
		gone("router down")
		st = topo.Router.Run(t, Binary(t), "router", "status")
		if !strings.Contains(st.Stdout, "router mode is off") {
			t.Errorf("status after down: %s", st.Stdout)
		}
	})

	t.Run("sigterm", func(t *testing.T) {
		u := topo.StartRouter(t, "--rules", rules)
		if topo.Table(t) == "" {
			t.Fatal("no table while up")
		}
		if err := u.Stop(); err != nil {
			t.Errorf("router up on SIGTERM: %v", err)
		}
		gone("SIGTERM")
	})

	t.Run("crash", func(t *testing.T) {
		u := topo.StartRouter(t, "--rules", rules)
		if topo.Table(t) == "" {
			t.Fatal("no table while up")
		}
		syscall.Kill(u.Pid(), syscall.SIGKILL)
		u.WaitExit(10 * time.Second)
		gone("SIGKILL (crash guard)")
	})

	t.Run("renew", func(t *testing.T) {
		// --ttl 5s, renewed after 1.5s: the table must outlive the first
		// limit (checked at 5.5s) and go by itself some time after 6.5s.
		u := topo.StartRouter(t, "--rules", rules, "--ttl", "5s")
		start := time.Now()
		time.Sleep(1500 * time.Millisecond)
		if r := topo.Router.Run(t, Binary(t), "router", "renew"); r.Code != 0 {
			t.Fatalf("renew: exit %d %s", r.Code, r.Stderr)
		}
		time.Sleep(time.Until(start.Add(5500 * time.Millisecond)))
		if topo.Table(t) == "" {
			t.Errorf("the table went at the first limit although renewed")
		}
		if err := u.WaitExit(15 * time.Second); err != nil {
			t.Errorf("after renewal: %v", err)
		}
		if el := time.Since(start); el < 6*time.Second {
			t.Errorf("expired after %v; renewal at 1.5s with --ttl 5s should last until about 6.5s", el)
		}
		gone("a renewed --ttl")
	})
}

// ownTable stands for the firewall a machine has before router mode.
const ownTable = `table inet mine {
	set blocked { type ipv4_addr; elements = { 198.51.100.66 } }
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @blocked drop
		tcp dport 2222 accept comment "the owner's rule"
	}
}
`

// TestBuiltinEncryptedDNS: the built-in optional scenario no-encrypted-dns
// rejects the encrypted-dns service's names and its resolvers' addresses on
// the DoH and DoT ports, and leaves plain names alone.
func TestBuiltinEncryptedDNS(t *testing.T) {
	for _, c := range []struct{ target, want string }{
		{"dns.google:853", "TCP   reject by no-encrypted-dns rules[0]"},
		{"dns.google", "DNS   reject by no-encrypted-dns rules[0]"},
		{"8.8.8.8:443/udp", "UDP   reject by no-encrypted-dns rules[0]"},
		{"1.1.1.1:853", "TCP   reject by no-encrypted-dns rules[0]"},
		{"example.org", "DNS   allow"},
	} {
		r := Run(t, "explain", "--scenario", "no-encrypted-dns", c.target)
		if r.Code != 0 || !strings.Contains(r.Stdout, c.want) {
			t.Errorf("explain %s: exit %d, want %q in:\n%s%s", c.target, r.Code, c.want, r.Stdout, r.Stderr)
		}
	}
}

// TestRouterReload: rules reloaded (SIGHUP) while router mode runs are in
// force at once: for new flows, for a UDP flow that was already open (each
// forwarded packet crosses the firewall's rules) and for an open TCP
// connection through the transparent listener, which is cut.
func TestRouterReload(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping router mode in network namespaces")
	}
	topo := NewTopology(t)
	file := writeRules(t, `
scenario: outage
rules:
  - {hosts: [api.etherscan.io], action: reject}
`)
	u := topo.StartRouter(t, "--rules", file)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bp := net.JoinHostPort(BootnodeAddr4, strconv.Itoa(BootnodePort))
	flow, err := topo.Phone.DialContext(ctx, "udp", bp)
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	exchange := func() error {
		flow.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := flow.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := flow.Read(make([]byte, 4))
		return err
	}
	if err := exchange(); err != nil {
		t.Fatalf("UDP to the bootnode before the reload: %v", err)
	}
	if err := echoOnce(ctx, topo.Phone, "tcp", bp); err != nil {
		t.Fatalf("TCP to the bootnode before the reload: %v", err)
	}
	session, err := topo.Phone.DialContext(ctx, "tcp", bp) // a devp2p session, open for hours
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	session.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := session.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(session, make([]byte, 5)); err != nil {
		t.Fatalf("the session before the reload: %v", err)
	}

	os.WriteFile(file, []byte(`
scenario: outage
rules:
  - {ips: [203.0.113.20], ports: [30303], action: reject}
`), 0o644)
	syscall.Kill(u.Pid(), syscall.SIGHUP)
	u.WaitLog(t, map[string]string{"msg": "firewall updated from the rules"})
	if err := exchange(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("the open UDP flow after the reload: %v, want refused", err)
	}
	if err := echoOnce(ctx, topo.Phone, "tcp", bp); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a new TCP connection after the reload: %v, want a reset", err)
	}
	u.WaitLog(t, map[string]string{"msg": "live tunnel: cut by a rule change"})
	session.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := session.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the open session after the reload: read %d, %v; want it cut with a reset", n, err)
	}
}

// TestRouterDryRun: --dry-run prints the table it would install, without
// root or the interface, and changes nothing; --lan is required.
func TestRouterDryRun(t *testing.T) {
	r := Run(t, "router", "up", "--lan", "wlan9", "--dry-run")
	for _, want := range []string{
		"table inet unicorn {",
		`iifname "wlan9" meta l4proto { tcp, udp } th dport 53 redirect to :15353`,
		`iifname "wlan9" meta l4proto tcp redirect to :15001`,
		`reject with icmpx type port-unreachable comment "cud-2019 rules[4] (builtin:cud-2019.yaml:`,
		"47.91.156.93", // a Status cluster address of cud-2019
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("dry run lacks %q (exit %d):\n%s%s", want, r.Code, r.Stdout, r.Stderr)
		}
	}
	// Without --ttl, router mode reverts after 4 hours.
	_, exp, _ := strings.Cut(r.Stdout, "expires=")
	exp, _, _ = strings.Cut(exp, " ")
	if at, err := time.Parse(time.RFC3339, exp); err != nil || time.Until(at) < 4*time.Hour-time.Minute || time.Until(at) > 4*time.Hour {
		t.Errorf("dry run expires %q (%v), want about 4h from now (the default --ttl)", exp, err)
	}
	if r := Run(t, "router", "up", "--dry-run"); r.Code == 0 || !strings.Contains(r.Stderr, "lan") {
		t.Errorf("router up without --lan: exit %d, %s", r.Code, r.Stderr)
	}
}
