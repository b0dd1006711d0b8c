package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy/fault"
	"github.com/chaos-unicorn/unicorn/rules"
)

// tunnel is one relayed connection between a device and an upstream: the
// decision that let it through, the questions that were asked about it
// (so that a rule change can re-decide it, live.go), and the fault
// wrapper in force on its upstream side.
type tunnel struct {
	p      *Proxy
	client net.Conn
	up     net.Conn // the upstream connection itself, never wrapped
	flows  []rules.Flow
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once // abort

	mu       sync.Mutex
	decision rules.Decision
	gen      *generation
}

// generation is the upstream side as the relay uses it, with the fault in
// force; a live change replaces it (setDecision).
type generation struct {
	up     net.Conn // tunnel.up, or tunnel.up wrapped with a fault
	faulty bool
	cancel context.CancelCauseFunc // ends the fault's waits (fault.ErrReplaced)
}

// relayDecided relays bytes both ways between client and up until both
// directions end, applying decision d's byte fault (proxy/fault), and
// keeps the tunnel in the live registry while it lasts, so that a rule
// change re-decides it (live.go). flows are the questions whose answers
// made d, in the order asked (by name, then by address). It is the relay
// of every front end that tunnels: CONNECT, SOCKS, transparent. ctx ends
// the relay; the caller closes both connections afterwards. The tunnel
// and its bytes count in Stats.
//
// With no fault, each direction is a plain io.Copy between two
// *net.TCPConn, which Go turns into splice(2) on Linux. When one side
// finishes sending, the other side's write half is closed, so protocols
// that half-close keep working; when a copy fails, both sides close.
func (p *Proxy) relayDecided(ctx context.Context, client, up net.Conn, d rules.Decision, flows ...rules.Flow) {
	p.relay(ctx, client, up, d, false, flows...)
}

// relayBlind is relayDecided for a tunnel none of whose bytes unicorn has
// seen yet (a CONNECT, a SOCKS request): while a tls_reset rule is on, its
// ClientHello may decide it (checkSNI).
func (p *Proxy) relayBlind(ctx context.Context, client, up net.Conn, d rules.Decision, flows ...rules.Flow) {
	p.relay(ctx, client, up, d, true, flows...)
}

func (p *Proxy) relay(ctx context.Context, client, up net.Conn, d rules.Decision, blind bool, flows ...rules.Flow) {
	t := &tunnel{p: p, client: client, up: up, flows: flows}
	t.ctx, t.cancel = context.WithCancel(ctx)
	defer t.cancel()
	t.setDecision(d, true)
	p.stats.tunnels.Add(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.stats.bytesDown.Add(uint64(t.pipe(rules.DirDown)))
	}()
	// While a tls_reset rule is on, the ClientHello may decide the tunnel
	// (tlsreset.go); the server's side is relayed meanwhile.
	if blind && p.readsSNI(flows) && !t.checkSNI() {
		<-done
		return
	}
	p.live.add(t)
	defer p.live.remove(t)
	p.stats.bytesUp.Add(uint64(t.pipe(rules.DirUp)))
	<-done
}

// faultEnv is what the proxy lends the faults it applies.
func (p *Proxy) faultEnv() fault.Env { return fault.Env{Hold: p.blackhole} }

// current returns the generation in force.
func (t *tunnel) current() *generation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gen
}

// Decision returns the decision the tunnel is relayed under.
func (t *tunnel) Decision() rules.Decision {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.decision
}

// longAgo is a deadline in the past: it interrupts a blocked read at once.
var longAgo = time.Unix(1, 0)

// setDecision makes d the tunnel's decision and applies its byte fault
// (first: no copy runs yet). On a live tunnel it replaces the wrapper in
// force: the old fault's waits end, and a read deadline in the past
// interrupts both copies (even a splice), which then carry on through
// the new wrapper (pipe).
func (t *tunnel) setDecision(d rules.Decision, first bool) {
	f := fault.For(d, t.p.faultEnv())
	t.mu.Lock()
	old := t.gen
	t.decision = d
	if old != nil && f == nil && !old.faulty {
		t.mu.Unlock() // no fault before, none now: nothing to interrupt
		return
	}
	g := &generation{up: t.up, cancel: func(error) {}}
	if f != nil {
		g.faulty = true
		var ctx context.Context
		ctx, g.cancel = context.WithCancelCause(t.ctx)
		g.up = fault.Wrap(ctx, t.up, f, t.abort)
	}
	t.gen = g
	t.mu.Unlock()
	if first || old == nil {
		return
	}
	old.cancel(fault.ErrReplaced)
	t.client.SetReadDeadline(longAgo)
	t.up.SetReadDeadline(longAgo)
}

// The tunnel is a live connection of the registry (live.go).
func (t *tunnel) Flows() []rules.Flow      { return t.flows }
func (t *tunnel) Done() bool               { return t.ctx.Err() != nil }
func (t *tunnel) Cut()                     { t.abort(fault.ErrReset) }
func (t *tunnel) Degrade(d rules.Decision) { t.setDecision(d, false) }
func (t *tunnel) Client() string           { return t.client.RemoteAddr().String() }

var _ live = (*tunnel)(nil)

// abort ends the tunnel: both sides closed, with a RST when err is
// fault.ErrReset.
func (t *tunnel) abort(err error) {
	t.once.Do(func() {
		if errors.Is(err, fault.ErrReset) {
			resetOnClose(t.client)
			resetOnClose(t.up)
		}
		t.client.Close()
		t.up.Close()
		t.cancel()
	})
}

// resetOnClose makes closing c send a RST instead of a FIN. c may be a
// wrapper around the *net.TCPConn (a read-ahead buffer, a fault).
func resetOnClose(c net.Conn) {
	for range 4 { // wrappers nest a level or two deep
		switch x := c.(type) {
		case *net.TCPConn:
			x.SetLinger(0)
			return
		case *bufConn:
			c = x.Conn
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return
		}
	}
}

// pipe copies one direction until it ends and returns the bytes it
// copied. A read deadline set by setDecision interrupts it; it then clears
// the deadline and carries on through the generation now in force.
func (t *tunnel) pipe(dir rules.Direction) (copied int64) {
	for {
		g := t.current()
		dst, src, raw := t.client, g.up, t.up
		if dir == rules.DirUp {
			dst, src, raw = g.up, t.client, t.client
		}
		n, err := copyConn(dst, src)
		copied += n
		if t.ctx.Err() == nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fault.ErrReplaced)) {
			raw.SetReadDeadline(time.Time{})
			continue
		}
		if err == nil { // src ended cleanly: pass the end on, keep the other way open
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
				return copied
			}
		}
		t.abort(err)
		return copied
	}
}

// copyConn copies src to dst. Between two *net.TCPConn it is a plain
// io.Copy, which Go turns into splice(2) on Linux: the bytes do not pass
// through user space. Other connections (a fault wrapper, a custom
// Config.Dial) are copied through a buffer. It returns the bytes copied.
func copyConn(dst, src net.Conn) (int64, error) {
	dt, dok := dst.(*net.TCPConn)
	st, sok := src.(*net.TCPConn)
	if dok && sok {
		return io.Copy(dt, st)
	}
	return io.Copy(dst, src)
}

// hasByteFault reports whether d applies a fault to the bytes of a
// connection (fault.For would return one).
func hasByteFault(d rules.Decision) bool {
	if !d.Action.ByteFault() || d.Rule == nil {
		return false
	}
	return d.Action != rules.ActionDelay || d.Rule.Params.DelayOn != rules.DelayOnConnect
}

// faultKey is the request context key under which route leaves the
// decision whose byte fault the transport's connection must carry.
type faultKey struct{}

// faultConn wraps up, an upstream connection of the HTTP transport, with
// decision d's fault. Its waits end when the connection is closed or the
// proxy is; a cut closes (or resets) the upstream, and the device sees
// the response end there.
func (p *Proxy) faultConn(up net.Conn, d rules.Decision) net.Conn {
	ctx, cancel := context.WithCancel(p.ctx)
	c := &cancelConn{cancel: cancel}
	c.Conn = fault.Wrap(ctx, up, fault.For(d, p.faultEnv()), func(err error) {
		if errors.Is(err, fault.ErrReset) {
			resetOnClose(up)
		}
		c.Close()
	})
	return c
}

// cancelConn cancels its context when closed.
type cancelConn struct {
	net.Conn
	cancel context.CancelFunc
}

func (c *cancelConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}
