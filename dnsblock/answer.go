package dnsblock

import (
	"math"
	"math/rand/v2"
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

// answer turns a decision into the reply: the one place where DNS meaning
// is given to rules' actions.
func (s *Server) answer(w dns.ResponseWriter, req *dns.Msg, q *dns.Question, tcp bool, d rules.Decision) {
	p := d.Params() // nil when no rule decided
	var sy synth
	switch d.Action {
	case rules.ActionBlackhole:
		// No reply. Over TCP miekg/dns keeps the connection open and
		// silent until the client gives up or its idle timeout passes.
		return
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
		s.forward(w, req, q, tcp, delayOf(p))
		return
	default:
		// Allow, and defensively any action with no DNS meaning: rules/
		// never sends those here (Action.AppliesTo).
		s.forward(w, req, q, tcp, 0)
		return
	}
	s.writeSynth(w, req, q, tcp, sy, blockTTL(p), d.Rule)
}

// blockTTL is the TTL of a blocked answer in seconds.
func blockTTL(p *rules.Params) uint32 {
	ttl := rules.DefaultBlockTTL
	if p != nil && p.TTL > 0 {
		ttl = p.TTL
	}
	return uint32(min(ttl/time.Second, math.MaxInt32))
}

// delayOf is a delay rule's wait: Latency plus a uniform draw from
// [0, Jitter].
func delayOf(p *rules.Params) time.Duration {
	if p == nil {
		return 0
	}
	d := max(p.Latency, 0)
	if p.Jitter > 0 {
		d += rand.N(p.Jitter + 1)
	}
	return d
}

// writeSynth writes a reply unicorn makes up itself: the question as
// asked, the addresses of sy that fit the question's type, else the SOA if
// sy asks for one, and, for EDNS clients, an Extended DNS Error naming
// rule. It respects the client's size limit, setting TC if answers are cut.
func (s *Server) writeSynth(w dns.ResponseWriter, req *dns.Msg, q *dns.Question, tcp bool, sy synth, ttl uint32, rule *rules.Rule) {
	opt := req.IsEdns0()
	limit := clientLimit(opt, tcp)
	var text string
	reserve := 0
	if opt != nil {
		if sy.ede != noEDE {
			text = s.refs.get(rule)
			reserve = edeLen
		}
		// The header, the question and the OPT record must fit at least.
		if headerLen+len(q.Name)+5+optLen+reserve+len(text) > limit {
			text = ""
		}
		reserve += optLen + len(text)
	}
	size := headerLen + len(q.Name) + 5 + len(sy.addrs)*(12+16) + soaLen + reserve
	buf, pooled := getBuf(min(size, limit))
	defer putBuf(pooled)

	mb := msgBuilder{b: buf}
	if err := mb.start(req, sy.rcode, limit, reserve); err != nil {
		s.writeBare(w, req, dns.RcodeFormatError)
		return
	}
	answered := false
	for _, a := range sy.addrs {
		a = a.Unmap()
		if (q.Qtype == dns.TypeA && a.Is4()) || (q.Qtype == dns.TypeAAAA && a.Is6()) {
			if !mb.addr(a, ttl) {
				break // TC is set
			}
			answered = true
		}
	}
	if !answered && sy.soa {
		mb.soa(ttl)
	}
	if opt != nil {
		mb.opt(opt.Do(), sy.ede, text)
	}
	w.Write(mb.finish())
}

// writeBare writes a header-and-question reply with rcode and nothing
// else: no EDNS, no records, so it is never larger than the query.
func (s *Server) writeBare(w dns.ResponseWriter, req *dns.Msg, rcode int) {
	buf, pooled := getBuf(bufSize)
	defer putBuf(pooled)
	mb := msgBuilder{b: buf}
	if err := mb.start(req, rcode, dns.MaxMsgSize, 0); err != nil {
		// The question cannot be echoed; answer with the header alone.
		r := *req
		r.Question = nil
		mb.start(&r, rcode, dns.MaxMsgSize, 0)
	}
	w.Write(mb.finish())
}
