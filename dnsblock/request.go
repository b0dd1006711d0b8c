package dnsblock

import (
	"encoding/binary"
	"errors"
	"strings"
	"unsafe"

	"github.com/miekg/dns"
)

// request is what unicorn answers a query from: its header bits, its one
// question as written and as text, and its EDNS0 record. The UDP loop reads
// it straight from the wire (parser); ServeDNS builds it from a dns.Msg
// (requestOf). Everything after that works on a request.
type request struct {
	id    uint16
	flags uint16 // the query's header flags; replies copy opcode, RD and CD
	// qwire is the question as the client wrote it: the name in wire form,
	// then type and class. nil when the reply carries no question.
	qwire []byte
	// name is the question name in presentation form as asked
	// ("MaIn.Example."), escaped as miekg/dns escapes it; lower is the same
	// in lower case. In the UDP loop both may alias the reader's buffers:
	// they are valid only while that packet is handled and must be cloned
	// to be kept.
	name, lower   string
	qtype, qclass uint16
	edns          bool   // the query carries an OPT record
	udpSize       uint16 // its payload size
	do            bool   // its DO bit (RFC 3225)
}

func (q *request) cd() bool    { return q.flags&flagCD != 0 }
func (q *request) opcode() int { return int(q.flags>>11) & 0xF }

func (q *request) question() dns.Question {
	return dns.Question{Name: q.name, Qtype: q.qtype, Qclass: q.qclass}
}

// limit returns the largest reply the client accepts: 64 KiB over TCP;
// over UDP the size its EDNS0 record advertises, at least 512 (RFC 1035)
// and at most ednsSize.
func (q *request) limit(tcp bool) int {
	switch {
	case tcp:
		return dns.MaxMsgSize
	case !q.edns:
		return dns.MinMsgSize
	}
	return min(max(int(q.udpSize), dns.MinMsgSize), ednsSize)
}

// cacheKey returns the key of the question's upstream answer. Its name
// aliases q.lower: clone it before storing it.
func (q *request) cacheKey() cacheKey {
	return cacheKey{name: q.lower, qtype: q.qtype, qclass: q.qclass, do: q.edns && q.do, cd: q.cd()}
}

// requestOf returns the request of m, its question packed into buf
// (which it may grow). The error is errQuestion when the question name
// cannot be packed; q is then filled but for the question.
func requestOf(m *dns.Msg, buf []byte) (request, error) {
	q := request{id: m.Id, flags: uint16(m.Opcode&0xF) << 11}
	if m.RecursionDesired {
		q.flags |= flagRD
	}
	if m.CheckingDisabled {
		q.flags |= flagCD
	}
	if opt := m.IsEdns0(); opt != nil {
		q.edns, q.udpSize, q.do = true, opt.UDPSize(), opt.Do()
	}
	if len(m.Question) == 0 {
		return q, nil
	}
	mq := &m.Question[0]
	buf = buf[:0]
	end, err := packName(&buf, mq.Name)
	if err != nil {
		return q, err
	}
	buf = binary.BigEndian.AppendUint16(buf[:end], mq.Qtype)
	q.qwire = binary.BigEndian.AppendUint16(buf, mq.Qclass)
	q.name, q.lower = mq.Name, strings.ToLower(mq.Name)
	q.qtype, q.qclass = mq.Qtype, mq.Qclass
	return q, nil
}

// parseResult says what to do with a packet the parser has read.
type parseResult uint8

const (
	// parsedQuery: a query with one question, nothing in the answer and
	// authority sections and at most an OPT record in the additional one.
	parsedQuery parseResult = iota
	// parseIgnore: shorter than a header, or a response; no reply, since
	// any reply could be used to amplify or to loop (as miekg/dns does).
	parseIgnore
	// parseFormErr: malformed; the reply is FORMERR, header only.
	parseFormErr
	// parseNotImp: an opcode other than QUERY; the reply is NOTIMP.
	parseNotImp
	// parseSlow: well-formed but unusual (a record in the answer or
	// authority section, another additional record than one OPT): it is
	// unpacked by miekg/dns and served by ServeDNS.
	parseSlow
)

// Reasons the parser gives for parseFormErr and parseIgnore, for tests.
var (
	errShort      = errors.New("shorter than a DNS header")
	errResponse   = errors.New("a response, not a query")
	errQDCount    = errors.New("not exactly one question")
	errSections   = errors.New("too many records for a query")
	errTruncated  = errors.New("question runs past the end")
	errCompressed = errors.New("compression pointer in the question")
	errLabelType  = errors.New("reserved label type")
	errLongName   = errors.New("name longer than 255 bytes")
	errBadOPT     = errors.New("OPT record runs past the end")
)

// parser reads queries from the wire into requests, reusing its buffers:
// a parsed query costs no allocation unless own is set.
type parser struct {
	// own makes name and lower ordinary strings, for requests that outlive
	// the packet and the parser. Otherwise they alias the parser's
	// buffers and change with the next parse.
	own         bool
	name, lower []byte
}

func newParser(own bool) *parser {
	return &parser{own: own, name: make([]byte, 0, 256), lower: make([]byte, 0, 256)}
}

// parse reads pkt into q. The checks follow miekg/dns's
// DefaultMsgAcceptFunc and Unpack, stricter where a query cannot be
// meant: a compression pointer in the question (it could only point into
// the header) and a question without type and class are FORMERR. Bytes
// after the last record are ignored, as miekg/dns does. q.qwire aliases
// pkt.
func (p *parser) parse(pkt []byte, q *request) (parseResult, error) {
	if len(pkt) < headerLen {
		return parseIgnore, errShort
	}
	be := binary.BigEndian
	flags := be.Uint16(pkt[2:])
	if flags&flagQR != 0 {
		return parseIgnore, errResponse
	}
	*q = request{id: be.Uint16(pkt), flags: flags}
	qd, an, ns, ar := be.Uint16(pkt[4:]), be.Uint16(pkt[6:]), be.Uint16(pkt[8:]), be.Uint16(pkt[10:])
	if qd != 1 {
		if q.opcode() != dns.OpcodeQuery {
			return parseNotImp, nil
		}
		return parseFormErr, errQDCount
	}
	off, err := p.readName(pkt, headerLen)
	if err == nil && off+4 > len(pkt) {
		err = errTruncated
	}
	if err != nil {
		if q.opcode() != dns.OpcodeQuery {
			return parseNotImp, nil
		}
		return parseFormErr, err
	}
	q.qtype, q.qclass = be.Uint16(pkt[off:]), be.Uint16(pkt[off+2:])
	off += 4
	q.qwire = pkt[headerLen:off:off]
	p.setNames(q)
	switch {
	case q.opcode() != dns.OpcodeQuery:
		return parseNotImp, nil
	case an > 1 || ns > 1 || ar > 2: // DefaultMsgAcceptFunc's limits
		return parseFormErr, errSections
	case an != 0 || ns != 0 || ar == 2:
		return parseSlow, nil
	case ar == 0:
		return parsedQuery, nil
	}
	// One additional record: read it if it is an OPT record (owner the
	// root, type OPT), else leave it to miekg/dns (a TSIG, say).
	if off+11 > len(pkt) || pkt[off] != 0 || be.Uint16(pkt[off+1:]) != dns.TypeOPT {
		return parseSlow, nil
	}
	if off+11+int(be.Uint16(pkt[off+9:])) > len(pkt) {
		return parseFormErr, errBadOPT
	}
	q.edns = true
	q.udpSize = be.Uint16(pkt[off+3:])        // CLASS is the payload size
	q.do = be.Uint16(pkt[off+7:])&0x8000 != 0 // TTL is ext. rcode, version, flags
	return parsedQuery, nil
}

// readName reads the uncompressed name at off into p.name (presentation
// form, escaped like miekg/dns) and p.lower, and returns the offset past
// it.
func (p *parser) readName(pkt []byte, off int) (int, error) {
	p.name, p.lower = p.name[:0], p.lower[:0]
	budget := 255   // wire bytes, as miekg/dns counts them
	for range 128 { // 127 labels of one byte fill the budget
		if off >= len(pkt) {
			return 0, errTruncated
		}
		c := int(pkt[off])
		off++
		switch c & 0xC0 {
		case 0x00:
		case 0xC0:
			return 0, errCompressed
		default:
			return 0, errLabelType
		}
		if c == 0 {
			return off, nil
		}
		if off+c > len(pkt) {
			return 0, errTruncated
		}
		if budget -= c + 1; budget <= 0 {
			return 0, errLongName
		}
		for _, b := range pkt[off : off+c] {
			switch nameEscape[b] {
			case escNone:
				p.name = append(p.name, b)
				p.lower = append(p.lower, lowerASCII[b])
			case escChar:
				p.name = append(p.name, '\\', b)
				p.lower = append(p.lower, '\\', b)
			default:
				d := [4]byte{'\\', '0' + b/100, '0' + b/10%10, '0' + b%10}
				p.name = append(p.name, d[:]...)
				p.lower = append(p.lower, d[:]...)
			}
		}
		p.name = append(p.name, '.')
		p.lower = append(p.lower, '.')
		off += c
	}
	return 0, errLongName
}

// setNames points q.name and q.lower at the names just read.
func (p *parser) setNames(q *request) {
	switch {
	case len(p.name) == 0:
		q.name, q.lower = ".", "."
	case p.own:
		q.name = string(p.name)
		q.lower = q.name
		if string(p.lower) != q.name {
			q.lower = string(p.lower)
		}
	default:
		q.name = unsafe.String(unsafe.SliceData(p.name), len(p.name))
		q.lower = unsafe.String(unsafe.SliceData(p.lower), len(p.lower))
	}
}

// How a byte of a label is written in presentation form, as miekg/dns
// writes it.
const (
	escNone = iota // as is
	escChar        // after a backslash
	escDDD         // as \DDD
)

var nameEscape, lowerASCII = func() (esc, low [256]byte) {
	for i := range 256 {
		b := byte(i)
		low[i] = b
		if 'A' <= b && b <= 'Z' {
			low[i] = b + 'a' - 'A'
		}
		switch {
		case strings.IndexByte(`. '@;()"\`, b) >= 0:
			esc[i] = escChar
		case b < ' ' || b > '~':
			esc[i] = escDDD
		}
	}
	return esc, low
}()
