package proxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// earlyDial is an upstream connection dialled before the decision, for a
// transparent client that sends nothing at first: the server may be the
// one to speak first (SSH, SMTP), and waiting the whole peek for the
// client would delay every such connection. Only a destination that no
// address or port rule blocks is dialled early.
type earlyDial struct {
	done   chan struct{} // closed when the goroutine is over
	cancel context.CancelFunc
	client net.Conn    // whose peek a server's first bytes end
	spoke  atomic.Bool // the server sent its first bytes: the peek is over

	mu      sync.Mutex
	stopped bool // finish was called: no read may start
	conn    net.Conn
	err     error
	first   []byte // what the server sent before the decision
}

// dialEarly dials dst and reads the server's first bytes; when they come,
// it ends the client's peek (through c's read deadline), so that the flow
// is decided at once.
func (p *Proxy) dialEarly(c net.Conn, dst netip.AddrPort) *earlyDial {
	ctx, cancel := context.WithTimeout(p.ctx, DefaultDialTimeout)
	e := &earlyDial{done: make(chan struct{}), cancel: cancel, client: c}
	go func() {
		defer close(e.done)
		conn, err := p.dial(ctx, "tcp", dst.String())
		e.mu.Lock()
		e.conn, e.err = conn, err
		if err != nil || e.stopped {
			e.mu.Unlock()
			return
		}
		conn.SetReadDeadline(time.Now().Add(p.peekFor))
		e.mu.Unlock()
		buf := make([]byte, 4096)
		n, _ := conn.Read(buf)
		e.mu.Lock()
		e.first = buf[:n]
		e.mu.Unlock()
		if n > 0 {
			// The server spoke: stop waiting for the client. A peek that
			// sets its deadline after this sees spoke (peekConn).
			e.spoke.Store(true)
			c.SetReadDeadline(time.Now())
		}
	}()
	return e
}

// finish ends the early dial: it cuts a read still waiting for the server
// short and returns the connection and what the server sent, ready to
// relay; when use is false it closes the connection (with a reset) and
// returns nil.
func (e *earlyDial) finish(use bool) (net.Conn, []byte, error) {
	e.mu.Lock()
	e.stopped = true
	if e.conn != nil {
		e.conn.SetReadDeadline(time.Now())
	}
	e.mu.Unlock()
	if !use {
		e.cancel() // a dial still under way is abandoned
	}
	<-e.done
	e.cancel()
	e.client.SetReadDeadline(time.Time{}) // the peek is over; the relay reads without one
	if e.err != nil {
		return nil, nil, e.err
	}
	e.conn.SetReadDeadline(time.Time{})
	if !use {
		reset(e.conn)
		return nil, nil, nil
	}
	return e.conn, e.first, nil
}

// peekConn is the client connection for the peek that follows the early
// dial: a read deadline the peek sets after the server has spoken would
// undo the wake-up, and the client would wait the whole peek bound.
func (e *earlyDial) peekConn() net.Conn { return earlyPeekConn{e.client, e} }

// earlyPeekConn keeps a read deadline in the past once the server spoke.
type earlyPeekConn struct {
	net.Conn
	e *earlyDial
}

func (c earlyPeekConn) SetReadDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	if !t.IsZero() && c.e.spoke.Load() {
		return c.Conn.SetReadDeadline(time.Now())
	}
	return nil
}
