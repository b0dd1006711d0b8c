package dnsblock

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

var _ dns.Handler = (*Server)(nil)

// ServeDNS answers one query. The order of the stages matters:
//
//  1. who asks: strangers get REFUSED before anything is decided or
//     forwarded, in a reply no larger than their query (no amplification);
//  2. is it a question at all: nothing to decide on otherwise;
//  3. decide, once, before the cache: blocked names never go upstream
//     and never fill or evict the cache (PERFORMANCE.md);
//  4. answer the decision (answer.go).
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	defer s.recoverPanic()
	client, tcp := clientAddr(w.RemoteAddr())
	if !s.clients.allow(client, network(tcp)) {
		s.writeBare(w, req, dns.RcodeRefused)
		return
	}
	switch {
	case len(req.Question) == 0:
		s.writeBare(w, req, dns.RcodeFormatError)
		return
	case req.Opcode != dns.OpcodeQuery:
		s.writeBare(w, req, dns.RcodeNotImplemented)
		return
	}
	q := &req.Question[0]
	d := s.decider.Decide(rules.Flow{Client: client, Layer: rules.LayerDNS, Host: q.Name})
	s.logDecision(client, q, d)
	s.answer(w, req, q, tcp, d)
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

// logDecision logs every decision that is not a plain allow at Info; allow
// exceptions made by a rule go to Debug.
func (s *Server) logDecision(client netip.Addr, q *dns.Question, d rules.Decision) {
	level := slog.LevelInfo
	if d.Action == rules.ActionAllow {
		if d.Rule == nil {
			return
		}
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("client", client.String()),
		slog.String("name", q.Name),
		slog.String("qtype", qtypeString(q.Qtype)))
	attrs = append(attrs, d.LogAttrs()...)
	s.log.LogAttrs(ctx, level, "dns decision", attrs...)
}

func qtypeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}
