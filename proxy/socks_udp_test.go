package proxy_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

// udpEcho starts a UDP server on 127.0.0.1:0 that answers every datagram
// with "echo:" and the datagram, and counts them. It stops when t ends.
func udpEcho(t *testing.T) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	var n atomic.Int64
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			n.Add(1)
			pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:k]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), &n
}

// socksAssociate asks for a UDP association on a new connection and
// returns the connection (closed when t ends) and the relay address.
func socksAssociate(t *testing.T, addr string) (net.Conn, netip.AddrPort) {
	t.Helper()
	c := socksDial(t, addr)
	c.Write(append([]byte{5, 1, 0}, socksRequest(3, "0.0.0.0", 0)...))
	head := make([]byte, 2+10)
	if _, err := io.ReadFull(c, head); err != nil || head[3] != 0 || head[5] != 1 {
		t.Fatalf("associate reply % x %v", head, err)
	}
	c.SetDeadline(time.Time{})
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(head[6:10])), binary.BigEndian.Uint16(head[10:]))
	return c, relay
}

// datagram is a client datagram for host:port (a name or an address).
func datagram(frag byte, host string, port uint16, payload string) []byte {
	req := socksRequest(0, host, port) // VER CMD RSV ATYP ... has the layout RSV RSV FRAG ATYP needs
	req[0], req[1], req[2] = 0, 0, frag
	return append(req, payload...)
}

// udpClient is the client's UDP socket, talking to one relay.
type udpClient struct {
	t     *testing.T
	pc    *net.UDPConn
	relay netip.AddrPort
}

func newUDPClient(t *testing.T, relay netip.AddrPort) *udpClient {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &udpClient{t: t, pc: pc, relay: relay}
}

func (u *udpClient) send(b []byte) {
	if _, err := u.pc.WriteToUDPAddrPort(b, u.relay); err != nil {
		u.t.Fatal(err)
	}
}

// recv returns the next datagram from the relay within wait, or nil.
func (u *udpClient) recv(wait time.Duration) []byte {
	u.pc.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, _, err := u.pc.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		u.t.Fatal(err)
	}
	return buf[:n]
}

func TestSOCKSUDP(t *testing.T) {
	echo, echoed := udpEcho(t)
	blocked, blockedGot := udpEcho(t)
	w := newSOCKSWorld(t, worldConfig{
		Hosts: map[string][]netip.Addr{"echo.example.test": {loopback}},
		Decide: func(f rules.Flow) rules.Decision {
			switch {
			case f.Layer == rules.LayerUDP && f.Port == blocked.Port():
				return decision(rules.ActionReject, rules.Params{})
			case f.Host == "spoofed.example.test":
				return decision(rules.ActionSpoof, rules.Params{Addrs: []netip.Addr{loopback}})
			}
			return rules.Decision{}
		},
	}, proxy.SOCKSConfig{})
	c, relay := socksAssociate(t, w.SOCKSAddr)
	if relay.Addr() != loopback {
		t.Errorf("relay on %v, want the address the client connected to", relay)
	}
	u := newUDPClient(t, relay)

	// Replies carry the source the client asked for.
	for _, host := range []string{"127.0.0.1", "echo.example.test", "spoofed.example.test"} {
		u.send(datagram(0, host, echo.Port(), "ping "+host))
		want := append(datagram(0, "127.0.0.1", echo.Port(), ""), "echo:ping "+host...)
		if got := u.recv(2 * time.Second); !bytes.Equal(got, want) {
			t.Errorf("%s: got % x, want % x", host, got, want)
		}
	}
	// Blocked: dropped, logged once however many datagrams.
	for range 3 {
		u.send(datagram(0, "127.0.0.1", blocked.Port(), "nope"))
	}
	// Fragments are dropped.
	u.send(datagram(1, "127.0.0.1", echo.Port(), "fragment"))
	if got := u.recv(300 * time.Millisecond); got != nil {
		t.Errorf("blocked or fragmented datagram answered: % x", got)
	}
	if blockedGot.Load() != 0 {
		t.Errorf("blocked destination got %d datagrams", blockedGot.Load())
	}
	if n := w.SOCKS.DroppedDatagrams(); n != 4 {
		t.Errorf("%d datagrams dropped, want 4", n)
	}
	var udpLogs int
	for _, l := range w.Logs.Find("proxy decision") {
		if l.attrs["layer"] == "udp" && l.attrs["action"] == "reject" {
			udpLogs++
		}
	}
	if udpLogs != 1 {
		t.Errorf("%d decision lines for 3 blocked datagrams, want 1", udpLogs)
	}
	// Another socket of the client's address is not the client's.
	other := newUDPClient(t, relay)
	other.send(datagram(0, "127.0.0.1", echo.Port(), "stranger"))
	if got := other.recv(300 * time.Millisecond); got != nil {
		t.Errorf("a second source port got an answer % x", got)
	}
	if n := echoed.Load(); n != 3 {
		t.Errorf("echo server got %d datagrams, want 3", n)
	}
	// Closing the TCP connection ends the association.
	if w.SOCKS.Associations() != 1 {
		t.Errorf("%d associations open, want 1", w.SOCKS.Associations())
	}
	c.Close()
	eventually(t, 2*time.Second, "association outlives its TCP connection", func() bool { return w.SOCKS.Associations() == 0 })
	u.send(datagram(0, "127.0.0.1", echo.Port(), "late"))
	if got := u.recv(300 * time.Millisecond); got != nil {
		t.Errorf("a closed association answered % x", got)
	}
}

func TestSOCKSUDPNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("associations", func(t *testing.T) {
		echo, _ := udpEcho(t)
		w := newSOCKSWorld(t, worldConfig{}, proxy.SOCKSConfig{})
		for i := range 5 {
			c, relay := socksAssociate(t, w.SOCKSAddr)
			u := newUDPClient(t, relay)
			u.send(datagram(0, "127.0.0.1", echo.Port(), "x"))
			if u.recv(2*time.Second) == nil {
				t.Fatalf("association %d: no echo", i)
			}
			// Malformed datagrams: short, bad address type, name longer than sent.
			for _, b := range [][]byte{{0}, {0, 0, 0, 9, 1, 2}, {0, 0, 0, 3, 200, 'a'}} {
				u.send(b)
			}
			if i%2 == 0 {
				c.Close() // the others end with the proxy
			}
		}
	})
	waitGoroutines(t, before)
}
