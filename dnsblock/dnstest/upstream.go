// Package dnstest provides a fake upstream DNS resolver on loopback for
// tests of unicorn's DNS front end.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Upstream is a fake resolver listening on 127.0.0.1 over UDP and TCP on
// the same port. Build it with NewUpstream and the With methods, then
// Start it. By default it answers NXDOMAIN (with an SOA of minimum TTL 30)
// for every name it has no records for.
type Upstream struct {
	records  map[string][]dns.RR // lower-case name -> records answered for it
	rcode    int                 // forced rcode, or -1
	delay    time.Duration
	truncate bool // UDP replies are empty with TC set
	silent   bool // never answer

	udpCalls, tcpCalls atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	servers  []*dns.Server
}

// NewUpstream returns an unstarted fake upstream.
func NewUpstream() *Upstream {
	return &Upstream{records: make(map[string][]dns.RR), rcode: -1, stop: make(chan struct{})}
}

// WithAnswer makes the upstream answer questions for name with rrs, given
// in zone-file syntax ("cdn.example.net. 300 IN A 192.0.2.7"). A question
// gets the records whose type is its type, plus CNAMEs, in the order given;
// so a CNAME chain is written as its records, in order, under the first
// name. It panics on a bad record: fakes are built by tests.
func (u *Upstream) WithAnswer(name string, rrs ...string) *Upstream {
	key := strings.ToLower(dns.Fqdn(name))
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic("dnstest: " + err.Error())
		}
		u.records[key] = append(u.records[key], rr)
	}
	return u
}

// WithRcode makes every reply carry rcode and no records.
func (u *Upstream) WithRcode(rcode int) *Upstream { u.rcode = rcode; return u }

// WithDelay makes every reply wait d (cut short when the upstream stops).
func (u *Upstream) WithDelay(d time.Duration) *Upstream { u.delay = d; return u }

// WithTruncation makes UDP replies empty with TC set, so that clients must
// ask again over TCP, which answers in full.
func (u *Upstream) WithTruncation() *Upstream { u.truncate = true; return u }

// WithSilence makes the upstream read questions and never answer.
func (u *Upstream) WithSilence() *Upstream { u.silent = true; return u }

// Calls returns how many questions the upstream received, over both
// transports.
func (u *Upstream) Calls() int { return int(u.udpCalls.Load() + u.tcpCalls.Load()) }

// TCPCalls returns how many questions the upstream received over TCP.
func (u *Upstream) TCPCalls() int { return int(u.tcpCalls.Load()) }

// maxPortTries bounds the search for a port free on both UDP and TCP.
const maxPortTries = 20

// Start listens on 127.0.0.1 (a port free for both UDP and TCP), waits
// until both servers run and returns their "host:port" and a cleanup that
// stops them; cleanup is also registered with tb and may be called twice.
func (u *Upstream) Start(tb testing.TB) (addr string, cleanup func()) {
	tb.Helper()
	var pc net.PacketConn
	var l net.Listener
	for range maxPortTries {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			tb.Fatalf("dnstest: %v", err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		tb.Fatalf("dnstest: no port free for both UDP and TCP after %d tries", maxPortTries)
	}
	addr = pc.LocalAddr().String()

	mux := dns.NewServeMux() // never dns.DefaultServeMux: fakes must not share handlers
	mux.HandleFunc(".", u.serve)
	var started sync.WaitGroup
	done := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: mux},
		{Listener: l, Handler: mux},
	} {
		started.Add(1)
		srv.NotifyStartedFunc = started.Done
		u.servers = append(u.servers, srv)
		go func() {
			srv.ActivateAndServe()
			done <- struct{}{}
		}()
	}
	started.Wait()

	cleanup = func() {
		u.stopOnce.Do(func() {
			close(u.stop)
			for _, srv := range u.servers {
				srv.Shutdown()
			}
			for range u.servers {
				<-done
			}
		})
	}
	tb.Cleanup(cleanup)
	return addr, cleanup
}

func (u *Upstream) serve(w dns.ResponseWriter, req *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if tcp {
		u.tcpCalls.Add(1)
	} else {
		u.udpCalls.Add(1)
	}
	if u.delay > 0 {
		t := time.NewTimer(u.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-u.stop:
			return
		}
	}
	if u.silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	switch {
	case u.rcode >= 0:
		m.Rcode = u.rcode
	case u.truncate && !tcp:
		m.Truncated = true
	default:
		q := req.Question[0]
		rrs, ok := u.records[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if t := rr.Header().Rrtype; t == q.Qtype || t == dns.TypeCNAME {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if len(m.Answer) == 0 {
			soa, _ := dns.NewRR(q.Name + " 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 30")
			m.Ns = append(m.Ns, soa)
		}
	}
	w.WriteMsg(m)
}
