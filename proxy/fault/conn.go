package fault

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/chaos-unicorn/unicorn/rules"
)

// ErrReplaced is the cause a front end cancels a Conn's context with when
// it replaces the fault of a live connection: waits end early, the bytes
// in hand pass on, and Read and Write return ErrReplaced instead of
// holding, so the relay can carry on through the new wrapper.
var ErrReplaced = errors.New("fault: replaced on a live connection")

// Conn is the upstream side of a relayed connection with a fault applied:
// the bytes read from it go down to the device, the bytes written to it
// go up. Make it with Wrap.
type Conn struct {
	net.Conn
	f     Fault
	ctx   context.Context
	abort func(error)
}

// Wrap returns up with f applied, or up itself when f is nil, so that a
// connection no fault applies to stays a *net.TCPConn (zero-copy relay).
// ctx bounds every wait of the fault; abort ends the whole connection
// (both sides, with FIN for ErrClose and RST for ErrReset) and is called
// when the fault says so. A Starter fault is started here.
func Wrap(ctx context.Context, up net.Conn, f Fault, abort func(error)) net.Conn {
	if f == nil {
		return up
	}
	if s, ok := f.(Starter); ok {
		s.Start(ctx, abort)
	}
	return &Conn{Conn: up, f: f, ctx: ctx, abort: abort}
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

func (c *Conn) replaced() bool { return context.Cause(c.ctx) == ErrReplaced }

// fail turns a fault's error into the connection's: a close or reset
// ends both sides.
func (c *Conn) fail(err error) error {
	switch {
	case errors.Is(err, ErrClose), errors.Is(err, ErrReset):
		c.abort(err)
		return err
	case c.replaced():
		return ErrReplaced
	}
	return err
}

// Read reads what goes down to the device, through the fault.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return c.Conn.Read(b)
	}
	k, err := c.f.Limit(c.ctx, rules.DirDown, len(b))
	if err != nil {
		return 0, c.fail(err)
	}
	n, rerr := c.Conn.Read(b[:k])
	if n > 0 {
		if err := c.f.Pass(c.ctx, rules.DirDown, n); err != nil && !c.replaced() {
			return 0, err
		}
	}
	if rerr == io.EOF {
		if e, ok := c.f.(Ender); ok {
			e.End(c.ctx, rules.DirDown)
		}
	}
	return n, rerr
}

// Write writes what goes up from the device, through the fault.
func (c *Conn) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		k, err := c.f.Limit(c.ctx, rules.DirUp, len(b)-written)
		if err != nil {
			if c.replaced() {
				// The bytes in hand still go up; the new fault takes over
				// from the next chunk.
				n, err := c.Conn.Write(b[written:])
				return written + n, err
			}
			return written, c.fail(err)
		}
		if err := c.f.Pass(c.ctx, rules.DirUp, k); err != nil && !c.replaced() {
			return written, err
		}
		n, err := c.Conn.Write(b[written : written+k])
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// CloseWrite passes the end of what the device sends on to the upstream,
// after an Ender fault's wait.
func (c *Conn) CloseWrite() error {
	if e, ok := c.f.(Ender); ok {
		e.End(c.ctx, rules.DirUp)
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

var _ net.Conn = (*Conn)(nil)
