package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// dotPort is DNS over TLS (RFC 7858).
const dotPort = 853

// acceptBackoff bounds the pause after a failed Accept (out of file
// descriptors, say) before the next try.
const acceptBackoff = time.Second

// ServeTransparent accepts, on l, TCP connections that the firewall
// redirected to it (router mode: `unicorn router up` installs the rules),
// and for each one learns where it was going (Config.OrigDst), peeks at
// its first bytes for a name without terminating TLS (ClientHello SNI,
// HTTP Host; bounded by Config.PeekTimeout and maxPeek), falls back to the
// name the device resolved the address from (Config.Names), asks the rules
// once with name, address and port (address and port rules that block
// decide before any peek), and applies the decision:
//
//   - reject: a TLS alert after a ClientHello, a 403 page after an HTTP
//     request head, otherwise a reset; sinkhole: a reset;
//   - tls_reset: a reset (or a handshake_failure alert) after the
//     ClientHello;
//   - blackhole: silence until the client gives up or BlackholeTimeout;
//   - spoof: relayed to the given address instead; delay: relayed late;
//   - everything else: relayed to the original destination, the peeked
//     bytes first, then zero-copy unless a byte fault applies
//     (relayDecided), and re-decided in the live registry when the rules
//     change.
//
// It returns nil after Close, and otherwise the error that stopped it.
func (p *Proxy) ServeTransparent(l net.Listener) error {
	stop := context.AfterFunc(p.ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			p.log.Warn("transparent accept failed", "err", err)
			if p.wait(p.ctx, acceptBackoff) != nil {
				return nil
			}
			continue
		}
		if !p.track(c) {
			c.Close()
			return nil
		}
		go p.serveTransparent(c)
	}
}

// serveTransparent handles one redirected connection; see ServeTransparent.
func (p *Proxy) serveTransparent(c net.Conn) {
	defer p.untrack(c)
	client := addrOf(c.RemoteAddr())
	if !p.clients.Contains(client) {
		if p.denied.first(client) {
			p.log.Warn("client not allowed", "client", client.String(), "allowed", p.clients.String())
		}
		reset(c)
		return
	}
	dst, err := p.origDst(c)
	if err != nil {
		p.log.Info("transparent connection refused", "client", client.String(), "err", err)
		reset(c)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if local, _ := netip.ParseAddrPort(c.LocalAddr().String()); dst.Addr() == local.Addr().Unmap() && dst.Port() == local.Port() {
		// Connected to the listener itself, not redirected: relaying
		// would connect it to itself.
		p.log.Info("transparent connection refused", "client", client.String(), "err", "not redirected: connected to the transparent listener directly")
		reset(c)
		return
	}

	f := rules.Flow{Client: client, Layer: rules.LayerTCP, Addr: dst.Addr(), Port: dst.Port(), Proto: rules.ProtoTCP}
	// An address or port rule that blocks decides at once: no peek.
	pd, _ := p.decider.(peekDecider)
	if pd != nil && pd.Peek(f).Action.Blocking() {
		p.apply(c, f, peeked{}, nil, p.ask(f))
		return
	}
	var remembered string
	if p.names != nil {
		remembered, _ = p.names(dst.Addr())
	}
	// Client-first protocols (TLS, HTTP, devp2p) send at once; a client
	// that has sent nothing after firstByteWait may be waiting for the
	// server (SSH, SMTP): dial now, and decide when either side speaks,
	// unless the name the address was resolved from is blocked.
	start := time.Now()
	pk, done := peek(c, nil, start.Add(min(firstByteWait, p.peekFor)))
	var early *earlyDial
	if !done && len(pk.data) == 0 {
		byName := f
		byName.Host = remembered
		if pd == nil || !pd.Peek(byName).Action.Blocking() {
			early = p.dialEarly(c, dst)
		}
	}
	if !done {
		pc := c
		if early != nil {
			pc = early.peekConn()
		}
		pk, _ = peek(pc, pk.data, start.Add(p.peekFor))
	}
	switch pk.kind {
	case peekTLS:
		f.Layer = rules.LayerTLS
	case peekHTTP:
		f.Layer = rules.LayerHTTP
	}
	f.Host = pk.host
	if _, err := netip.ParseAddr(f.Host); err == nil {
		f.Host = "" // an address as SNI or Host says nothing the destination does not
	}
	if f.Host == "" {
		f.Host = remembered
	}
	p.apply(c, f, pk, early, p.ask(f))
}

// peekDecider is a Decider that can decide without side effects (*rules.Engine).
type peekDecider interface {
	Peek(rules.Flow) rules.Decision
}

// firstByteWait is how long a transparent client may stay silent before
// unicorn dials its destination, in case the server speaks first.
const firstByteWait = 50 * time.Millisecond

// apply carries out decision d for the transparent connection c to f,
// whose first bytes pk holds; early is the upstream dialled before the
// decision, or nil.
func (p *Proxy) apply(c net.Conn, f rules.Flow, pk peeked, early *earlyDial, d rules.Decision) {
	client, dst := f.Client, netip.AddrPortFrom(f.Addr, f.Port)
	p.noteEncryptedDNS(f, d)
	o := outcome{host: f.Host, port: dst.Port(), target: dst}
	err := o.steer(d)
	if err == nil {
		err = guardTarget(client, o)
	}
	delay := connectDelay(o) // a delay of the bytes is the relay's fault
	if early != nil && (o.decision.Action.Blocking() || o.decision.Action == rules.ActionTLSReset || err != nil || o.target != dst || delay > 0) {
		early.finish(false) // the decision says otherwise: never relayed
		early = nil
	}
	if err != nil {
		p.log.Info("proxy error", "client", client.String(), "target", flowTarget(f), "err", err)
		reset(c)
		return
	}
	switch o.decision.Action {
	case rules.ActionReject:
		switch pk.kind {
		case peekTLS:
			tlsAlert(c)
		case peekHTTP:
			newBlockPage(403, hostOr(f), o.decision).response(nil).Write(c)
		default:
			reset(c)
		}
		return
	case rules.ActionSinkhole:
		reset(c)
		return
	case rules.ActionTLSReset:
		// A censor's reset after the ClientHello (the decision was made on
		// its SNI), or a handshake_failure alert with close: alert; a
		// connection that is not TLS is closed, as on a tunnel.
		if ps := o.decision.Params(); pk.kind == peekTLS && ps != nil && ps.Close == rules.CloseAlert {
			c.Write(handshakeFailureAlert)
			return
		}
		reset(c)
		return
	case rules.ActionBlackhole:
		p.holding.Add(1)
		defer p.holding.Add(-1)
		c.SetReadDeadline(time.Now().Add(p.blackhole))
		io.Copy(io.Discard, c)
		return
	}

	var up net.Conn
	var first []byte // what the server said before the decision
	if early != nil {
		up, first, err = early.finish(true)
	} else {
		ctx, cancel := context.WithTimeout(p.ctx, DefaultDialTimeout+delay)
		defer cancel()
		if err := p.wait(ctx, delay); err != nil {
			return
		}
		up, err = p.dial(ctx, "tcp", o.target.String())
	}
	if err != nil {
		p.log.Info("proxy error", "client", client.String(), "target", flowTarget(f), "addr", o.target.String(), "err", err)
		reset(c)
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	if len(first) > 0 {
		if _, err := c.Write(first); err != nil {
			return
		}
		p.stats.bytesDown.Add(uint64(len(first)))
	}
	if len(pk.data) > 0 {
		if _, err := up.Write(pk.data); err != nil {
			return
		}
		p.stats.bytesUp.Add(uint64(len(pk.data)))
	}
	// The live registry re-decides the flow when the rules change (cut,
	// degrade or keep, by the rule's on_existing), and the relay applies
	// the decision's byte fault (throttle, cut, stall, ...).
	p.relayDecided(p.ctx, c, up, o.decision, f)
}

// noteEncryptedDNS logs a device that resolves names past unicorn: DNS over
// TLS (port 853) or a known DNS-over-HTTPS name (Config.EncryptedDNS).
func (p *Proxy) noteEncryptedDNS(f rules.Flow, d rules.Decision) {
	proto := ""
	switch {
	case f.Port == dotPort:
		proto = "dns-over-tls"
	case f.Host != "" && p.encDNS != nil && p.encDNS(f.Host):
		proto = "dns-over-https"
	default:
		return
	}
	attrs := []slog.Attr{
		slog.String("client", f.Client.String()),
		slog.String("protocol", proto),
		slog.String("target", flowTarget(f)),
		slog.String("action", d.Action.String()),
	}
	if d.Rule != nil {
		attrs = append(attrs, slog.String("rule", d.Rule.Ref()))
	}
	p.log.LogAttrs(context.Background(), slog.LevelWarn, "encrypted DNS past unicorn's resolver", attrs...)
}

// hostOr is the flow's name, or its address.
func hostOr(f rules.Flow) string {
	if f.Host != "" {
		return f.Host
	}
	return f.Addr.String()
}

// reset closes c with a TCP reset instead of a FIN, as a refused
// connection looks on the wire.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// The engine decides without side effects, which the transparent listener
// uses to decide address rules before peeking.
var _ peekDecider = (*rules.Engine)(nil)
