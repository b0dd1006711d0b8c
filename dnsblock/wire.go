package dnsblock

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"

	"github.com/miekg/dns"
)

// Sizes of the messages unicorn writes.
const (
	// ednsSize is the UDP payload size unicorn advertises and honours at
	// most, the DNS Flag Day 2020 value that avoids IP fragmentation.
	ednsSize = 1232
	// bufSize is the size of pooled reply buffers; bigger replies get a
	// buffer of their own.
	bufSize = 4096
	// headerLen is the fixed DNS header.
	headerLen = 12
	// optLen is an OPT record without options; edeLen is the fixed part of
	// an Extended DNS Error option (RFC 8914).
	optLen = 11
	edeLen = 6
	// namePtr is a compression pointer to the question name, which always
	// starts right after the header.
	namePtr = 0xC000 | headerLen
)

// Header flag bits (RFC 1035 4.1.1).
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagCD = 1 << 4
)

// noEDE means "attach no Extended DNS Error".
const noEDE = 0xFFFF

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

// getBuf returns an empty buffer of capacity at least n, and the pool
// pointer to put back (nil when the buffer is not pooled).
func getBuf(n int) ([]byte, *[]byte) {
	if n > bufSize {
		return make([]byte, 0, n), nil
	}
	p := bufPool.Get().(*[]byte)
	return (*p)[:0], p
}

func putBuf(p *[]byte) {
	if p != nil {
		bufPool.Put(p)
	}
}

// soaRdata is the fixed start of the RDATA of synthesized SOA records,
// MNAME and RNAME in wire form (under .invalid, RFC 2606, so nothing can
// resolve them); serial, refresh, retry and expire follow, then MINIMUM.
var soaRdata = func() []byte {
	b := make([]byte, 64)
	off, err := dns.PackDomainName("unicorn.invalid.", b, 0, nil, false)
	if err != nil {
		panic(err)
	}
	off, err = dns.PackDomainName("hostmaster.unicorn.invalid.", b, off, nil, false)
	if err != nil {
		panic(err)
	}
	b = b[:off]
	for _, v := range []uint32{1, 1800, 900, 604800} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}()

// soaLen is the size of a synthesized SOA record.
var soaLen = 2 + 10 + len(soaRdata) + 4

// errQuestion reports a question name that cannot be written.
var errQuestion = errors.New("dnsblock: question name cannot be packed")

// msgBuilder writes a DNS response straight into a byte slice: blocked
// answers are small and fixed in shape, so building them this way costs
// no allocation, where a dns.Msg costs one per record and one per Pack.
type msgBuilder struct {
	b      []byte
	limit  int       // the largest message the client takes, less the OPT record
	counts [3]uint16 // answer, authority, additional
}

// start writes the header and the question as the client wrote it (none
// when q.qwire is nil). limit is the largest message the client accepts,
// reserve the room kept for records written without a check (the OPT
// record).
func (mb *msgBuilder) start(q *request, rcode int, limit, reserve int) {
	flags := uint16(flagQR|flagRA) | q.flags&(0xF<<11|flagRD|flagCD) | uint16(rcode&0xF)
	var qd uint16
	if q.qwire != nil {
		qd = 1
	}
	mb.b = binary.BigEndian.AppendUint16(mb.b[:0], q.id)
	mb.b = binary.BigEndian.AppendUint16(mb.b, flags)
	mb.b = binary.BigEndian.AppendUint16(mb.b, qd)
	mb.b = append(mb.b, 0, 0, 0, 0, 0, 0)
	mb.b = append(mb.b, q.qwire...)
	mb.counts = [3]uint16{}
	mb.limit = limit - reserve
}

// packName appends name in uncompressed wire form to *b, growing it as
// needed, and returns the new length.
func packName(b *[]byte, name string) (int, error) {
	off := len(*b)
	need := off + len(name) + 1
	if cap(*b) < need+4 {
		nb := make([]byte, off, need+64)
		copy(nb, *b)
		*b = nb
	}
	end, err := dns.PackDomainName(name, (*b)[:need], off, nil, false)
	if err != nil || end > need {
		return 0, errQuestion
	}
	return end, nil
}

// rr appends a record named by the question (compressed) to section sec,
// unless it would not fit; then it sets TC and reports false.
func (mb *msgBuilder) rr(sec int, typ uint16, ttl uint32, rdata ...[]byte) bool {
	n := 0
	for _, d := range rdata {
		n += len(d)
	}
	if len(mb.b)+12+n > mb.limit {
		mb.b[2] |= flagTC >> 8
		return false
	}
	mb.b = binary.BigEndian.AppendUint16(mb.b, namePtr)
	mb.b = binary.BigEndian.AppendUint16(mb.b, typ)
	mb.b = binary.BigEndian.AppendUint16(mb.b, dns.ClassINET)
	mb.b = binary.BigEndian.AppendUint32(mb.b, ttl)
	mb.b = binary.BigEndian.AppendUint16(mb.b, uint16(n))
	for _, d := range rdata {
		mb.b = append(mb.b, d...)
	}
	mb.counts[sec]++
	return true
}

// addr appends an A or AAAA record for a.
func (mb *msgBuilder) addr(a netip.Addr, ttl uint32) bool {
	if a.Is4() {
		b := a.As4()
		return mb.rr(0, dns.TypeA, ttl, b[:])
	}
	b := a.As16()
	return mb.rr(0, dns.TypeAAAA, ttl, b[:])
}

// soa appends the synthesized SOA to the authority section; ttl is both
// its TTL and its MINIMUM, so negative caching lasts ttl (RFC 2308 5).
func (mb *msgBuilder) soa(ttl uint32) bool {
	var min [4]byte
	binary.BigEndian.PutUint32(min[:], ttl)
	return mb.rr(1, dns.TypeSOA, ttl, soaRdata, min[:])
}

// opt appends an OPT record (RFC 6891) with the DO bit copied from the
// query (RFC 3225) and, unless code is noEDE, an Extended DNS Error
// (RFC 8914). The caller reserved its room in start.
func (mb *msgBuilder) opt(do bool, code uint16, text string) {
	var flags uint16
	if do {
		flags = 0x8000
	}
	rdlen := 0
	if code != noEDE {
		rdlen = 4 + 2 + len(text)
	}
	mb.b = append(mb.b, 0) // root owner
	mb.b = binary.BigEndian.AppendUint16(mb.b, dns.TypeOPT)
	mb.b = binary.BigEndian.AppendUint16(mb.b, ednsSize)
	mb.b = append(mb.b, 0, 0) // extended rcode, version
	mb.b = binary.BigEndian.AppendUint16(mb.b, flags)
	mb.b = binary.BigEndian.AppendUint16(mb.b, uint16(rdlen))
	if code != noEDE {
		mb.b = binary.BigEndian.AppendUint16(mb.b, dns.EDNS0EDE)
		mb.b = binary.BigEndian.AppendUint16(mb.b, uint16(2+len(text)))
		mb.b = binary.BigEndian.AppendUint16(mb.b, code)
		mb.b = append(mb.b, text...)
	}
	mb.counts[2]++
}

// finish writes the section counts and returns the message.
func (mb *msgBuilder) finish() []byte {
	for i, c := range mb.counts {
		binary.BigEndian.PutUint16(mb.b[6+2*i:], c)
	}
	return mb.b
}
