package dnsblock

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// serveUDP serves s on pc until the test ends, and checks Serve's result.
func serveUDP(t *testing.T, s *Server, pc net.PacketConn) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), pc, nil) }()
	t.Cleanup(func() {
		s.Shutdown()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
}

// rawExchange sends b over a UDP socket connected to addr and returns
// the reply, or nil if none came within wait.
func rawExchange(t *testing.T, addr string, b []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// TestUDPWildcardAnswersFromAskedAddress: a server bound to 0.0.0.0 or ::
// asked on 127.0.0.2 must answer from 127.0.0.2, or the client (a
// connected socket here, as most resolvers' are) drops the reply.
func TestUDPWildcardAnswersFromAskedAddress(t *testing.T) {
	for _, tc := range []struct {
		listen, ask string
		noBatch     bool
	}{
		{"0.0.0.0:0", "127.0.0.2", false},
		{"[::]:0", "127.0.0.2", false},
		{"[::]:0", "::1", false},
		{"0.0.0.0:0", "127.0.0.2", true},
		{"[::]:0", "::1", true},
	} {
		t.Run(fmt.Sprintf("%s asked on %s noBatch=%v", tc.listen, tc.ask, tc.noBatch), func(t *testing.T) {
			pc, err := net.ListenPacket("udp", tc.listen)
			if err != nil {
				t.Skipf("cannot listen: %v", err)
			}
			logs := &logBuffer{}
			s, err := NewServer(Config{Decider: &blocker{rule: testRule(rules.ActionReject, rules.Params{})},
				Upstreams: []string{"127.0.0.1:1"}, Logger: newTestLogger(logs)})
			if err != nil {
				t.Fatal(err)
			}
			s.udpNoBatch = tc.noBatch
			serveUDP(t, s, pc)
			port := pc.LocalAddr().(*net.UDPAddr).Port
			if c, err := net.Dial("udp", net.JoinHostPort(tc.ask, "1")); err != nil {
				t.Skipf("%s unusable: %v", tc.ask, err)
			} else {
				c.Close()
			}
			q, _ := query("infura.io.", dns.TypeA, true).Pack()
			reply := rawExchange(t, net.JoinHostPort(tc.ask, strconv.Itoa(port)), q, 3*time.Second)
			if reply == nil {
				t.Fatalf("no reply from %s (logs:\n%s)", tc.ask, logs)
			}
			var r dns.Msg
			if err := r.Unpack(reply); err != nil || r.Rcode != dns.RcodeNameError {
				t.Errorf("reply %v, %v; want NXDOMAIN", &r, err)
			}
			if strings.Contains(logs.String(), "cannot read the destination") {
				t.Errorf("destination not read:\n%s", logs)
			}
		})
	}
}

// TestUDPPacketShapes: what the UDP loop answers to packets the lean
// parser refuses or leaves to miekg/dns.
func TestUDPPacketShapes(t *testing.T) {
	for _, noBatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("noBatch=%v", noBatch), func(t *testing.T) { testUDPPacketShapes(t, noBatch) })
	}
}

func testUDPPacketShapes(t *testing.T, noBatch bool) {
	up := dnstest.NewUpstream()
	addr, _ := up.Start(t)
	w := newWorldWith(t, Config{Decider: &blocker{rule: testRule(rules.ActionReject, rules.Params{})}, Upstreams: []string{addr}},
		func(s *Server) { s.udpNoBatch = noBatch })
	aQ := append(wireName("mainnet.infura.io."), typeClass(dns.TypeA, dns.ClassINET)...)
	for _, tc := range []struct {
		name  string
		pkt   []byte
		rcode int // -1: no reply
		qd    int // questions echoed
	}{
		{"plain", pkt(flagRD, 1, 0, 0, 0, aQ), dns.RcodeNameError, 1},
		{"qdcount 0", pkt(0, 0, 0, 0, 0), dns.RcodeFormatError, 0},
		{"qdcount 2", pkt(0, 2, 0, 0, 0, aQ, aQ), dns.RcodeFormatError, 0},
		{"compressed question", pkt(0, 1, 0, 0, 0, []byte{0xC0, 0}, typeClass(1, 1)), dns.RcodeFormatError, 0},
		{"truncated question", pkt(0, 1, 0, 0, 0, aQ[:len(aQ)-2]), dns.RcodeFormatError, 0},
		{"notify", pkt(dns.OpcodeNotify<<11, 1, 0, 0, 0, aQ), dns.RcodeNotImplemented, 1},
		{"response", pkt(flagQR, 1, 0, 0, 0, aQ), -1, 0},
		{"short", []byte{1, 2, 3}, -1, 0},
		// Left to miekg/dns, then to ServeDNS: answered like any query.
		{"an answer record", pkt(0, 1, 1, 0, 0, aQ, []byte{0xC0, 12}, typeClass(dns.TypeA, 1), []byte{0, 0, 0, 1, 0, 4, 1, 2, 3, 4}), dns.RcodeNameError, 1},
		// Left to miekg/dns, which cannot read it: FORMERR.
		{"additional cut short", pkt(0, 1, 0, 0, 1, aQ, []byte{0, 0}), dns.RcodeFormatError, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wait := 3 * time.Second
			if tc.rcode < 0 {
				wait = 200 * time.Millisecond
			}
			reply := rawExchange(t, w.udp, tc.pkt, wait)
			if tc.rcode < 0 {
				if reply != nil {
					t.Fatalf("reply %x, want none", reply)
				}
				return
			}
			var r dns.Msg
			if err := r.Unpack(reply); err != nil {
				t.Fatalf("reply %x: %v", reply, err)
			}
			if r.Id != 0xABCD || !r.Response || r.Rcode != tc.rcode || len(r.Question) != tc.qd {
				t.Errorf("reply %v; want rcode %s, %d questions", &r, dns.RcodeToString[tc.rcode], tc.qd)
			}
			if tc.rcode != dns.RcodeNameError && len(reply) > len(tc.pkt) {
				t.Errorf("error reply of %d bytes to %d", len(reply), len(tc.pkt))
			}
		})
	}
	if up.Calls() != 0 {
		t.Errorf("upstream asked %d times", up.Calls())
	}
}

// TestUDPOverloadDropsOnlyWaitingQueries: when maxPending queries wait
// (here on an hour's delay), further ones that would wait are dropped and
// logged; blocked and cached answers still come at once.
func TestUDPOverloadDropsOnlyWaitingQueries(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	delay := testRule(rules.ActionDelay, rules.Params{Latency: time.Hour})
	reject := testRule(rules.ActionReject, rules.Params{})
	logs := &logBuffer{}
	s, err := NewServer(Config{
		Decider: rules.DeciderFunc(func(f rules.Flow) rules.Decision {
			switch {
			case strings.HasPrefix(f.Host, "slow"):
				return rules.Decision{Action: rules.ActionDelay, Rule: delay}
			case strings.HasSuffix(f.Host, "infura.io."):
				return rules.Decision{Action: rules.ActionReject, Rule: reject}
			}
			return rules.Decision{}
		}),
		Upstreams: []string{addr},
		Logger:    newTestLogger(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.pendingMax = 2
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveUDP(t, s, pc)
	w := &world{srv: s, udp: pc.LocalAddr().String()}
	w.ask(t, "udp", query("example.com.", dns.TypeA, false)) // cached from now on

	c, err := net.Dial("udp", w.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Two queries wait (each resolved first, then delayed), one at a time
	// so that each surely finds a free slot; the third finds none.
	for i := range 3 {
		m := query(strings.Repeat("slow", i+1)+".example.", dns.TypeA, false)
		b, _ := m.Pack()
		c.Write(b)
		if i < 2 {
			waitFor(t, "a waiting query to be resolved", func() bool { return up.Calls() == i+2 })
		}
	}
	waitFor(t, "the third waiting query to be dropped", func() bool {
		return strings.Contains(logs.String(), "dns queries dropped")
	})
	if r := w.ask(t, "udp", query("infura.io.", dns.TypeA, false)); r.Rcode != dns.RcodeNameError {
		t.Errorf("blocked name while overloaded: %s", dns.RcodeToString[r.Rcode])
	}
	if r := w.ask(t, "udp", query("example.com.", dns.TypeA, false)); len(r.Answer) != 1 {
		t.Errorf("cached name while overloaded: %v", r.Answer)
	}
	if up.Calls() != 3 {
		t.Errorf("upstream asked %d times, want 3 (the dropped query never)", up.Calls())
	}
}

// TestServeOtherPacketConn: a PacketConn that is not a *net.UDPConn is
// served by miekg/dns, with the same answers.
func TestServeOtherPacketConn(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Config{Decider: &blocker{rule: testRule(rules.ActionReject, rules.Params{})},
		Upstreams: []string{"127.0.0.1:1"}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	serveUDP(t, s, struct{ net.PacketConn }{pc})
	w := &world{srv: s, udp: pc.LocalAddr().String()}
	if r := w.ask(t, "udp", query("infura.io.", dns.TypeA, true)); r.Rcode != dns.RcodeNameError || ede(r) == nil {
		t.Errorf("reply %v", r)
	}
}
