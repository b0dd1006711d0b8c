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

// forward answers from the cache or the upstreams, after waiting delay
// (cut short, without an answer, if the server stops). Failures get
// SERVFAIL, which is never cached.
func (s *Server) forward(w dns.ResponseWriter, req *dns.Msg, q *dns.Question, tcp bool, delay time.Duration) {
	opt := req.IsEdns0()
	key := cacheKey{
		name:   strings.ToLower(q.Name),
		qtype:  q.Qtype,
		qclass: q.Qclass,
		do:     opt != nil && opt.Do(),
		cd:     req.CheckingDisabled,
	}
	a := s.cache.get(key, s.now())
	if a != nil {
		s.names.refresh(a.name, a.addrs)
	} else {
		var err error
		a, err = s.resolve(key, *q)
		if err != nil {
			s.log.Debug("dns upstream failed", slog.String("name", q.Name),
				slog.String("qtype", qtypeString(q.Qtype)), slog.Any("err", err))
			if s.wait(delay) {
				s.writeSynth(w, req, q, tcp, servFail, 0, nil)
			}
			return
		}
	}
	if s.wait(delay) {
		s.writeAnswer(w, req, opt, tcp, a)
	}
}

// resolve asks the upstreams, remembers the addresses of the answer and
// caches it if it may be.
func (s *Server) resolve(key cacheKey, q dns.Question) (*answer, error) {
	r, err := s.fwd.resolve(s.ctx, q, key.do, key.cd)
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

// writeAnswer writes a forwarded answer as the reply to req.
func (s *Server) writeAnswer(w dns.ResponseWriter, req *dns.Msg, opt *dns.OPT, tcp bool, a *answer) {
	buf, pooled := getBuf(len(a.wire) + optLen)
	defer putBuf(pooled)
	out, ok := a.appendReply(buf, req, opt, s.now())
	if limit := clientLimit(opt, tcp); !ok || len(out) > limit {
		// Rare: too big for the client, or a question that packs
		// differently. Let miekg/dns cut it down.
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			s.log.Error("dns cached answer unreadable", slog.Any("err", err))
			return
		}
		m.Question = req.Question[:1]
		m.Truncate(limit)
		var err error
		if out, err = m.Pack(); err != nil {
			s.log.Error("dns answer cannot be packed", slog.Any("err", err))
			return
		}
	}
	w.Write(out)
}
