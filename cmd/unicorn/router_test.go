package main

import (
	"net"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/chaos-unicorn/unicorn/rules"
)

// TestLANNotServed: router up warns about the LAN networks whose devices
// --allow-clients (or the default private ranges) leaves out, and only
// about those.
func TestLANNotServed(t *testing.T) {
	ipnet := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	lan := []net.Addr{
		ipnet("192.168.1.1/24"),   // a home LAN: served by default
		ipnet("192.0.2.1/24"),     // documentation addresses: not by default
		ipnet("2001:db8:1::1/64"), // a global IPv6 prefix: not by default
		ipnet("fe80::1/64"),       // link-local: never worth a warning
		&net.IPAddr{IP: net.ParseIP("198.51.100.1")},
	}
	if got, want := lanNotServed(lan, rules.DefaultClients()), []string{"192.0.2.0/24", "2001:db8:1::/64"}; !reflect.DeepEqual(got, want) {
		t.Errorf("default clients: %q, want %q", got, want)
	}
	allowed, err := clientSet([]string{"192.0.2.0/24", "2001:db8:1::/64"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := lanNotServed(lan, allowed), []string{"192.168.1.0/24"}; !reflect.DeepEqual(got, want) {
		t.Errorf("--allow-clients 192.0.2.0/24 2001:db8:1::/64: %q, want %q", got, want)
	}
}

// TestRouterWithoutNFT: on a machine without nft, router status, down and
// renew say what to install instead of an exec error.
func TestRouterWithoutNFT(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: router status asks for root before it looks for nft")
	}
	t.Setenv("PATH", t.TempDir())
	for _, cmd := range []string{"status", "down", "renew"} {
		_, stderr, code := runCLI(t, "router", cmd)
		if code != 1 || !strings.Contains(stderr, "nft (nftables) is not installed: apt-get install nftables") {
			t.Errorf("router %s without nft: exit %d, %q; want it to say what to install", cmd, code, stderr)
		}
	}
}
