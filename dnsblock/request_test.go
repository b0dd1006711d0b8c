package dnsblock

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// pkt builds a query: a header with the given flags and counts, then the
// raw bytes of rest (question, records) as given.
func pkt(flags, qd, an, ns, ar uint16, rest ...[]byte) []byte {
	b := []byte{0xAB, 0xCD}
	for _, v := range []uint16{flags, qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	for _, r := range rest {
		b = append(b, r...)
	}
	return b
}

// wireName is name ("a.b.") in wire form, without compression.
func wireName(name string) []byte {
	var b []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l != "" {
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	return append(b, 0)
}

func typeClass(t, c uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, t), c)
}

// optRR is an OPT record with payload size size, the DO bit if do, and
// rdata.
func optRR(size uint16, do bool, rdata []byte) []byte {
	b := []byte{0}
	b = binary.BigEndian.AppendUint16(b, dns.TypeOPT)
	b = binary.BigEndian.AppendUint16(b, size)
	var flags uint16
	if do {
		flags = 0x8000
	}
	b = append(b, 0, 0)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
	return append(b, rdata...)
}

func TestParse(t *testing.T) {
	q := func(name string) []byte { return append(wireName(name), typeClass(dns.TypeA, dns.ClassINET)...) }
	long63 := strings.Repeat("a", 63)
	// 4 labels of 63 bytes: 256 wire bytes with the root, one too many.
	tooLong := strings.Repeat(long63+".", 4)
	maxName := strings.Repeat(long63+".", 3) + strings.Repeat("b", 61) + "." // 255 wire bytes
	for _, tc := range []struct {
		name    string
		pkt     []byte
		want    parseResult
		err     error
		qname   string
		qtype   uint16
		edns    bool
		udpSize uint16
		do      bool
	}{
		{name: "plain", pkt: pkt(flagRD, 1, 0, 0, 0, q("Mainnet.Infura.IO.")), want: parsedQuery, qname: "Mainnet.Infura.IO.", qtype: dns.TypeA},
		{name: "root", pkt: pkt(0, 1, 0, 0, 0, []byte{0}, typeClass(dns.TypeNS, 1)), want: parsedQuery, qname: ".", qtype: dns.TypeNS},
		{name: "escapes", pkt: pkt(0, 1, 0, 0, 0, []byte{5, 'a', '.', ' ', 0x7F, 'Z', 0}, typeClass(1, 1)), want: parsedQuery, qname: `a\.\ \127Z.`, qtype: 1},
		{name: "longest name", pkt: pkt(0, 1, 0, 0, 0, q(maxName)), want: parsedQuery, qname: maxName, qtype: dns.TypeA},
		{name: "trailing bytes ignored", pkt: pkt(0, 1, 0, 0, 0, q("a."), []byte{1, 2, 3}), want: parsedQuery, qname: "a.", qtype: dns.TypeA},
		{name: "EDNS", pkt: pkt(0, 1, 0, 0, 1, q("a."), optRR(1232, false, nil)), want: parsedQuery, qname: "a.", qtype: dns.TypeA, edns: true, udpSize: 1232},
		{name: "EDNS DO and options", pkt: pkt(0, 1, 0, 0, 1, q("a."), optRR(4096, true, []byte{0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8})), want: parsedQuery, qname: "a.", qtype: dns.TypeA, edns: true, udpSize: 4096, do: true},
		{name: "EDNS small size", pkt: pkt(0, 1, 0, 0, 1, q("a."), optRR(100, false, nil)), want: parsedQuery, qname: "a.", qtype: dns.TypeA, edns: true, udpSize: 100},

		{name: "empty", pkt: nil, want: parseIgnore, err: errShort},
		{name: "short header", pkt: pkt(0, 1, 0, 0, 0)[:11], want: parseIgnore, err: errShort},
		{name: "response", pkt: pkt(flagQR, 1, 0, 0, 0, q("a.")), want: parseIgnore, err: errResponse},
		{name: "qdcount 0", pkt: pkt(0, 0, 0, 0, 0), want: parseFormErr, err: errQDCount},
		{name: "qdcount 2", pkt: pkt(0, 2, 0, 0, 0, q("a."), q("b.")), want: parseFormErr, err: errQDCount},
		{name: "no question bytes", pkt: pkt(0, 1, 0, 0, 0), want: parseFormErr, err: errTruncated},
		{name: "label past the end", pkt: pkt(0, 1, 0, 0, 0, []byte{63, 'a'}), want: parseFormErr, err: errTruncated},
		{name: "no root label", pkt: pkt(0, 1, 0, 0, 0, []byte{1, 'a'}), want: parseFormErr, err: errTruncated},
		{name: "no type and class", pkt: pkt(0, 1, 0, 0, 0, wireName("a.")), want: parseFormErr, err: errTruncated},
		{name: "half a class", pkt: pkt(0, 1, 0, 0, 0, wireName("a."), []byte{0, 1, 0}), want: parseFormErr, err: errTruncated},
		{name: "compressed question", pkt: pkt(0, 1, 0, 0, 0, []byte{0xC0, 0}, typeClass(1, 1)), want: parseFormErr, err: errCompressed},
		{name: "compressed tail", pkt: pkt(0, 1, 0, 0, 0, []byte{1, 'a', 0xC0, 12}, typeClass(1, 1)), want: parseFormErr, err: errCompressed},
		{name: "label type 0x40", pkt: pkt(0, 1, 0, 0, 0, []byte{0x41, 'a', 0}, typeClass(1, 1)), want: parseFormErr, err: errLabelType},
		{name: "label type 0x80", pkt: pkt(0, 1, 0, 0, 0, []byte{0x81, 'a', 0}, typeClass(1, 1)), want: parseFormErr, err: errLabelType},
		{name: "name too long", pkt: pkt(0, 1, 0, 0, 0, q(tooLong)), want: parseFormErr, err: errLongName},
		{name: "many one-byte labels", pkt: pkt(0, 1, 0, 0, 0, q(strings.Repeat("a.", 128))), want: parseFormErr, err: errLongName},
		{name: "OPT runs past the end", pkt: pkt(0, 1, 0, 0, 1, q("a."), optRR(1232, false, []byte{0, 10, 0, 8})[:13]), want: parseFormErr, err: errBadOPT, qname: "a.", qtype: dns.TypeA},
		{name: "two answers", pkt: pkt(0, 1, 2, 0, 0, q("a.")), want: parseFormErr, err: errSections, qname: "a.", qtype: dns.TypeA},
		{name: "two authorities", pkt: pkt(0, 1, 0, 2, 0, q("a.")), want: parseFormErr, err: errSections, qname: "a.", qtype: dns.TypeA},
		{name: "three additionals", pkt: pkt(0, 1, 0, 0, 3, q("a.")), want: parseFormErr, err: errSections, qname: "a.", qtype: dns.TypeA},

		{name: "notify", pkt: pkt(dns.OpcodeNotify<<11, 1, 0, 0, 0, q("a.")), want: parseNotImp, qname: "a.", qtype: dns.TypeA},
		{name: "update without question", pkt: pkt(dns.OpcodeUpdate<<11, 0, 0, 0, 0), want: parseNotImp},

		{name: "an answer record", pkt: pkt(0, 1, 1, 0, 0, q("a.")), want: parseSlow, qname: "a.", qtype: dns.TypeA},
		{name: "an authority record", pkt: pkt(0, 1, 0, 1, 0, q("a.")), want: parseSlow, qname: "a.", qtype: dns.TypeA},
		{name: "OPT and TSIG", pkt: pkt(0, 1, 0, 0, 2, q("a.")), want: parseSlow, qname: "a.", qtype: dns.TypeA},
		{name: "additional not OPT", pkt: pkt(0, 1, 0, 0, 1, q("a."), wireName("key."), typeClass(dns.TypeTSIG, dns.ClassANY)), want: parseSlow, qname: "a.", qtype: dns.TypeA},
		{name: "OPT not at the root", pkt: pkt(0, 1, 0, 0, 1, q("a."), wireName("x."), typeClass(dns.TypeOPT, 512)), want: parseSlow, qname: "a.", qtype: dns.TypeA},
		{name: "additional cut short", pkt: pkt(0, 1, 0, 0, 1, q("a."), []byte{0, 0}), want: parseSlow, qname: "a.", qtype: dns.TypeA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, own := range []bool{false, true} {
				var r request
				res, err := newParser(own).parse(tc.pkt, &r)
				if res != tc.want || !errors.Is(err, tc.err) {
					t.Fatalf("own=%v: parse = %d, %v; want %d, %v", own, res, err, tc.want, tc.err)
				}
				if r.name != tc.qname || r.lower != strings.ToLower(tc.qname) || r.qtype != tc.qtype {
					t.Errorf("own=%v: name %q lower %q type %d; want %q, %d", own, r.name, r.lower, r.qtype, tc.qname, tc.qtype)
				}
				if r.edns != tc.edns || r.udpSize != tc.udpSize || r.do != tc.do {
					t.Errorf("own=%v: EDNS %v size %d DO %v; want %v %d %v", own, r.edns, r.udpSize, r.do, tc.edns, tc.udpSize, tc.do)
				}
				if tc.qname != "" {
					if r.id != 0xABCD || (!strings.Contains(tc.qname, `\`) && len(r.qwire) != len(wireName(tc.qname))+4) {
						t.Errorf("own=%v: id %x, question of %d bytes", own, r.id, len(r.qwire))
					}
					if _, err := miekgQuestion(tc.pkt); err != nil && res == parsedQuery {
						t.Errorf("miekg/dns cannot read what the parser accepts: %v", err)
					}
				}
			}
		})
	}
}

// miekgQuestion is the question miekg/dns reads from b.
func miekgQuestion(b []byte) (dns.Question, error) {
	var m dns.Msg
	if err := m.Unpack(b); err != nil {
		return dns.Question{}, err
	}
	if len(m.Question) != 1 {
		return dns.Question{}, errQDCount
	}
	return m.Question[0], nil
}

func TestParserReusesBuffers(t *testing.T) {
	p := newParser(false)
	var q request
	a := pkt(0, 1, 0, 0, 1, wireName("Mainnet.Infura.io."), typeClass(1, 1), optRR(1232, true, nil))
	p.parse(a, &q) // the first parse may grow the buffers
	if n := testing.AllocsPerRun(100, func() { p.parse(a, &q) }); n != 0 {
		t.Errorf("%v allocations per parse, want 0", n)
	}
	// An owned request keeps its names after the parser moves on.
	own := newParser(true)
	own.parse(a, &q)
	own.parse(pkt(0, 1, 0, 0, 0, wireName("other.example."), typeClass(1, 1)), new(request))
	if q.name != "Mainnet.Infura.io." || q.lower != "mainnet.infura.io." {
		t.Errorf("owned names changed: %q %q", q.name, q.lower)
	}
}

func TestRequestOf(t *testing.T) {
	m := query("MaIn.example.", dns.TypeAAAA, false)
	m.SetEdns0(1400, true)
	m.CheckingDisabled = true
	q, err := requestOf(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	packed, _ := m.Pack()
	var lean request
	if res, _ := newParser(true).parse(packed, &lean); res != parsedQuery {
		t.Fatalf("parse: %d", res)
	}
	if string(q.qwire) != string(lean.qwire) || q.name != lean.name || q.lower != lean.lower ||
		q.flags&(flagRD|flagCD) != lean.flags&(flagRD|flagCD) || q.edns != lean.edns || q.udpSize != lean.udpSize || q.do != lean.do {
		t.Errorf("requestOf %+v\nparse     %+v", q, lean)
	}
	if q.limit(false) != 1232 || q.limit(true) != dns.MaxMsgSize {
		t.Errorf("limits %d %d", q.limit(false), q.limit(true))
	}
}
