package testbed

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Status fleet ports: devp2p (TCP and UDP discovery) and the mailservers'
// second port.
const (
	NodePort     = 30303
	NodePortAlt  = 443
	nodeIdleTime = 30 * time.Second // a silent TCP peer is dropped after this
	nodeMaxConns = 64
)

// Node is a fake Status node: a bootnode, a mailserver or a community
// node. It speaks a line protocol in place of devp2p, on one port for TCP
// and UDP: a TCP peer sends "HELLO <who>\n" and gets "WELCOME <node name>\n"
// (then the connection stays open until the peer closes it or is silent
// for 30 s); a UDP datagram "PING ..." gets "PONG <node name>". It counts
// the peers it welcomed and the pings it answered.
type Node struct {
	// Name identifies the node in its answers ("boot-1", "community").
	Name string
	// Addr is the address and port it listens on, for TCP and UDP.
	Addr netip.AddrPort

	l             net.Listener
	pc            net.PacketConn
	wg            sync.WaitGroup
	once          sync.Once
	mu            sync.Mutex
	hellos, pings int
	conns         map[net.Conn]struct{}
	done          chan struct{}
}

// StartNode starts a Node called name on ip at port, TCP and UDP (port 0:
// a port free for both). Close stops it.
func StartNode(name, ip string, port int) (*Node, error) {
	l, pc, err := listenBoth(ip, port)
	if err != nil {
		return nil, fmt.Errorf("testbed: node %s: %w", name, err)
	}
	ap := netip.MustParseAddrPort(l.Addr().String())
	n := &Node{Name: name, Addr: ap, l: l, pc: pc, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	n.wg.Add(2)
	go n.acceptLoop()
	go n.udpLoop()
	return n, nil
}

// ServeNode is StartNode for a test: it fails tb on error and stops the
// node when tb ends.
func ServeNode(tb testing.TB, name, ip string) *Node {
	tb.Helper()
	n, err := StartNode(name, ip, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

// listenBoth listens on ip:port for TCP and UDP; with port 0 it looks for a
// port free for both.
func listenBoth(ip string, port int) (net.Listener, net.PacketConn, error) {
	tries := 1
	if port == 0 {
		tries = maxPortTries
	}
	var lastErr error
	for range tries {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			return nil, nil, err
		}
		pc, err := net.ListenPacket("udp", l.Addr().String())
		if err == nil {
			return l, pc, nil
		}
		l.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no port free for both TCP and UDP on %s: %w", ip, lastErr)
}

// Hellos returns how many TCP peers the node welcomed.
func (n *Node) Hellos() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hellos
}

// Pings returns how many UDP pings the node answered.
func (n *Node) Pings() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pings
}

// Close stops the node and closes its connections; it may be called twice.
func (n *Node) Close() error {
	n.once.Do(func() {
		close(n.done)
		n.l.Close()
		n.pc.Close()
		n.mu.Lock()
		for c := range n.conns {
			c.Close()
		}
		n.mu.Unlock()
		n.wg.Wait()
	})
	return nil
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		c, err := n.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		n.mu.Lock()
		select {
		case <-n.done: // Close already closed the connections it knew
			n.mu.Unlock()
			c.Close()
			return
		default:
		}
		if len(n.conns) >= nodeMaxConns {
			n.mu.Unlock()
			c.Close()
			continue
		}
		n.conns[c] = struct{}{}
		n.mu.Unlock()
		n.wg.Add(1)
		go n.serveConn(c)
	}
}

func (n *Node) serveConn(c net.Conn) {
	defer n.wg.Done()
	defer func() {
		n.mu.Lock()
		delete(n.conns, c)
		n.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReaderSize(c, 512)
	for {
		c.SetReadDeadline(time.Now().Add(nodeIdleTime))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if !strings.HasPrefix(line, "HELLO") {
			fmt.Fprintf(c, "ERROR want HELLO\n")
			return
		}
		n.mu.Lock()
		n.hellos++
		n.mu.Unlock()
		if _, err := fmt.Fprintf(c, "WELCOME %s\n", n.Name); err != nil {
			return
		}
	}
}

func (n *Node) udpLoop() {
	defer n.wg.Done()
	buf := make([]byte, 1500)
	for {
		m, from, err := n.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !strings.HasPrefix(string(buf[:m]), "PING") {
			continue
		}
		n.mu.Lock()
		n.pings++
		n.mu.Unlock()
		n.pc.WriteTo([]byte("PONG "+n.Name), from)
	}
}
