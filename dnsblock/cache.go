package dnsblock

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// DefaultCacheSize is how many answers the cache holds when
// Config.CacheSize is zero.
const DefaultCacheSize = 10000

// Bounds on how long answers stay cached, whatever their TTLs say.
const (
	maxPositiveTTL = 24 * time.Hour
	maxNegativeTTL = 3 * time.Hour // RFC 2308 section 5 suggests 1 to 3 hours
)

// cacheKey identifies an upstream answer. The DO and CD bits change what
// upstreams return (RRSIGs, unvalidated data), so they are part of it.
type cacheKey struct {
	name   string // lower case
	qtype  uint16
	qclass uint16
	do, cd bool
}

// answer is an upstream reply packed once and served many times: a cache
// hit copies wire, patches the ID, flags, question case and TTLs, and adds
// the client's OPT record. It is immutable once built.
type answer struct {
	wire    []byte   // the reply without OPT record, question as first asked
	ttls    []uint16 // offsets of the TTL fields in wire
	qEnd    int      // offset just past the question name
	stored  time.Time
	expires time.Time // zero: not cacheable
	name    string    // Names key of the question
	addrs   []netip.Addr
}

var errUncacheable = errors.New("dnsblock: malformed upstream reply")

// newAnswer packs an upstream reply. It drops the upstream's OPT record
// (unicorn writes its own per client) and works out how long the reply may
// be cached: positive answers by their smallest TTL, negative ones
// (NXDOMAIN, NODATA) by their SOA (RFC 2308); anything else, and
// truncated replies, not at all.
func newAnswer(r *dns.Msg, now time.Time) (*answer, error) {
	if r.Rcode > 0xF {
		return nil, errUncacheable // extended rcodes need the dropped OPT
	}
	extra := r.Extra[:0:0]
	for _, rr := range r.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	r.Extra = extra
	r.Compress = true
	wire, err := r.Pack()
	if err != nil {
		return nil, err
	}
	a := &answer{wire: wire, stored: now}
	if a.qEnd, a.ttls, err = ttlOffsets(wire); err != nil {
		return nil, err
	}
	if ttl, ok := cacheTTL(r); ok {
		a.expires = now.Add(ttl)
	}
	return a, nil
}

// cacheTTL says how long r may be cached.
func cacheTTL(r *dns.Msg) (time.Duration, bool) {
	if r.Truncated || len(r.Question) != 1 {
		return 0, false
	}
	negative := r.Rcode == dns.RcodeNameError || (r.Rcode == dns.RcodeSuccess && len(r.Answer) == 0)
	if negative {
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl := min(soa.Hdr.Ttl, soa.Minttl)
				return min(time.Duration(ttl)*time.Second, maxNegativeTTL), ttl > 0
			}
		}
		return 0, false // no SOA: do not cache (RFC 2308 section 5)
	}
	if r.Rcode != dns.RcodeSuccess {
		return 0, false // SERVFAIL, REFUSED and the like are never cached
	}
	ttl := ^uint32(0)
	for _, sec := range [...][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return min(time.Duration(ttl)*time.Second, maxPositiveTTL), ttl > 0
}

// ttlOffsets walks a packed message and returns the offset just past the
// first question name and the offsets of every record's TTL.
func ttlOffsets(m []byte) (qEnd int, ttls []uint16, err error) {
	if len(m) < headerLen || len(m) > 0xFFFF {
		return 0, nil, errUncacheable
	}
	qd := int(binary.BigEndian.Uint16(m[4:]))
	rrs := int(binary.BigEndian.Uint16(m[6:])) + int(binary.BigEndian.Uint16(m[8:])) + int(binary.BigEndian.Uint16(m[10:]))
	if qd != 1 {
		return 0, nil, errUncacheable
	}
	off, err := skipName(m, headerLen)
	if err != nil {
		return 0, nil, err
	}
	qEnd = off
	off += 4 // qtype, qclass
	ttls = make([]uint16, 0, rrs)
	for range rrs {
		if off, err = skipName(m, off); err != nil {
			return 0, nil, err
		}
		if off+10 > len(m) {
			return 0, nil, errUncacheable
		}
		ttls = append(ttls, uint16(off+4))
		off += 10 + int(binary.BigEndian.Uint16(m[off+8:]))
	}
	if off != len(m) {
		return 0, nil, errUncacheable
	}
	return qEnd, ttls, nil
}

// skipName returns the offset just past the (possibly compressed) name at
// off. It does not follow pointers: a pointer ends the name in place.
func skipName(m []byte, off int) (int, error) {
	for range 128 { // a name has at most 127 labels
		if off >= len(m) {
			return 0, errUncacheable
		}
		c := int(m[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, nil
			}
			off += 1 + c
		case 0xC0:
			return off + 2, nil
		default:
			return 0, errUncacheable // obsolete label types
		}
	}
	return 0, errUncacheable
}

// appendReply writes a into b (which it may grow) as the reply to q at
// time now: the client's ID, RD and CD bits, its question as written, TTLs
// lowered by the time a has been cached, and an OPT record if the client
// sent one. ok is false when the client's question is not the stored one
// in another letter case; b then holds the stored question, for the
// caller to replace.
func (a *answer) appendReply(b []byte, q *request, now time.Time) (_ []byte, ok bool) {
	b = append(b[:0], a.wire...)
	binary.BigEndian.PutUint16(b, q.id)
	flags := binary.BigEndian.Uint16(b[2:])&^(flagRD|flagCD) | flagRA | q.flags&(flagRD|flagCD)
	binary.BigEndian.PutUint16(b[2:], flags)
	// Same name up to letter case, so same length: copy it in place.
	n := len(q.qwire) - 4
	ok = n == a.qEnd-headerLen
	if ok {
		copy(b[headerLen:a.qEnd], q.qwire[:n])
	}
	if age := now.Sub(a.stored); age >= time.Second {
		elapsed := uint32(min(age/time.Second, 1<<31))
		for _, o := range a.ttls {
			ttl := binary.BigEndian.Uint32(a.wire[o:])
			binary.BigEndian.PutUint32(b[o:], ttl-min(ttl, elapsed))
		}
	}
	if q.edns {
		mb := msgBuilder{b: b}
		mb.opt(q.do, noEDE, "")
		b = mb.b
		binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
	}
	return b, ok
}

// cache holds upstream answers, bounded, keyed by question.
type cache struct {
	c *clock[cacheKey, *answer]
}

// get returns the unexpired answer for k.
func (c *cache) get(k cacheKey, now time.Time) *answer {
	if c == nil {
		return nil
	}
	a, ok := c.c.get(k)
	if !ok || !now.Before(a.expires) {
		return nil
	}
	return a
}

// put stores a if it is cacheable.
func (c *cache) put(k cacheKey, a *answer) {
	if c == nil || a.expires.IsZero() {
		return
	}
	c.c.put(k, a)
}
