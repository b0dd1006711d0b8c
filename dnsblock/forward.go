package dnsblock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds a whole upstream exchange when Config.Timeout is
// zero.
const DefaultTimeout = 2 * time.Second

const (
	// upstreamBufSize is the read buffer for UDP replies; unicorn
	// advertises ednsSize, so honest upstreams stay below it.
	upstreamBufSize = 4096
	// maxStrayReplies bounds how many replies with a wrong ID or question
	// one UDP exchange skips before giving up.
	maxStrayReplies = 8
)

// forwarder asks upstream resolvers, in order, with failover.
type forwarder struct {
	upstreams []string
	timeout   time.Duration
}

// errNoUpstream is returned when no upstream could be asked in time.
var errNoUpstream = errors.New("dnsblock: no upstream answered in time")

// resolve asks the upstreams for q, in order: an upstream that fails, times
// out or answers with anything but NOERROR or NXDOMAIN passes the question
// to the next. The whole exchange takes at most f.timeout; each upstream
// gets an equal share of the time that is left. A reply with TC set is
// asked again over TCP. If no upstream answers well, the last failure
// reply (e.g. SERVFAIL) is returned, or an error if there was none.
func (f *forwarder) resolve(ctx context.Context, q dns.Question, do, cd bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = true
	m.CheckingDisabled = cd
	m.Question = []dns.Question{q} // as the client wrote it
	m.SetEdns0(ednsSize, do)

	var fallback *dns.Msg
	err := errNoUpstream
	for i, up := range f.upstreams {
		share := time.Until(deadline) / time.Duration(len(f.upstreams)-i)
		if share <= 0 || ctx.Err() != nil {
			break
		}
		r, e := f.ask(ctx, up, share, m)
		if e != nil {
			err = fmt.Errorf("%s: %w", up, e)
			continue
		}
		if r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError {
			return r, nil
		}
		fallback = r
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, err
}

// ask asks one upstream over UDP, and again over TCP if the reply was
// truncated, within share.
func (f *forwarder) ask(ctx context.Context, up string, share time.Duration, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, share)
	defer cancel()
	r, err := exchange(ctx, "udp", up, m)
	if err == nil && r.Truncated {
		r, err = exchange(ctx, "tcp", up, m)
	}
	return r, err
}

// aLongTimeAgo is a deadline in the past, to unblock a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange sends m to addr over network and returns the matching reply.
// Cancelling ctx (timeout or server shutdown) unblocks it at once.
func exchange(ctx context.Context, network, addr string, m *dns.Msg) (*dns.Msg, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Set after the deadline above, so that a cancel cannot be overwritten.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	defer stop()

	co := &dns.Conn{Conn: c, UDPSize: upstreamBufSize}
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	for range maxStrayReplies {
		r, err := co.ReadMsg()
		if err != nil && (r == nil || !r.Truncated) {
			// A truncated UDP reply may not unpack fully; its header is
			// enough to go to TCP.
			return nil, err
		}
		if r.Id == m.Id && sameQuestion(r, m) {
			return r, nil
		}
		if network == "tcp" {
			return nil, dns.ErrId
		}
		// UDP: a late reply to an earlier query, or spoofing; keep reading.
	}
	return nil, errors.New("dnsblock: too many mismatched replies")
}

// sameQuestion reports whether r answers m's question; names compare
// ignoring case, since some upstreams randomize it (draft-vixie-dnsext-dns0x20).
func sameQuestion(r, m *dns.Msg) bool {
	if len(r.Question) != 1 {
		return false
	}
	a, b := r.Question[0], m.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// writer is where a reply goes: a dns.ResponseWriter, or the UDP loop's
// reply to one client.
type writer interface {
	Write([]byte) (int, error)
}

// cachedReply writes into b the cached answer to q, and returns it; nil
// when there is none, or when it needs more than a copy and a patch (too
// big for the client, or stored under a question that packs differently),
// which forward then handles.
func (s *Server) cachedReply(b []byte, q *request, tcp bool) []byte {
	if s.cache == nil {
		return nil
	}
	now := s.now()
	a := s.cache.get(q.cacheKey(), now)
	if a == nil || len(a.wire) > q.limit(tcp) {
		return nil
	}
	out, ok := a.appendReply(b, q, now)
	if !ok || len(out) > q.limit(tcp) {
		return nil
	}
	s.names.refresh(a.name, a.addrs)
	s.stats.cacheHits.Add(1)
	return out
}

// forward answers from the cache or the upstreams, after waiting delay
// (cut short, without an answer, if the server stops). Failures get
// SERVFAIL, which is never cached. q's names must be its own (not
// aliases): they may be stored.
func (s *Server) forward(w writer, q *request, tcp bool, delay time.Duration) {
	key := q.cacheKey()
	a := s.cache.get(key, s.now())
	if a != nil {
		s.names.refresh(a.name, a.addrs)
		s.stats.cacheHits.Add(1)
	} else {
		var err error
		a, err = s.resolve(key, q.question())
		if err != nil {
			s.log.Debug("dns upstream failed", slog.String("name", q.name),
				slog.String("qtype", qtypeString(q.qtype)), slog.Any("err", err))
			if s.wait(delay) {
				buf, pooled := getBuf(bufSize)
				defer putBuf(pooled)
				w.Write(s.synthReply(buf, q, tcp, servFail, 0, nil))
			}
			return
		}
	}
	if s.wait(delay) {
		s.writeAnswer(w, q, tcp, a)
	}
}

// resolve asks the upstreams, remembers the addresses of the answer and
// caches it if it may be.
func (s *Server) resolve(key cacheKey, q dns.Question) (*answer, error) {
	start := time.Now()
	r, err := s.fwd.resolve(s.ctx, q, key.do, key.cd)
	s.stats.upstreamDone(time.Since(start), err)
	if err != nil {
		return nil, err
	}
	a, err := newAnswer(r, s.now())
	if err != nil {
		return nil, err
	}
	a.name = namesKey(key.name)
	if r.Rcode == dns.RcodeSuccess {
		a.addrs = s.names.record(a.name, r.Answer)
	}
	s.cache.put(key, a)
	return a, nil
}

// wait waits d; it reports false if the server stopped first.
func (s *Server) wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// writeAnswer writes a forwarded answer as the reply to q.
func (s *Server) writeAnswer(w writer, q *request, tcp bool, a *answer) {
	buf, pooled := getBuf(len(a.wire) + optLen)
	defer putBuf(pooled)
	out, ok := a.appendReply(buf, q, s.now())
	if limit := q.limit(tcp); !ok || len(out) > limit {
		// Rare: too big for the client, or a question that packs
		// differently. Let miekg/dns cut it down.
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			s.log.Error("dns cached answer unreadable", slog.Any("err", err))
			return
		}
		m.Question = []dns.Question{q.question()}
		m.Truncate(limit)
		var err error
		if out, err = m.Pack(); err != nil {
			s.log.Error("dns answer cannot be packed", slog.Any("err", err))
			return
		}
	}
	w.Write(out)
}
