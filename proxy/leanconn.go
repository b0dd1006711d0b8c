package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

func isChunked(te []string) bool { return len(te) > 0 && te[0] == "chunked" }

// hopHeaders are the headers that concern one connection only.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopHeaders deletes hop-by-hop headers and those Connection names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delete(h, http.CanonicalHeaderKey(f))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// flushingBody reads a body from src and flushes w before a read that
// could block, so that a streamed body is never held back in w while
// most bodies still go out in one write.
type flushingBody struct {
	r    io.ReadCloser
	src  *bufio.Reader
	w    *bufio.Writer
	left int64 // bytes still to come, or -1 when unknown
}

func (f flushingBody) wrap() io.ReadCloser { return &f }

func (f *flushingBody) Read(b []byte) (int, error) {
	if f.left == 0 {
		return 0, io.EOF
	}
	if f.src.Buffered() == 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := f.r.Read(b)
	if f.left > 0 {
		f.left -= int64(n)
	}
	return n, err
}

func (f *flushingBody) Close() error { return f.r.Close() }

// replayConn is a client connection handed back to the fallback server
// with the bytes already read from it: the buffered readers are drained in
// order before the connection is read again.
type replayConn struct {
	net.Conn
	bufs    []*bufio.Reader
	mu      sync.Mutex
	pending *decided // for the first request the server reads
}

func (c *replayConn) Read(b []byte) (int, error) {
	for len(c.bufs) > 0 {
		if c.bufs[0].Buffered() > 0 {
			return c.bufs[0].Read(b)
		}
		c.bufs[0] = nil
		c.bufs = c.bufs[1:]
	}
	return c.Conn.Read(b)
}

// take returns the decision for the first request, once.
func (c *replayConn) take() *decided {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.pending
	c.pending = nil
	return d
}

// replayKey is the connection context key of a *replayConn.
type replayKey struct{}

// connQueue is the fallback server's listener: it accepts the connections
// the lean path hands back.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// fallback hands c to the fallback server, starting it on first use, or
// closes c when the proxy is closed.
func (p *Proxy) fallback(c net.Conn) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return
	}
	if !p.fbStarted {
		p.fbStarted = true
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.fb.Serve(p.fbq)
		}()
	}
	p.mu.Unlock()
	select {
	case p.fbq.ch <- c:
	case <-p.fbq.done:
		c.Close()
	}
}

// release forgets a tracked connection without closing it.
func (p *Proxy) release(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}
