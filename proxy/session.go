package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// session is one client connection served by the lean path.
type session struct {
	p      *Proxy
	client netip.Addr
	conn   net.Conn // tracked; untracked by close unless handed off
	br     *bufio.Reader
	bw     *bufio.Writer

	up     net.Conn // tracked upstream connection, or nil
	upBr   *bufio.Reader
	upBw   *bufio.Writer
	target netip.AddrPort // where up goes
	reused bool           // up has carried a request already

	hr       *bufio.Reader // parses heads peeked from br
	head     bytes.Reader
	lastErr  error     // why forward last failed
	sent     bool      // forward wrote (some of) the request upstream
	deadline time.Time // the read deadline set on conn
}

// close ends the session: both connections are closed and untracked.
func (s *session) close() {
	s.dropUpstream()
	if s.conn != nil {
		s.p.untrack(s.conn)
		s.conn = nil
	}
}

func (s *session) dropUpstream() {
	if s.up != nil {
		s.p.untrack(s.up)
		s.up = nil
	}
}

// loop serves requests until the client closes, a request ends the
// session or one is handed back to the server. Each turn reads at least
// one request head or ends.
func (s *session) loop() {
	for s.conn != nil {
		// The idle deadline moves at most once a second: a timer update
		// per request costs more than the second of slack.
		if now := time.Now(); s.deadline.Sub(now) < idleTimeout-time.Second {
			s.deadline = now.Add(idleTimeout)
			s.conn.SetReadDeadline(s.deadline)
		}
		head, err := s.peekHead()
		if err != nil {
			if err == bufio.ErrBufferFull {
				s.handoff(nil)
			}
			return
		}
		if !s.next(head) {
			return
		}
	}
}

// peekHead returns the next request head, up to and including its blank
// line, still unread in br. It fails with bufio.ErrBufferFull when the head
// does not fit br.
func (s *session) peekHead() ([]byte, error) {
	from := 0
	for {
		n := s.br.Buffered()
		if n > 0 {
			b, _ := s.br.Peek(n)
			if i := headEnd(b, from); i >= 0 {
				return b[:i], nil
			}
			from = max(n-3, 0)
		}
		if n == s.br.Size() {
			return nil, bufio.ErrBufferFull
		}
		if _, err := s.br.Peek(n + 1); err != nil {
			return nil, err
		}
	}
}

// headEnd returns the length of the request head in b (through the empty
// line that ends it), or -1. It scans from index from.
func headEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// next serves the request whose head is peeked in br. It reports whether
// the session goes on.
func (s *session) next(head []byte) bool {
	if s.hr == nil {
		s.hr = bufio.NewReaderSize(&s.head, s.br.Size())
	}
	s.head.Reset(head)
	s.hr.Reset(&s.head)
	req, err := http.ReadRequest(s.hr)
	if err != nil || !leanEligible(req) {
		return s.handoff(nil)
	}
	host, port, err := splitTarget(req.URL.Host, 80)
	if err != nil {
		return s.handoff(nil)
	}
	if req.ContentLength != 0 && s.p.needsContent(s.client, host, outcome{port: port}) {
		// A rule may ask about the body (jsonrpc:), which this path does
		// not read before deciding: goproxy's path does.
		return s.handoff(nil)
	}
	ctx := s.p.ctx
	o, err := s.p.decide(ctx, s.client, host, port, req)
	d := &decided{o: o, err: err}
	if err != nil || !leanAllowed(o) || len(req.TransferEncoding) != 0 {
		return s.handoff(d)
	}
	if err := s.p.wait(ctx, o.delay); err != nil {
		return false
	}
	d.o.delay = 0
	if req.ContentLength == 0 {
		// Nothing of the request is consumed until its response is in:
		// a failure can still hand the request back.
		req.Body = nil
		if !s.forward(req, o.target, len(head)) {
			if s.sent {
				// The upstream may have acted on it: never send it again
				// through goproxy; answer 502 instead.
				s.br.Discard(len(head))
				s.fail(req, s.lastErr)
				return false
			}
			return s.handoff(d)
		}
		return s.conn != nil
	}
	s.br.Discard(len(head))
	s.deadline = time.Time{}
	s.conn.SetReadDeadline(s.deadline)
	req.Body = io.NopCloser(io.LimitReader(s.br, req.ContentLength))
	if !s.forward(req, o.target, 0) {
		s.fail(req, s.lastErr)
		return false
	}
	return s.conn != nil
}

// handoff gives the client connection, with every byte not yet consumed,
// to the fallback server, which answers with goproxy and d's decision, if
// any. It returns false: the session is over.
func (s *session) handoff(d *decided) bool {
	s.dropUpstream()
	c := s.conn
	s.conn = nil
	s.p.release(c)
	rc := &replayConn{Conn: c, bufs: []*bufio.Reader{s.br}, pending: d}
	if prev, ok := c.(*replayConn); ok {
		rc.Conn = prev.Conn
		rc.bufs = append(rc.bufs, prev.bufs...)
	}
	if len(rc.bufs) > maxReplayDepth {
		c.Close()
		return false
	}
	s.p.fallback(rc)
	return false
}

// fail answers a request the upstream could not be asked or answer, as
// onResponse does, and ends the session.
func (s *session) fail(req *http.Request, err error) {
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	resp := textResponse(req, http.StatusBadGateway, "unicorn: cannot reach "+req.URL.Host+": "+err.Error())
	resp.Close = true
	resp.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	resp.Write(s.bw)
	s.bw.Flush()
	s.close()
}

// forward sends req to target on the pinned upstream connection and copies
// the response to the client. consume is how many bytes of br to discard
// once the response has arrived (the head of a bodiless request). It
// returns false, with the client connection untouched, when no response
// came; it closes the session when the response must be the last.
func (s *session) forward(req *http.Request, target netip.AddrPort, consume int) bool {
	s.lastErr, s.sent = nil, false
	removeHopHeaders(req.Header)
	var resp *http.Response
	for attempt := 0; attempt < 2; attempt++ {
		if s.up != nil && s.target != target {
			s.dropUpstream()
		}
		if s.up == nil {
			if err := s.dial(target); err != nil {
				s.lastErr = err
				return false
			}
		}
		reused := s.reused
		s.reused = true
		var err error
		s.sent = true
		resp, err = s.roundTrip(req)
		if err == nil {
			break
		}
		s.lastErr = err
		s.dropUpstream()
		// A reused connection may have been closed by the upstream while
		// idle; a bodiless request whose method may be repeated (as
		// net/http's Transport does) is sent once more on a fresh one.
		if !reused || req.Body != nil || !idempotent(req.Method) {
			return false
		}
	}
	if consume > 0 {
		s.br.Discard(consume)
	}
	closeAfter := s.writeResponse(req, resp)
	if closeAfter {
		s.close()
	}
	return true
}

// idempotent reports whether a request with this method may be sent twice.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// dial opens a tracked upstream connection to target.
func (s *session) dial(target netip.AddrPort) error {
	up, err := s.p.dial(s.p.ctx, "tcp", target.String())
	if err != nil {
		return err
	}
	if !s.p.track(up) {
		up.Close()
		return net.ErrClosed
	}
	s.up, s.target, s.reused = up, target, false
	if s.upBr == nil {
		s.upBr = bufio.NewReader(up)
		s.upBw = bufio.NewWriter(up)
	} else {
		s.upBr.Reset(up)
		s.upBw.Reset(up)
	}
	return nil
}

// roundTrip writes req upstream and reads the response head, passing 1xx
// informational responses on to the client.
func (s *session) roundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body = flushingBody{req.Body, s.br, s.upBw, req.ContentLength}.wrap()
	}
	if err := req.Write(s.upBw); err != nil {
		return nil, err
	}
	if err := s.upBw.Flush(); err != nil {
		return nil, err
	}
	// A response head that never comes must not hold the session (and
	// its goroutine) forever; a body may stream for as long as it likes.
	s.up.SetReadDeadline(time.Now().Add(responseHeadTimeout))
	defer s.up.SetReadDeadline(time.Time{})
	for {
		resp, err := http.ReadResponse(s.upBr, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			return resp, nil
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("unexpected %s", resp.Status)
		}
		removeHopHeaders(resp.Header)
		fmt.Fprintf(s.bw, "HTTP/1.1 %s\r\n", resp.Status)
		resp.Header.Write(s.bw)
		s.bw.WriteString("\r\n")
		if err := s.bw.Flush(); err != nil {
			return nil, err
		}
	}
}

// writeResponse copies resp to the client with one flush for a body that
// is already buffered, and reports whether both connections must close
// after it.
func (s *session) writeResponse(req *http.Request, resp *http.Response) bool {
	closeAfter := req.Close || resp.Close ||
		(resp.ContentLength < 0 && !isChunked(resp.TransferEncoding) && req.Method != http.MethodHead)
	removeHopHeaders(resp.Header)
	if _, ok := resp.Header["Date"]; !ok {
		resp.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	resp.Close = closeAfter
	body := resp.Body
	resp.Body = flushingBody{body, s.upBr, s.bw, resp.ContentLength}.wrap()
	err := resp.Write(s.bw)
	body.Close()
	if err == nil {
		err = s.bw.Flush()
	}
	return closeAfter || err != nil
}
