package testbed

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` puts the namespace handles.
const netnsDir = "/run/netns"

// Do runs fn with the calling goroutine's thread inside n, and returns
// what fn returns. Sockets fn creates belong to n for their whole life and
// may be used from any goroutine afterwards. fn must not start goroutines
// that create sockets (they would run on other threads, outside n): the
// helpers below (Listen, ListenPacket, Dial) create the socket within fn
// and return it. If the thread cannot be moved back, it is retired (the
// goroutine exits with it locked), so no other goroutine ever runs in n
// by accident.
func (n *Netns) Do(fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, n.Name))
	if err != nil {
		return fmt.Errorf("testbed: namespace %s: %w", n.Name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testbed: own namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testbed: setns %s: %w", n.Name, err)
	}
	defer func() {
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// Listen opens a TCP listener on addr inside n.
func (n *Netns) Listen(network, addr string) (l net.Listener, err error) {
	err = n.Do(func() error {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket on addr inside n.
func (n *Netns) ListenPacket(network, addr string) (pc net.PacketConn, err error) {
	err = n.Do(func() error {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// DialContext connects from inside n, as a device in n would, to addr,
// which must be an "ip:port" (names are not resolved here: a device's
// name resolution is what the tests look at, so they ask DNS themselves).
// It fits http.Transport.DialContext.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("testbed: dial from %s: %w (an ip:port, not a name)", n.Name, err)
	}
	err = n.Do(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Query asks server ("ip:port") over network ("udp" or "tcp") for name's
// records of type qtype, from inside n, as a device configured with that
// resolver would.
func (n *Netns) Query(ctx context.Context, server, network, name string, qtype uint16) (*dns.Msg, error) {
	c, err := n.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	cl := &dns.Client{Net: network}
	r, _, err := cl.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: c})
	return r, err
}

// Resolve returns the first address server gives for name (A, then
// AAAA), asked from inside n over UDP.
func (n *Netns) Resolve(ctx context.Context, server, name string) (netip.Addr, error) {
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := n.Query(ctx, server, "udp", name, qt)
		if err != nil {
			return netip.Addr{}, err
		}
		if r.Rcode != dns.RcodeSuccess {
			return netip.Addr{}, fmt.Errorf("%s: %s", name, dns.RcodeToString[r.Rcode])
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				a, _ := netip.AddrFromSlice(rr.A)
				return a.Unmap(), nil
			case *dns.AAAA:
				a, _ := netip.AddrFromSlice(rr.AAAA)
				return a, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: no address", name)
}

// HTTPClient returns a client that connects from inside n, trusting only
// TestCA, with no proxy. Names in URLs are resolved by asking the resolver
// at dnsServer ("ip:port") from inside n; with dnsServer "" URLs must
// hold addresses. Each request gets a new connection.
func (n *Netns) HTTPClient(dnsServer string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil && dnsServer != "" {
			a, err := n.Resolve(ctx, dnsServer, host)
			if err != nil {
				return nil, err
			}
			addr = net.JoinHostPort(a.String(), port)
		}
		return n.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DialContext:       dial,
		TLSClientConfig:   TestCA().ClientConfig(),
		DisableKeepAlives: true,
		ForceAttemptHTTP2: false,
	}}
}

// netInterface returns the index of the interface called name in the
// calling thread's namespace.
func netInterface(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}
