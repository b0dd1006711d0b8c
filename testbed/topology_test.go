package testbed

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestTopologyForwarding checks the namespaces themselves, with plain
// kernel forwarding in the router and no unicorn: the phone resolves with
// the fake world's DNS, fetches the fake services over HTTPS (IPv4 and
// IPv6, DoH included) and reaches the bootnode over TCP and UDP.
func TestTopologyForwarding(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test in network namespaces")
	}
	topo := NewTopology(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Before forwarding is on, the phone reaches the router but no further.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := topo.Phone.Query(short, net.JoinHostPort(ResolverAddr4, "53"), "tcp", "example.org", dns.TypeA); err == nil {
		t.Fatalf("the phone reached the fake world's DNS before the router forwards")
	}
	topo.Forward(t)

	resolver := net.JoinHostPort(ResolverAddr4, "53")
	a, err := topo.Phone.Resolve(ctx, resolver, "mainnet.infura.io")
	if err != nil || a != netip.MustParseAddr(InfuraAddr4) {
		t.Fatalf("mainnet.infura.io from the phone: %v, %v; want %s", a, err, InfuraAddr4)
	}
	hc := topo.Phone.HTTPClient(resolver)
	for _, u := range []string{"https://example.org/", "http://example.org/", "https://[" + SiteAddr6 + "]/"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s from the phone: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != SiteBody {
			t.Errorf("GET %s: %q, want the site", u, body)
		}
	}
	resp, err := hc.Get("https://dns.google" + DoHPath + "?dns=AAABAAABAAAAAAAAB2V4YW1wbGUDb3JnAAABAAE")
	if err != nil {
		t.Fatalf("DoH from the phone: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/dns-message" {
		t.Errorf("DoH: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}

	for _, a := range []string{BootnodeAddr4, BootnodeAddr6} {
		hp := net.JoinHostPort(a, strconv.Itoa(BootnodePort))
		for _, proto := range []string{"tcp", "udp"} {
			if err := echoOnce(ctx, topo.Phone, proto, hp); err != nil {
				t.Errorf("%s %s from the phone: %v", proto, hp, err)
			}
			if topo.Echo.Seen(hp, proto) == 0 {
				t.Errorf("%s %s: the echo server saw nothing", proto, hp)
			}
		}
	}
}

// echoOnce sends a line to an echo server from n and waits for it back.
func echoOnce(ctx context.Context, n *Netns, proto, hp string) error {
	c, err := n.DialContext(ctx, proto, hp)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := []byte("hello unicorn\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	return err
}
