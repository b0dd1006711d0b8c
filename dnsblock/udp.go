package dnsblock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Bounds of the UDP loop.
const (
	// maxUDPReaders bounds the goroutines reading the socket. Reads of one
	// socket are serialized by the runtime anyway; more readers only let
	// answers be built while another reads.
	maxUDPReaders = 8
	// maxPending bounds the queries handed to goroutines at once: those
	// that need an upstream or a delay, and unusual packets. When it is
	// reached further such queries are dropped, not answered SERVFAIL: a
	// delay rule must never turn into a fast answer, a client retries a
	// lost query later (when slots may be free) where it would give up on
	// SERVFAIL, and dropping costs nothing, which is the point under
	// overload. Blocked and cached answers never wait for a slot.
	maxPending = 2048
	// maxReadErrors is how many failed reads in a row end the loop with
	// an error.
	maxReadErrors = 100
)

// udpServer is dnsblock's own UDP loop, used instead of a miekg/dns
// server, which costs a goroutine, an OOB read and a dns.Msg unpack and
// pack per query (PERFORMANCE.md). A few readers each own their buffers
// and answer blocked and cached questions inline, straight from and into
// bytes; only questions that need an upstream or a delay, and unusual
// packets, go to a goroutine, at most maxPending at once.
type udpServer struct {
	s    *Server
	conn *net.UDPConn
	// dst is set for a wildcard listener: each query's destination address
	// is read from its control messages and replies are sent from it, so
	// that a multi-homed host answers from the address it was asked on.
	dst bool
	// noBatch reads one datagram per system call even where recvmmsg
	// exists (udp_linux.go); for tests of that path.
	noBatch bool

	pending    chan struct{} // semaphore of handler goroutines
	handlers   sync.WaitGroup
	dropped    atomic.Int64
	dropLogged atomic.Int64 // when an overload was last logged, UnixNano
}

// startUDP starts the loop on conn. The loop ends when conn is closed.
func (s *Server) startUDP(conn *net.UDPConn) *run {
	u := &udpServer{s: s, conn: conn, pending: make(chan struct{}, s.pendingMax), noBatch: s.udpNoBatch}
	if isWildcard(conn) {
		if err := enableDst(conn); err != nil {
			s.log.Warn("dns cannot read the destination of UDP queries; a multi-homed host may answer from another address than it was asked on",
				slog.String("udp", conn.LocalAddr().String()), slog.Any("err", err))
		} else {
			u.dst = true
		}
	}
	n := max(1, min(runtime.GOMAXPROCS(0), maxUDPReaders))
	errs := make(chan error, n)
	var readers sync.WaitGroup
	for range n {
		readers.Add(1)
		go func() {
			defer readers.Done()
			errs <- u.read()
		}()
	}
	r := &run{done: make(chan error, 1)}
	go func() {
		readers.Wait()
		close(errs)
		var first error
		for err := range errs {
			first = cmpOr(first, err)
		}
		r.done <- first
	}()
	r.stop = func(finished bool) error {
		conn.Close() // unblocks the readers
		var err error
		if !finished {
			err = <-r.done
		}
		// The readers are gone, so no handler starts any more; those
		// running end with the server's context.
		if !waitGroup(&u.handlers, shutdownGrace) {
			err = errors.Join(err, errors.New("UDP handlers did not return"))
		}
		return err
	}
	return r
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waitGroup waits for wg, at most d; it reports whether wg finished.
func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// udpReader is one reader of the loop, with its own buffers.
type udpReader struct {
	u   *udpServer
	p   *parser
	q   request
	in  []byte
	out []byte
	oob []byte // control messages read; nil unless u.dst
	src replySource
	w   udpWriter // the reply to the packet being handled
	// batch, when set, collects replies for one sendmmsg; slot is the
	// datagram being handled (udp_linux.go).
	batch *batch
	slot  int
}

// errNoBatch reports that batched reads are not available.
var errNoBatch = errors.New("dnsblock: no batched reads")

// read reads and answers queries until the socket is closed. It returns
// nil then, and an error after maxReadErrors failed reads in a row.
func (u *udpServer) read() error {
	r := &udpReader{u: u, p: newParser(false)}
	r.w.conn = u.conn
	if err := u.readBatches(r); err != errNoBatch {
		return err
	}
	r.in, r.out = make([]byte, bufSize), make([]byte, 0, bufSize)
	if u.dst {
		r.oob = make([]byte, oobSize)
	}
	fails := 0
	for { // until the socket is closed, or maxReadErrors
		n, from, err := r.recv()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if fails++; fails >= maxReadErrors {
				u.conn.Close() // stop the other readers too
				return err
			}
			time.Sleep(time.Duration(fails) * time.Millisecond)
			continue
		}
		fails = 0
		r.w.to = from
		r.out = r.out[:0]
		r.handle(r.in[:n])
	}
}

func (r *udpReader) recv() (int, netip.AddrPort, error) {
	if r.oob == nil {
		return r.u.conn.ReadFromUDPAddrPort(r.in)
	}
	n, oobn, _, from, err := r.u.conn.ReadMsgUDPAddrPort(r.in, r.oob)
	if err == nil {
		r.w.oob = r.src.reply(r.oob[:oobn])
	}
	return n, from, err
}

// handle answers one packet, in the stages of ServeDNS.
func (r *udpReader) handle(pkt []byte) {
	s := r.u.s
	defer s.recoverPanic()
	if len(pkt) < headerLen || pkt[2]&(flagQR>>8) != 0 {
		return // see parseIgnore
	}
	// No zone: a link-local client is matched by its address, as ServeDNS
	// matches it (a zoned address matches no prefix).
	client := r.w.to.Addr().Unmap().WithZone("")
	q := &r.q
	if !s.clients.allow(client, "udp") {
		r.p.parse(pkt, q) // only to echo the question, if it has one
		r.reply(bareReply(r.out, q, dns.RcodeRefused))
		return
	}
	switch res, _ := r.p.parse(pkt, q); res {
	case parseFormErr:
		q.qwire = nil
		r.reply(bareReply(r.out, q, dns.RcodeFormatError))
		return
	case parseNotImp:
		r.reply(bareReply(r.out, q, dns.RcodeNotImplemented))
		return
	case parseSlow:
		r.later(pkt, 0, true)
		return
	}
	s.stats.queries.Add(1)
	d := s.decide(client, q, true)
	s.dlog.note(client, q, d)
	reply, fwd, delay := s.respond(r.out, q, false, d)
	switch {
	case reply != nil:
		r.reply(reply)
	case fwd:
		r.later(pkt, delay, false)
	}
}

// reply sends b to the client of the packet being handled, or queues it
// for the batch's sendmmsg.
func (r *udpReader) reply(b []byte) {
	if r.batch != nil {
		r.batch.queue(r.slot, b, r.w.oob)
		return
	}
	r.w.Write(b)
}

// later hands the packet to a goroutine: to forward (after delay) a query
// already decided, or, if slow, to unpack it with miekg/dns and serve it
// with ServeDNS. It drops the packet when maxPending goroutines run.
func (r *udpReader) later(pkt []byte, delay time.Duration, slow bool) {
	u := r.u
	select {
	case u.pending <- struct{}{}:
	default:
		u.overloaded()
		return
	}
	u.handlers.Add(1)
	pkt = bytes.Clone(pkt) // the reader's buffer is reused at once
	w := r.w
	go func() {
		defer func() {
			<-u.pending
			u.handlers.Done()
		}()
		defer u.s.recoverPanic()
		if slow {
			u.serveSlow(&w, pkt)
			return
		}
		var q request
		if res, _ := newParser(true).parse(pkt, &q); res == parsedQuery {
			u.s.forward(&w, &q, false, delay)
		}
	}()
}

// serveSlow serves a packet the lean parser leaves to miekg/dns. Like a
// miekg/dns server, it answers FORMERR (header only) when the packet does
// not unpack.
func (u *udpServer) serveSlow(w *udpWriter, pkt []byte) {
	var m dns.Msg
	if err := m.Unpack(pkt); err != nil {
		q := request{id: binary.BigEndian.Uint16(pkt), flags: binary.BigEndian.Uint16(pkt[2:])}
		w.Write(bareReply(make([]byte, 0, headerLen), &q, dns.RcodeFormatError))
		return
	}
	u.s.ServeDNS(w, &m)
}

// overloaded counts a dropped packet and says so, at most once a minute.
func (u *udpServer) overloaded() {
	n := u.dropped.Add(1)
	now := time.Now().UnixNano()
	last := u.dropLogged.Load()
	if (last == 0 || now-last >= int64(time.Minute)) && u.dropLogged.CompareAndSwap(last, now) {
		u.s.log.Warn("dns queries dropped: too many are waiting for an upstream or a delay",
			slog.Int("pending", cap(u.pending)), slog.Int64("dropped_total", n))
	}
}

// udpWriter sends a reply to one client over the loop's socket, from the
// address the query was sent to when oob says so. It is a
// dns.ResponseWriter for ServeDNS.
type udpWriter struct {
	conn *net.UDPConn
	to   netip.AddrPort
	oob  []byte // control message setting the source address, or nil
}

var _ dns.ResponseWriter = (*udpWriter)(nil)

func (w *udpWriter) Write(b []byte) (int, error) {
	if w.oob != nil {
		n, _, err := w.conn.WriteMsgUDPAddrPort(b, w.oob, w.to)
		return n, err
	}
	return w.conn.WriteToUDPAddrPort(b, w.to)
}

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.to) }
func (w *udpWriter) Close() error         { return nil }
func (w *udpWriter) TsigStatus() error    { return nil }
func (w *udpWriter) TsigTimersOnly(bool)  {}
func (w *udpWriter) Hijack()              {}
