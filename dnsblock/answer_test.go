package dnsblock

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

var transports = []string{"udp", "tcp"}

// blockedWorld starts a server whose rule for infura.io has action a and
// params p, with a fake upstream that must never be asked about it.
func blockedWorld(t *testing.T, a rules.Action, p rules.Params) (*world, *dnstest.Upstream, *blocker) {
	t.Helper()
	up := dnstest.NewUpstream().WithAnswer("infura.io.", "infura.io. 300 IN A 198.51.100.1")
	addr, _ := up.Start(t)
	dec := &blocker{rule: testRule(a, p)}
	return newWorld(t, Config{Decider: dec, Upstreams: []string{addr}}), up, dec
}

func TestRejectRcodes(t *testing.T) {
	for _, tc := range []struct {
		rcode   rules.RCode
		want    int
		soa     bool
		edeCode uint16
	}{
		{rules.RCodeNXDomain, dns.RcodeNameError, true, dns.ExtendedErrorCodeBlocked},
		{rules.RCodeServFail, dns.RcodeServerFailure, false, dns.ExtendedErrorCodeBlocked},
		{rules.RCodeRefused, dns.RcodeRefused, false, dns.ExtendedErrorCodeBlocked},
		{rules.RCodeNoData, dns.RcodeSuccess, true, dns.ExtendedErrorCodeFiltered},
	} {
		t.Run(tc.rcode.String(), func(t *testing.T) {
			w, up, _ := blockedWorld(t, rules.ActionReject, rules.Params{RCode: tc.rcode})
			for _, network := range transports {
				for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeHTTPS, dns.TypeMX} {
					r := w.ask(t, network, query("mainnet.infura.io.", qtype, true))
					if r.Rcode != tc.want {
						t.Errorf("%s %s: rcode %s, want %s", network, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.want])
					}
					if len(r.Answer) != 0 {
						t.Errorf("%s: answer %v, want none", network, r.Answer)
					}
					checkSOA(t, r, tc.soa, 60)
					e := ede(r)
					if e == nil || e.InfoCode != tc.edeCode || e.ExtraText != testRef {
						t.Errorf("%s: EDE %v, want code %d text %q", network, e, tc.edeCode, testRef)
					}
				}
			}
			if n := up.Calls(); n != 0 {
				t.Errorf("upstream asked %d times about a blocked name", n)
			}
		})
	}
}

// checkSOA checks the authority section holds exactly one SOA with TTL and
// MINIMUM ttl, or nothing.
func checkSOA(t *testing.T, r *dns.Msg, want bool, ttl uint32) {
	t.Helper()
	if !want {
		if len(r.Ns) != 0 {
			t.Errorf("authority %v, want none", r.Ns)
		}
		return
	}
	if len(r.Ns) != 1 {
		t.Fatalf("authority %v, want one SOA", r.Ns)
	}
	soa, ok := r.Ns[0].(*dns.SOA)
	if !ok {
		t.Fatalf("authority %v, want an SOA", r.Ns[0])
	}
	if soa.Hdr.Ttl != ttl || soa.Minttl != ttl {
		t.Errorf("SOA TTL %d minimum %d, want %d", soa.Hdr.Ttl, soa.Minttl, ttl)
	}
	if !strings.EqualFold(soa.Hdr.Name, r.Question[0].Name) {
		t.Errorf("SOA owner %q, want the question %q", soa.Hdr.Name, r.Question[0].Name)
	}
}

func TestBlockedWithoutEDNSHasNoOPT(t *testing.T) {
	w, _, _ := blockedWorld(t, rules.ActionReject, rules.Params{})
	for _, network := range transports {
		r := w.ask(t, network, query("infura.io.", dns.TypeA, false))
		if r.Rcode != dns.RcodeNameError || r.IsEdns0() != nil {
			t.Errorf("%s: rcode %s, OPT %v; want NXDOMAIN without OPT", network, dns.RcodeToString[r.Rcode], r.IsEdns0())
		}
	}
}

func TestBlockedMixedCase(t *testing.T) {
	w, up, _ := blockedWorld(t, rules.ActionReject, rules.Params{})
	for _, network := range transports {
		r := w.ask(t, network, query("MaInNeT.InFuRa.Io.", dns.TypeAAAA, true)) // ask checks the echo
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: rcode %s, want NXDOMAIN", network, dns.RcodeToString[r.Rcode])
		}
		if r.Ns[0].Header().Name != "MaInNeT.InFuRa.Io." {
			t.Errorf("SOA owner %q, want the name as asked", r.Ns[0].Header().Name)
		}
	}
	if up.Calls() != 0 {
		t.Errorf("upstream asked %d times", up.Calls())
	}
}

func TestSinkhole(t *testing.T) {
	w, up, _ := blockedWorld(t, rules.ActionSinkhole, rules.Params{})
	for _, network := range transports {
		r := w.ask(t, network, query("infura.io.", dns.TypeA, true))
		checkAddrs(t, r, "0.0.0.0")
		r = w.ask(t, network, query("api.infura.io.", dns.TypeAAAA, true))
		checkAddrs(t, r, "::")
		r = w.ask(t, network, query("api.infura.io.", dns.TypeTXT, true))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("TXT: %s %v, want NODATA", dns.RcodeToString[r.Rcode], r.Answer)
		}
		checkSOA(t, r, true, 60)
		if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || e.ExtraText != testRef {
			t.Errorf("EDE %v", e)
		}
	}
	if up.Calls() != 0 {
		t.Errorf("upstream asked %d times", up.Calls())
	}
}

// checkAddrs checks a NOERROR answer of exactly want, TTL 60, no authority.
func checkAddrs(t *testing.T, r *dns.Msg, want ...string) {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("rcode %s, want NOERROR", dns.RcodeToString[r.Rcode])
	}
	var got []string
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 60 {
			t.Errorf("%v: TTL %d, want 60", rr, rr.Header().Ttl)
		}
		if rr.Header().Name != r.Question[0].Name {
			t.Errorf("%v: owner is not the question %q", rr, r.Question[0].Name)
		}
		switch rr := rr.(type) {
		case *dns.A:
			got = append(got, rr.A.String())
		case *dns.AAAA:
			got = append(got, rr.AAAA.String())
		default:
			t.Errorf("unexpected record %v", rr)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("answer %v, want %v", got, want)
	}
	if len(r.Ns) != 0 {
		t.Errorf("authority %v, want none", r.Ns)
	}
}

func TestSpoof(t *testing.T) {
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"),
		netip.MustParseAddr("::ffff:192.0.2.11"), // IPv4-mapped counts as IPv4
	}
	w, up, _ := blockedWorld(t, rules.ActionSpoof, rules.Params{Addrs: addrs})
	for _, network := range transports {
		checkAddrs(t, w.ask(t, network, query("infura.io.", dns.TypeA, true)), "192.0.2.10", "192.0.2.11")
		checkAddrs(t, w.ask(t, network, query("infura.io.", dns.TypeAAAA, false)), "2001:db8::10")
		r := w.ask(t, network, query("infura.io.", dns.TypeMX, true))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("MX: %s %v, want NODATA", dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
	if up.Calls() != 0 {
		t.Errorf("upstream asked %d times", up.Calls())
	}
}

func TestSpoofWithoutFamilyIsNoData(t *testing.T) {
	w, _, _ := blockedWorld(t, rules.ActionSpoof, rules.Params{
		Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 30 * time.Second,
	})
	r := w.ask(t, "udp", query("infura.io.", dns.TypeAAAA, true))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA: %s %v, want NODATA", dns.RcodeToString[r.Rcode], r.Answer)
	}
	checkSOA(t, r, true, 30)
}

func TestBlackhole(t *testing.T) {
	w, up, _ := blockedWorld(t, rules.ActionBlackhole, rules.Params{})
	const timeout = 300 * time.Millisecond
	for _, network := range transports {
		start := time.Now()
		r, err := w.exchange(network, query("infura.io.", dns.TypeA, true), timeout)
		took := time.Since(start)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s: got %v, %v; want a timeout", network, r, err)
		}
		if took < timeout {
			t.Errorf("%s: gave up after %v, before the client's %v", network, took, timeout)
		}
	}
	if up.Calls() != 0 {
		t.Errorf("upstream asked %d times", up.Calls())
	}
	// A blackholed question does not stop the server answering others.
	r := w.ask(t, "udp", query("nxdomain.example.", dns.TypeA, false))
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("after blackhole: rcode %s", dns.RcodeToString[r.Rcode])
	}
}

func TestDecisionLoggedOnce(t *testing.T) {
	w, _, dec := blockedWorld(t, rules.ActionReject, rules.Params{})
	w.ask(t, "udp", query("Infura.io.", dns.TypeA, true))
	w.ask(t, "udp", query("allowed.example.", dns.TypeA, true))
	if n := dec.calls.Load(); n != 2 {
		t.Errorf("Decide called %d times for 2 queries", n)
	}
	logs := w.logs.String()
	if n := w.logs.count(`msg="dns decision"`); n != 1 {
		t.Fatalf("%d decision lines, want 1 (allows are not logged):\n%s", n, logs)
	}
	want := []string{"level=INFO", "component=dns", "client=127.0.0.1", "name=Infura.io.", "qtype=A"}
	for _, a := range (rules.Decision{Action: dec.rule.Action, Rule: dec.rule}).LogAttrs() {
		want = append(want, a.String()) // key=value, as rules/ defines them
	}
	for _, want := range want {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestDelay(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("infura.io.", "infura.io. 300 IN A 198.51.100.1")
	addr, _ := up.Start(t)
	const latency, jitter = 200 * time.Millisecond, 50 * time.Millisecond
	dec := &blocker{rule: testRule(rules.ActionDelay, rules.Params{Latency: latency, Jitter: jitter})}
	w := newWorld(t, Config{Decider: dec, Upstreams: []string{addr}})
	for _, network := range transports {
		start := time.Now()
		r := w.ask(t, network, query("infura.io.", dns.TypeA, true))
		took := time.Since(start)
		if took < latency-jitter { // jitter draws from [-jitter, +jitter]
			t.Errorf("%s: answered after %v, want at least %v", network, took, latency-jitter)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.51.100.1" {
			t.Errorf("%s: answer %v, want the upstream's", network, r.Answer)
		}
		if ede(r) != nil {
			t.Errorf("%s: delayed answers are real answers, got EDE %v", network, ede(r))
		}
	}
}

func TestUnknownActionIsAllow(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("infura.io.", "infura.io. 300 IN A 198.51.100.1")
	addr, _ := up.Start(t)
	dec := &blocker{rule: testRule(rules.ActionThrottle, rules.Params{Rate: 10})}
	w := newWorld(t, Config{Decider: dec, Upstreams: []string{addr}})
	r := w.ask(t, "udp", query("infura.io.", dns.TypeA, true))
	if len(r.Answer) != 1 {
		t.Errorf("answer %v, want the upstream's", r.Answer)
	}
}

// TestBlockedFitsSmallUDP: a long name, a long rule reference and a client
// taking 512 bytes still get a reply that fits.
func TestBlockedFitsSmallUDP(t *testing.T) {
	long := strings.Repeat(strings.Repeat("a", 60)+".", 3) + "infura.io."
	rule := testRule(rules.ActionSpoof, rules.Params{})
	rule.Pos.File = strings.Repeat("scenarios/", 40) + "x.yaml"
	for i := range 40 {
		rule.Params.Addrs = append(rule.Params.Addrs, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	up := dnstest.NewUpstream()
	addr, _ := up.Start(t)
	w := newWorld(t, Config{Decider: &blocker{rule: rule}, Upstreams: []string{addr}})
	m := query(long, dns.TypeA, false)
	m.SetEdns0(512, false)
	raw, err := w.exchangeRaw(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 512 {
		t.Errorf("reply of %d bytes to a 512-byte client", len(raw))
	}
	r := new(dns.Msg)
	if err := r.Unpack(raw); err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || r.IsEdns0() == nil {
		t.Errorf("TC %v, OPT %v: want TC set and OPT kept", r.Truncated, r.IsEdns0())
	}
	// Over TCP the whole answer comes.
	r = w.ask(t, "tcp", m)
	if len(r.Answer) != 40 || r.Truncated {
		t.Errorf("TCP: %d answers, TC %v; want 40, no TC", len(r.Answer), r.Truncated)
	}
}

// exchangeRaw sends m over UDP and returns the reply's bytes.
func (w *world) exchangeRaw(m *dns.Msg) ([]byte, error) {
	c, err := net.Dial("udp", w.udp)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	b, err := m.Pack()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	return buf[:n], err
}

func TestZeroQuestionsIsFormErr(t *testing.T) {
	s, err := NewServer(Config{Decider: &blocker{}, Upstreams: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tcp := range []bool{false, true} {
		w := newFakeWriter(tcp)
		s.ServeDNS(w, &dns.Msg{MsgHdr: dns.MsgHdr{Id: 7}})
		r := w.msg(t)
		if r.Rcode != dns.RcodeFormatError || r.Id != 7 || !r.Response {
			t.Errorf("tcp=%v: %v, want FORMERR for ID 7", tcp, r)
		}
	}
}

func TestNotifyIsNotImplemented(t *testing.T) {
	s, err := NewServer(Config{Decider: &blocker{}, Upstreams: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	w := newFakeWriter(false)
	m := query("example.", dns.TypeSOA, false)
	m.Opcode = dns.OpcodeNotify
	s.ServeDNS(w, m)
	if r := w.msg(t); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("rcode %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
}

func TestDeciderPanicIsContained(t *testing.T) {
	s, err := NewServer(Config{
		Decider:   rules.DeciderFunc(func(rules.Flow) rules.Decision { panic("boom") }),
		Upstreams: []string{"127.0.0.1:1"},
		Logger:    discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	w := newFakeWriter(false)
	s.ServeDNS(w, query("example.", dns.TypeA, false))
	if w.writes != 0 {
		t.Errorf("wrote %d replies after a panic", w.writes)
	}
}
