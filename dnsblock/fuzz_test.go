package dnsblock

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// FuzzServeDNS feeds any message miekg/dns can parse to the handler. The
// properties: no panic (the handler's recover would log one), and every
// reply unpacks, carries the query's ID and is no larger than 512 bytes for
// a UDP client without EDNS.
func FuzzServeDNS(f *testing.F) {
	for _, m := range []*dns.Msg{
		query("infura.io.", dns.TypeA, true),
		query("MaIn.InFuRa.Io.", dns.TypeAAAA, false),
		query(".", dns.TypeNS, true),
		query(strings.Repeat("a.", 120), dns.TypeTXT, false),
		{MsgHdr: dns.MsgHdr{Id: 1}},
	} {
		b, _ := m.Pack()
		f.Add(b)
	}
	logs := &logBuffer{}
	actions := []rules.Action{rules.ActionReject, rules.ActionSinkhole, rules.ActionSpoof, rules.ActionBlackhole, rules.ActionAllow}
	spoof := rules.Params{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	s, err := NewServer(Config{
		Decider: rules.DeciderFunc(func(fl rules.Flow) rules.Decision {
			a := actions[len(fl.Host)%len(actions)]
			return rules.Decision{Action: a, Rule: testRule(a, spoof)}
		}),
		Upstreams: []string{"127.0.0.1:1"}, // closed: forwarding fails fast, on loopback
		Timeout:   50 * time.Millisecond,
		Logger:    newTestLogger(logs),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			return
		}
		w := newFakeWriter(false)
		s.ServeDNS(w, req)
		if strings.Contains(logs.String(), "panic") {
			t.Fatalf("handler panicked:\n%s", logs)
		}
		if w.writes == 0 {
			return // blackhole
		}
		r := new(dns.Msg)
		if err := r.Unpack(w.last); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if r.Id != req.Id || !r.Response {
			t.Fatalf("reply %v to query %d", r.MsgHdr, req.Id)
		}
		if req.IsEdns0() == nil && len(w.last) > dns.MinMsgSize {
			t.Fatalf("reply of %d bytes to a client without EDNS", len(w.last))
		}
	})
}

// FuzzParse compares the UDP loop's parser with miekg/dns on the same
// bytes. The properties: no panic; when miekg/dns reads a query with one
// question, the parser reads the same name, type and class (and EDNS
// size and DO bit), or refuses it for a reason it is stricter on by
// design: a compressed question, a question without type and class, or
// header counts miekg/dns's own server rejects (DefaultMsgAcceptFunc).
func FuzzParse(f *testing.F) {
	for _, m := range []*dns.Msg{
		query("infura.io.", dns.TypeA, true),
		query("MaIn.InFuRa.Io.", dns.TypeAAAA, false),
		query(".", dns.TypeNS, true),
		query(strings.Repeat("a.", 120), dns.TypeTXT, false),
		query(`a\.b\000\ c.`, dns.TypeA, true),
	} {
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add(pkt(0, 1, 0, 0, 0, []byte{1, 'a', 0xC0, 12}, typeClass(1, 1)))
	f.Add(pkt(0, 1, 0, 0, 1, wireName("a."), typeClass(1, 1), optRR(512, true, []byte{0, 10, 0, 2, 1, 2})))
	f.Add(pkt(0, 1, 1, 0, 0, wireName("a."), typeClass(1, 1), wireName("a."), typeClass(1, 1), []byte{0, 0, 0, 1, 0, 4, 1, 2, 3, 4}))
	p := newParser(false)
	f.Fuzz(func(t *testing.T, b []byte) {
		var q request
		res, err := p.parse(b, &q)
		var m dns.Msg
		if m.Unpack(b) != nil || m.Response || m.Opcode != dns.OpcodeQuery || len(m.Question) != 1 {
			return
		}
		mq := m.Question[0]
		switch {
		case res == parsedQuery || res == parseSlow:
			if q.name != mq.Name || q.lower != strings.ToLower(mq.Name) || q.qtype != mq.Qtype || q.qclass != mq.Qclass {
				t.Fatalf("parser read %q %d %d, miekg/dns %q %d %d", q.name, q.qtype, q.qclass, mq.Name, mq.Qtype, mq.Qclass)
			}
			if res == parseSlow {
				return
			}
			opt := m.IsEdns0()
			if q.edns != (opt != nil) || (opt != nil && (q.udpSize != opt.UDPSize() || q.do != opt.Do())) {
				t.Fatalf("parser read EDNS %v size %d DO %v, miekg/dns %v", q.edns, q.udpSize, q.do, opt)
			}
		case errors.Is(err, errCompressed), errors.Is(err, errTruncated), errors.Is(err, errSections), errors.Is(err, errQDCount):
		default:
			t.Fatalf("parser refused (%d, %v) a query miekg/dns reads as %v", res, err, mq)
		}
	})
}

// FuzzLeanAnswer feeds any bytes to the UDP loop's stages short of the
// socket: parse, decide, respond. The properties: no panic; a refusal or
// error reply is never larger than the packet; every other reply unpacks,
// carries the query's ID and question, and fits the client's limit.
func FuzzLeanAnswer(f *testing.F) {
	for _, m := range []*dns.Msg{
		query("infura.io.", dns.TypeA, true),
		query("a.infura.io.", dns.TypeAAAA, false),
		query("b.infura.io.", dns.TypeMX, true),
	} {
		b, _ := m.Pack()
		f.Add(b)
	}
	actions := []rules.Action{rules.ActionReject, rules.ActionSinkhole, rules.ActionSpoof, rules.ActionBlackhole, rules.ActionAllow, rules.ActionDelay}
	spoof := rules.Params{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	s, err := NewServer(Config{
		Decider: rules.DeciderFunc(func(fl rules.Flow) rules.Decision {
			a := actions[len(fl.Host)%len(actions)]
			return rules.Decision{Action: a, Rule: testRule(a, spoof)}
		}),
		Upstreams: []string{"127.0.0.1:1"},
		Logger:    discardLogger(),
	})
	if err != nil {
		f.Fatal(err)
	}
	p := newParser(false)
	out := make([]byte, 0, bufSize)
	f.Fuzz(func(t *testing.T, b []byte) {
		var q request
		res, _ := p.parse(b, &q)
		var reply []byte
		switch res {
		case parseIgnore, parseSlow:
			return
		case parseFormErr, parseNotImp:
			if res == parseFormErr {
				q.qwire = nil
			}
			reply = bareReply(out, &q, dns.RcodeRefused)
			if len(reply) > len(b) {
				t.Fatalf("error reply of %d bytes to %d", len(reply), len(b))
			}
		default:
			d := s.decide(netip.MustParseAddr("127.0.0.1"), &q, true)
			if reply, _, _ = s.respond(out, &q, false, d); reply == nil {
				return // blackhole, or forwarded
			}
			if len(reply) > q.limit(false) {
				t.Fatalf("reply of %d bytes, limit %d", len(reply), q.limit(false))
			}
		}
		var r dns.Msg
		if err := r.Unpack(reply); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if r.Id != q.id || !r.Response {
			t.Fatalf("reply %v to query %d", r.MsgHdr, q.id)
		}
		if q.qwire != nil && (len(r.Question) != 1 || r.Question[0] != q.question()) {
			t.Fatalf("reply question %v, want %v", r.Question, q.question())
		}
	})
}
