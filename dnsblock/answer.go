package dnsblock

import (
	"math"
	"net/netip"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// synth describes a reply unicorn writes itself.
type synth struct {
	rcode int
	soa   bool   // add the SOA when the answer section stays empty
	ede   uint16 // Extended DNS Error INFO-CODE, or noEDE
	addrs []netip.Addr
}

// rejectReplies maps a reject rule's rcode to its reply. NXDOMAIN and NODATA
// carry an SOA so resolvers cache them for the rule's TTL (RFC 2308);
// SERVFAIL and REFUSED are not cacheable and carry none.
var rejectReplies = [...]synth{
	rules.RCodeNXDomain: {rcode: dns.RcodeNameError, soa: true, ede: dns.ExtendedErrorCodeBlocked},
	rules.RCodeServFail: {rcode: dns.RcodeServerFailure, ede: dns.ExtendedErrorCodeBlocked},
	rules.RCodeRefused:  {rcode: dns.RcodeRefused, ede: dns.ExtendedErrorCodeBlocked},
	rules.RCodeNoData:   {rcode: dns.RcodeSuccess, soa: true, ede: dns.ExtendedErrorCodeFiltered},
}

// sinkholeAddrs answer A with 0.0.0.0 and AAAA with ::.
var sinkholeAddrs = []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}

// servFail is what a client gets when no upstream answered.
var servFail = synth{rcode: dns.RcodeServerFailure, ede: dns.ExtendedErrorCodeNoReachableAuthority}

// respond turns a decision into the reply: the one place where DNS
// meaning is given to rules' actions. It writes the reply into b (which it
// may grow) and returns it, or returns nil: with fwd false for no reply at
// all (blackhole), with fwd true when the answer must come from forward,
// after delay. A cache hit is answered here, so that the UDP loop can
// answer it without handing the query to a goroutine.
func (s *Server) respond(b []byte, q *request, tcp bool, d rules.Decision) (reply []byte, fwd bool, delay time.Duration) {
	p := d.Params() // nil when no rule decided
	var sy synth
	switch d.Action {
	case rules.ActionBlackhole:
		// No reply. Over TCP miekg/dns keeps the connection open and
		// silent until the client gives up or its idle timeout passes.
		return nil, false, 0
	case rules.ActionReject:
		sy = rejectReplies[rules.RCodeNXDomain]
		if p != nil && int(p.RCode) < len(rejectReplies) {
			sy = rejectReplies[p.RCode]
		}
	case rules.ActionSinkhole:
		sy = synth{rcode: dns.RcodeSuccess, soa: true, ede: dns.ExtendedErrorCodeBlocked, addrs: sinkholeAddrs}
	case rules.ActionSpoof:
		sy = synth{rcode: dns.RcodeSuccess, soa: true, ede: dns.ExtendedErrorCodeBlocked}
		if p != nil {
			sy.addrs = p.Addrs
		}
	case rules.ActionDelay:
		if p != nil && p.DelayOn != rules.DelayOnConnect {
			// A delay of the bytes of a connection (first byte, every
			// chunk): the name resolves on time.
			return s.pass(b, q, tcp)
		}
		return nil, true, delayOf(p)
	case rules.ActionTruncate:
		if tcp {
			return s.pass(b, q, tcp) // the retry the TC bit asked for
		}
		// Header and question, TC set, nothing else: the client retries
		// over TCP (RFC 7766), where the question passes.
		r := bareReply(b, q, dns.RcodeSuccess)
		r[2] |= flagTC >> 8
		return r, false, 0
	default:
		// Allow, and defensively any action with no DNS meaning: rules/
		// never sends those here (Action.AppliesTo).
		return s.pass(b, q, tcp)
	}
	return s.synthReply(b, q, tcp, sy, blockTTL(p), d.Rule), false, 0
}

// pass answers a question the decision lets through: from the cache, or
// by forwarding (fwd true, no delay).
func (s *Server) pass(b []byte, q *request, tcp bool) (reply []byte, fwd bool, delay time.Duration) {
	if r := s.cachedReply(b, q, tcp); r != nil {
		return r, false, 0
	}
	return nil, true, 0
}

// blockTTL is the TTL of a blocked answer in seconds.
func blockTTL(p *rules.Params) uint32 {
	ttl := rules.DefaultBlockTTL
	if p != nil && p.TTL > 0 {
		ttl = p.TTL
	}
	return uint32(min(ttl/time.Second, math.MaxInt32))
}

// delayOf is a delay rule's wait (rules.Params.Delay), 0 without params.
func delayOf(p *rules.Params) time.Duration {
	if p == nil {
		return 0
	}
	return p.Delay()
}

// synthReply writes into b a reply unicorn makes up itself: the question
// as asked, the addresses of sy that fit the question's type, else the SOA
// if sy asks for one, and, for EDNS clients, an Extended DNS Error naming
// rule. It respects the client's size limit, setting TC if answers are
// cut.
func (s *Server) synthReply(b []byte, q *request, tcp bool, sy synth, ttl uint32, rule *rules.Rule) []byte {
	limit := q.limit(tcp)
	var text string
	reserve := 0
	if q.edns {
		if sy.ede != noEDE {
			text = s.refs.get(rule)
			reserve = edeLen
		}
		// The header, the question and the OPT record must fit at least.
		if headerLen+len(q.qwire)+optLen+reserve+len(text) > limit {
			text = ""
		}
		reserve += optLen + len(text)
	}
	if size := min(headerLen+len(q.qwire)+len(sy.addrs)*(12+16)+soaLen+reserve, limit); cap(b) < size {
		b = make([]byte, 0, size)
	}
	mb := msgBuilder{b: b}
	mb.start(q, sy.rcode, limit, reserve)
	answered := false
	for _, a := range sy.addrs {
		a = a.Unmap()
		if (q.qtype == dns.TypeA && a.Is4()) || (q.qtype == dns.TypeAAAA && a.Is6()) {
			if !mb.addr(a, ttl) {
				break // TC is set
			}
			answered = true
		}
	}
	if !answered && sy.soa {
		mb.soa(ttl)
	}
	if q.edns {
		mb.opt(q.do, sy.ede, text)
	}
	return mb.finish()
}

// bareReply writes into b a header-and-question reply with rcode and
// nothing else: no EDNS, no records, so it is never larger than the query
// (the question is the client's own bytes, or none).
func bareReply(b []byte, q *request, rcode int) []byte {
	mb := msgBuilder{b: b}
	mb.start(q, rcode, dns.MaxMsgSize, 0)
	return mb.finish()
}
