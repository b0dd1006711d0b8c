package dnsblock

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

var _ dns.Handler = (*Server)(nil)

// ServeDNS answers one query that miekg/dns has read: the TCP path, and
// unusual UDP packets the UDP loop leaves to miekg/dns (udp.go). The order
// of the stages matters, and is the UDP loop's too:
//
//  1. who asks: strangers get REFUSED before anything is decided or
//     forwarded, in a reply no larger than their query (no amplification);
//  2. is it a question at all: nothing to decide on otherwise;
//  3. decide, once, before the cache: blocked names never go upstream
//     and never fill or evict the cache (PERFORMANCE.md);
//  4. answer the decision (answer.go), from the cache or the upstreams
//     (forward.go) when it lets the question through.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	defer s.recoverPanic()
	client, tcp := clientAddr(w.RemoteAddr())
	qbuf, qpooled := getBuf(bufSize)
	defer putBuf(qpooled)
	buf, pooled := getBuf(bufSize)
	defer putBuf(pooled)
	q, err := requestOf(req, qbuf)
	if !s.clients.allow(client, network(tcp)) {
		w.Write(bareReply(buf, &q, dns.RcodeRefused))
		return
	}
	switch {
	case len(req.Question) == 0:
		w.Write(bareReply(buf, &q, dns.RcodeFormatError))
		return
	case req.Opcode != dns.OpcodeQuery:
		w.Write(bareReply(buf, &q, dns.RcodeNotImplemented))
		return
	case err != nil: // the name cannot be echoed
		w.Write(bareReply(buf, &q, dns.RcodeFormatError))
		return
	}
	s.stats.queries.Add(1)
	d := s.decide(client, &q, false)
	s.dlog.note(client, &q, d)
	reply, fwd, delay := s.respond(buf, &q, tcp, d)
	switch {
	case reply != nil:
		w.Write(reply)
	case fwd:
		s.forward(w, &q, tcp, delay)
	}
}

// decide asks the Decider about q. borrowed says q.name aliases a buffer
// that the next packet overwrites. rules.Engine.Decide only reads
// Flow.Host (it hashes and compares it, and runs regexps over it) and
// returns the deciding Rule, never the host (rules/engine.go,
// snapshot.decide), so an Engine gets the alias as is and the UDP loop
// allocates nothing. Any other Decider gets a copy: nothing says it does
// not keep the string.
func (s *Server) decide(client netip.Addr, q *request, borrowed bool) rules.Decision {
	host := q.name
	if borrowed && !s.borrowHost {
		host = strings.Clone(host)
	}
	return s.hooked(client, host, s.decider.Decide(rules.Flow{Client: client, Layer: rules.LayerDNS, Host: host}))
}

// recoverPanic keeps one bad query (or a Decider bug) from taking the whole
// server down; the client gets no answer.
func (s *Server) recoverPanic() {
	if v := recover(); v != nil {
		s.log.Error("dns handler panic", slog.Any("panic", v))
	}
}

func network(tcp bool) string {
	if tcp {
		return "tcp"
	}
	return "udp"
}

func qtypeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}
