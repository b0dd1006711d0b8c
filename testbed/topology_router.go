package testbed

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// StartRouter runs `unicorn router up` in t.Router for the LAN bridge,
// with the fake world's DNS as upstream and the LAN's ranges as allowed
// clients, then args (which may override --rules and the rest). It waits
// for the banner like Start; the process is stopped when tb ends, which
// removes the table it installed.
func (t *Topology) StartRouter(tb testing.TB, args ...string) *Unicorn {
	tb.Helper()
	u, err := launch(tb, t.Router.Exec(append(t.routerArgs(tb), args...)...), t.Router.Name)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

func (t *Topology) routerArgs(tb testing.TB) []string {
	return []string{Binary(tb), "router", "up", "--lan", TopoLAN,
		"--upstream", ResolverAddr4 + ":53",
		"--allow-clients", "192.0.2.0/24", "--allow-clients", "2001:db8:1::/64",
		"--proxy", "127.0.0.1:0", "--log-format", "json", "--ca-dir", tb.TempDir()}
}

// RunRouter runs `unicorn router up` (as StartRouter does) to completion,
// at most RunTimeout; for --ttl and error tests.
func (t *Topology) RunRouter(tb testing.TB, args ...string) Result {
	tb.Helper()
	return t.Router.Run(tb, append(t.routerArgs(tb), args...)...)
}

// Run runs argv inside n to completion, at most RunTimeout (then it is
// killed by its own pid and tb fails), and returns its output and exit
// code.
func (n *Netns) Run(tb testing.TB, argv ...string) Result {
	tb.Helper()
	return runArgv(tb, n.Exec(argv...), strings.Join(n.Exec(argv...), " "))
}

// WaitExit waits at most timeout for unicorn to exit by itself (a test
// that ends it another way: router down, --ttl, SIGKILL) and returns what
// Wait returned; the exit is then not a failure of the test.
func (u *Unicorn) WaitExit(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-u.exited:
		u.stopped, u.reported = true, true // the test has taken the exit over
		return u.waitErr
	case <-t.C:
		return fmt.Errorf("unicorn (pid %d) still running after %v", u.Pid(), timeout)
	}
}

// Table returns `nft list table inet unicorn` in the router, or "" when
// there is no such table.
func (t *Topology) Table(tb testing.TB) string {
	tb.Helper()
	out, err := ipCmd("netns", "exec", t.Router.Name, "nft", "list", "table", "inet", "unicorn")
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return ""
		}
		tb.Fatalf("testbed: nft list table in %s: %v: %s", t.Router.Name, err, out)
	}
	return out
}

// Packet is one IP packet a Capture saw.
type Packet struct {
	Src, Dst netip.Addr
	Proto    uint8 // 6 TCP, 17 UDP, ...
	DstPort  uint16
}

func (p Packet) String() string {
	return fmt.Sprintf("%s -> %s proto %d port %d", p.Src, p.Dst, p.Proto, p.DstPort)
}

// Capture records the IP packets crossing Inet's interface to the router,
// with a raw AF_PACKET socket (no libpcap, no tcpdump).
type Capture struct {
	fd   int
	mu   sync.Mutex
	pkts []Packet
	stop chan struct{}
	done chan struct{}
}

// Capture starts capturing on Inet's eth0; Stop ends it (also when the
// test ends).
func (t *Topology) Capture(tb testing.TB) *Capture {
	tb.Helper()
	c := &Capture{stop: make(chan struct{}), done: make(chan struct{})}
	err := t.Inet.Do(func() error {
		ifi, err := netInterface("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		c.fd = fd
		return nil
	})
	if err != nil {
		tb.Fatalf("testbed: capture in %s: %v", t.Inet.Name, err)
	}
	go c.loop()
	tb.Cleanup(func() { c.Stop() })
	return c
}

func (c *Capture) loop() {
	defer close(c.done)
	defer unix.Close(c.fd)
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // the receive timeout: look at stop again
		}
		if p, ok := parseIP(buf[:n]); ok {
			c.mu.Lock()
			c.pkts = append(c.pkts, p)
			c.mu.Unlock()
		}
	}
}

// Stop ends the capture and returns every packet seen.
func (c *Capture) Stop() []Packet {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Packet(nil), c.pkts...)
}

// parseIP reads the addresses, protocol and destination port of an IPv4
// or IPv6 packet (without extension headers).
func parseIP(b []byte) (Packet, bool) {
	var p Packet
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < ihl {
			return p, false
		}
		p.Proto = b[9]
		p.Src, _ = netip.AddrFromSlice(b[12:16])
		p.Dst, _ = netip.AddrFromSlice(b[16:20])
		l4 = b[ihl:]
	case len(b) >= 40 && b[0]>>4 == 6:
		p.Proto = b[6]
		p.Src, _ = netip.AddrFromSlice(b[8:24])
		p.Dst, _ = netip.AddrFromSlice(b[24:40])
		l4 = b[40:]
	default:
		return p, false
	}
	if (p.Proto == 6 || p.Proto == 17) && len(l4) >= 4 {
		p.DstPort = uint16(l4[2])<<8 | uint16(l4[3])
	}
	return p, true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
