package testbed

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a fake upstream resolver on 127.0.0.1, over UDP and TCP on one
// port. It answers A and AAAA questions for the names mapped with Map (the
// addresses of the question's family; NOERROR and no records for the
// other), NXDOMAIN with an SOA for every other name, and counts the
// questions it receives per name, so that a test can assert that a
// blocked name never reached upstream. Map may be called before and after
// Start; all methods are safe for concurrent use.
type DNS struct {
	mu    sync.Mutex
	zone  map[string][]netip.Addr // canonical name -> addresses
	asked map[string]int          // canonical name -> questions received
	total int
}

// NewDNS returns an unstarted fake resolver that knows no name.
func NewDNS() *DNS {
	return &DNS{zone: make(map[string][]netip.Addr), asked: make(map[string]int)}
}

// canonical is the key of name: lower case, with the trailing dot.
func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// Map makes name (any case, with or without the trailing dot) resolve to
// addrs, replacing what it resolved to before. Tests map only loopback
// addresses: unicorn and the test then never leave the machine.
func (d *DNS) Map(name string, addrs ...netip.Addr) *DNS {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.zone[canonical(name)] = append([]netip.Addr(nil), addrs...)
	return d
}

// Lookup returns the addresses name is mapped to, or nil.
func (d *DNS) Lookup(name string) []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]netip.Addr(nil), d.zone[canonical(name)]...)
}

// Questions returns how many questions (of any type) the resolver has
// received for name.
func (d *DNS) Questions(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked[canonical(name)]
}

// Total returns how many questions the resolver has received.
func (d *DNS) Total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

// maxPortTries bounds the search for a port free for both UDP and TCP.
const maxPortTries = 20

// Start listens on 127.0.0.1 (one port for UDP and TCP), waits until both
// servers run, and returns their "127.0.0.1:port" and a cleanup that stops
// them. The cleanup is also registered with tb and may be called twice.
func (d *DNS) Start(tb testing.TB) (addr string, cleanup func()) {
	tb.Helper()
	pc, l := listenUDPAndTCP(tb)
	return d.serveOn(tb, pc, l)
}

// serveOn serves the fake resolver on pc and l, as Start does.
func (d *DNS) serveOn(tb testing.TB, pc net.PacketConn, l net.Listener) (addr string, cleanup func()) {
	mux := dns.NewServeMux() // never dns.DefaultServeMux: two fakes would share it
	mux.HandleFunc(".", d.serve)

	servers := []*dns.Server{{PacketConn: pc, Handler: mux}, {Listener: l, Handler: mux}}
	var started sync.WaitGroup
	done := make(chan error, len(servers))
	for _, srv := range servers {
		started.Add(1)
		srv.NotifyStartedFunc = started.Done
		go func() { done <- srv.ActivateAndServe() }()
	}
	started.Wait() // ActivateAndServe on a ready socket always starts

	cleanup = sync.OnceFunc(func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
		for range servers {
			<-done
		}
	})
	tb.Cleanup(cleanup)
	return pc.LocalAddr().String(), cleanup
}

// listenUDPAndTCP finds a port on 127.0.0.1 free for both protocols.
func listenUDPAndTCP(tb testing.TB) (net.PacketConn, net.Listener) {
	tb.Helper()
	for range maxPortTries {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("testbed: DNS: %v", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
	}
	tb.Fatalf("testbed: DNS: no port free for both UDP and TCP after %d tries", maxPortTries)
	return nil, nil
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)
	d.mu.Lock()
	d.asked[name]++
	d.total++
	addrs, known := d.zone[name]
	d.mu.Unlock()

	if !known {
		m.Rcode = dns.RcodeNameError
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case a.Is4() && q.Qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && q.Qtype == dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, &dns.SOA{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
			Ns:  "ns.testbed.invalid.", Mbox: "hostmaster.testbed.invalid.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60,
		})
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	w.WriteMsg(m)
}
