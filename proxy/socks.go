package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// SOCKSConfig configures the SOCKS5 front end of a Proxy. The zero value
// is valid; every field is OPTIONAL.
type SOCKSConfig struct {
	// Names attributes a destination address to the name a device
	// resolved to get it (dnsblock.Names.Lookup), so that rules by name
	// also apply to requests that give an address. If nil, requests by
	// address are decided by address only.
	Names func(netip.Addr) (name string, ok bool)
}

// SOCKS is the SOCKS5 front end (RFC 1928) of a Proxy, for desktop apps and
// programs that honour ALL_PROXY: CONNECT and UDP ASSOCIATE, decided by the
// same rules, clients and decide as the HTTP proxy's CONNECT. Only the "no
// authentication required" method is offered (the proxy serves
// Config.Clients, not the internet); a client offering only others gets
// "no acceptable methods" (0xFF) and the connection closes. BIND is
// answered "command not supported".
//
// Decisions map onto replies as follows (a Decision's meaning is the same
// at every front end):
//
//	allow, delay, spoof,  succeeded (0x00) and relayed, after a delay on
//	throttle, cut, ...    connect, to the decided address (the spoofed one
//	                      for spoof), with the decision's byte fault
//	                      (proxy/fault), in the live registry, exactly as a
//	                      CONNECT tunnel (relayBlind)
//	tls_reset             succeeded, then the ClientHello decides (tlsReset)
//	reject                connection not allowed by ruleset (0x02)
//	sinkhole              host unreachable (0x04): the name leads nowhere,
//	                      as the HTTP proxy's 502 says
//	blackhole             no reply at all: silence until BlackholeTimeout
//	a client not allowed, a loopback target for a remote client
//	                      connection not allowed by ruleset (0x02)
//	a name that does not resolve   host unreachable (0x04)
//	a dial refused / unreachable   connection refused (0x05) / network or
//	                      host unreachable (0x03, 0x04); timeout: TTL expired (0x06)
//
// UDP datagrams (socks_udp.go) are sent, to the spoofed address for spoof,
// or dropped for reject, blackhole and sinkhole; delay and byte faults are
// not applied to datagrams.
//
// http_error, rpc_error and tls_fail need the HTTP inside the connection,
// which SOCKS does not show: such connections are relayed untouched and a
// warning is logged once. Create a SOCKS with Proxy.SOCKS; it is stopped by
// the Proxy's Close.
type SOCKS struct {
	p     *Proxy
	names func(netip.Addr) (string, bool)

	noContent sync.Once // warns once that a rule needs HTTP content
	udp       udpStats
}

// SOCKS returns the SOCKS5 front end of p configured by cfg, ready to
// Serve. Its connections are closed, and waited for, by p.Close.
func (p *Proxy) SOCKS(cfg SOCKSConfig) *SOCKS {
	return &SOCKS{p: p, names: cfg.Names}
}

// Associations reports how many UDP associations are open now.
func (s *SOCKS) Associations() int { return int(s.udp.open.Load()) }

// DroppedDatagrams reports how many client datagrams the UDP relay has
// dropped: blocked by a rule, malformed, fragmented or not from the client.
func (s *SOCKS) DroppedDatagrams() int64 { return s.udp.dropped.Load() }

// socksHandshakeTimeout bounds the greeting and the request: a client that
// connects and says nothing does not hold a goroutine for long.
const socksHandshakeTimeout = readHeaderTimeout

// Serve accepts SOCKS5 connections on l until l is closed or the Proxy is
// closed. It returns nil after the Proxy's Close, and otherwise the error
// that stopped it. It closes l.
func (s *SOCKS) Serve(l net.Listener) error {
	p := s.p
	defer l.Close()
	stop := context.AfterFunc(p.ctx, func() { l.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient error: wait as
				// net/http does, then accept again.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("socks accept", "err", err, "retry_in", backoff)
				if p.wait(context.Background(), backoff) != nil {
					return nil
				}
				continue
			}
			return err
		}
		backoff = 0
		if !p.track(c) {
			c.Close()
			return nil
		}
		p.stats.conns.Add(1)
		go s.serveConn(c)
	}
}

// serveConn serves one SOCKS5 connection from the handshake to its end.
func (s *SOCKS) serveConn(c net.Conn) {
	p := s.p
	untracked := false
	defer func() {
		if !untracked {
			p.untrack(c)
		}
	}()
	client := addrOf(c.RemoteAddr())
	c.SetDeadline(time.Now().Add(socksHandshakeTimeout))
	noAuth, err := readGreeting(c)
	if err != nil {
		s.logBad(client, "greeting", err)
		return
	}
	if !noAuth {
		c.Write([]byte{socksVersion, socksNoAcceptable})
		s.logBad(client, "greeting", errors.New("the client offers no method unicorn accepts (only \"no authentication\")"))
		return
	}
	if _, err := c.Write([]byte{socksVersion, socksNoAuth}); err != nil {
		return
	}
	req, err := readRequest(c)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) && se.rep != 0 {
			s.reply(c, se.rep, netip.AddrPort{})
		}
		s.logBad(client, "request", err)
		return
	}
	// The handshake is over: from here on the decision's own waits (a
	// delay, a blackhole) and the relay set the pace.
	c.SetDeadline(time.Time{})
	if !p.clients.Contains(client) {
		if p.denied.first(client) {
			p.log.Warn("client not allowed", "client", client.String(), "allowed", p.clients.String(), "via", "socks")
		}
		s.reply(c, socksNotAllowed, netip.AddrPort{})
		return
	}
	switch req.cmd {
	case socksCmdConnect:
		untracked = s.connect(c, client, req)
	case socksCmdUDPAssociate:
		s.associate(c, client, req)
	}
}

// connect serves a CONNECT request; it reports whether it handed c to
// hold, which untracks it.
func (s *SOCKS) connect(c net.Conn, client netip.Addr, req socksRequest) (handedOff bool) {
	p := s.p
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	o, flows, err := s.decide(ctx, client, req)
	if err != nil {
		rep := socksHostUnreachable
		if errors.Is(err, errLocalTarget) {
			rep = socksNotAllowed
		} else if o.decision.Action == rules.ActionSpoof {
			rep = socksGeneralFailure
		}
		p.log.Info("proxy error", "client", client.String(), "target", net.JoinHostPort(req.target(), fmt.Sprint(req.port)), "via", "socks", "err", err)
		s.reply(c, rep, netip.AddrPort{})
		return false
	}
	switch o.decision.Action {
	case rules.ActionReject:
		s.reply(c, socksNotAllowed, netip.AddrPort{})
		return false
	case rules.ActionSinkhole:
		s.reply(c, socksHostUnreachable, netip.AddrPort{})
		return false
	case rules.ActionBlackhole:
		// Accept, then silence: no reply to the request.
		p.hold(c, o.decision, flows...)
		return true
	case rules.ActionTLSReset:
		// Grant the request, then let the ClientHello decide, as a
		// CONNECT does after its "200".
		if err := s.reply(c, socksSucceeded, netip.AddrPort{}); err != nil {
			return false
		}
		p.tlsReset(ctx, c, client, req.target(), o)
		return false
	case rules.ActionHTTPError, rules.ActionRPCError, rules.ActionTLSFail:
		s.noContent.Do(func() {
			p.log.Warn("a rule needs the HTTP inside the connection, which SOCKS does not show: relaying untouched (use the HTTP proxy for such hosts)",
				"action", o.decision.Action.String(), "rule", o.decision.String())
		})
	}
	var early []byte
	if delay := connectDelay(o); delay > 0 {
		// A delay can be long (a slow provider's 10 s): a client that gives
		// up meanwhile ends the wait, as a CONNECT's request context does.
		cw := watchClient(c, cancel)
		err := p.wait(ctx, delay)
		if early, _ = cw.stop(c); err != nil {
			return false
		}
	}
	up, err := p.dial(ctx, "tcp", o.target.String())
	if err != nil {
		p.log.Info("proxy error", "client", client.String(), "target", net.JoinHostPort(req.target(), fmt.Sprint(req.port)), "addr", o.target.String(), "via", "socks", "err", err)
		s.reply(c, dialReply(err), netip.AddrPort{})
		return false
	}
	if !p.track(up) {
		up.Close()
		return false
	}
	defer p.untrack(up)
	if err := s.reply(c, socksSucceeded, addrPortOf(up.LocalAddr())); err != nil {
		return false
	}
	if len(early) > 0 {
		if _, err := up.Write(early); err != nil {
			return false
		}
		p.stats.bytesUp.Add(uint64(len(early)))
	}
	// The byte fault of the decision, and the live registry: a rule
	// change re-asks flows and may cut or degrade the tunnel.
	p.relayBlind(ctx, c, up, o.decision, flows...)
	return false
}

// clientWatch reads from a client connection while the proxy waits before
// answering it, to notice the client closing.
type clientWatch struct {
	done chan struct{}
	buf  [4096]byte
	n    int
	err  error
}

// watchClient calls cancel when c's client closes (or its connection
// fails) before stop is called.
func watchClient(c net.Conn, cancel func()) *clientWatch {
	w := &clientWatch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.n, w.err = c.Read(w.buf[:])
		var ne net.Error
		if w.err != nil && !(errors.As(w.err, &ne) && ne.Timeout()) {
			cancel()
		}
	}()
	return w
}

// stop ends the watch and returns what the client sent meanwhile: a SOCKS
// client waits for the reply, but one that sends optimistic data must not
// lose it.
func (w *clientWatch) stop(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Unix(1, 0)) // unblocks the Read
	<-w.done
	c.SetReadDeadline(time.Time{})
	var ne net.Error
	if w.err != nil && !(errors.As(w.err, &ne) && ne.Timeout()) {
		return nil, w.err
	}
	return w.buf[:w.n], nil
}

// decide is the HTTP proxy's decide for a CONNECT (by name, resolved, then
// by address), plus one question for what SOCKS adds: a request by address
// that Config.Names attributes to a name is asked about again with that
// name, as decide asks about a name it resolved itself. flows are the
// questions asked, for the live registry to ask again.
func (s *SOCKS) decide(ctx context.Context, client netip.Addr, req socksRequest) (o outcome, flows []rules.Flow, err error) {
	p := s.p
	var named *rules.Flow
	if req.addr.IsValid() && s.names != nil {
		if name, ok := s.names(req.addr); ok {
			named = &rules.Flow{Client: client, Layer: rules.LayerTCP, Host: name, Addr: req.addr, Port: req.port, Proto: rules.ProtoTCP, Via: socksVia}
		}
	}
	o, err = p.decideVia(ctx, socksVia, client, req.target(), req.port, nil)
	if err == nil && !o.final() {
		switch {
		case req.host != "" && !o.target.IsValid():
			// decide did not resolve the name because the HTTP proxy
			// answers the flow itself (an http_error rule, with a CA);
			// SOCKS relays it.
			var addrs []netip.Addr
			if addrs, err = p.lookup(ctx, req.host); err == nil && len(addrs) == 0 {
				err = errors.New("no addresses")
			}
			if err != nil {
				return o, nil, fmt.Errorf("resolve %s: %w", req.host, err)
			}
			o.target = netip.AddrPortFrom(addrs[0].Unmap(), o.port)
			o, err = s.askAgain(o, client, rules.Flow{Client: client, Layer: rules.LayerTCP, Host: req.host, Addr: o.target.Addr(), Port: req.port, Proto: rules.ProtoTCP, Via: socksVia})
		case named != nil:
			o, err = s.askAgain(o, client, *named)
		}
	}
	flows = connectFlows(client, req.target(), o)
	if named != nil {
		flows = append(flows, *named)
	}
	return o, flows, err
}

// socksVia is rules.Flow.Via of the questions SOCKS asks about a CONNECT.
const socksVia = "socks"

// askAgain asks the rules about f, folds the answer into o and checks the
// target again.
func (s *SOCKS) askAgain(o outcome, client netip.Addr, f rules.Flow) (outcome, error) {
	if err := o.steer(s.p.ask(f)); err != nil {
		return o, err
	}
	return o, guardTarget(client, o)
}

// reply writes a reply with code rep and bound address bnd.
func (s *SOCKS) reply(c net.Conn, rep socksReply, bnd netip.AddrPort) error {
	var buf [4 + 16 + 2]byte
	_, err := c.Write(appendReply(buf[:0], rep, bnd))
	return err
}

// logBad logs, at debug level, a connection that did not get through the
// handshake: scanners and confused clients must not flood the log.
func (s *SOCKS) logBad(client netip.Addr, stage string, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("the client closed the connection during the %s", stage)
	}
	s.p.log.Debug("socks handshake failed", "client", client.String(), "stage", stage, "err", err)
}

// dialReply is the reply code for a failed upstream dial.
func dialReply(err error) socksReply {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return socksConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socksNetworkUnreachable
	case errors.As(err, &ne) && ne.Timeout():
		return socksTTLExpired
	}
	return socksHostUnreachable
}

// addrOf returns the address of a TCP or UDP net.Addr, unmapped, or the
// zero Addr.
func addrOf(a net.Addr) netip.Addr {
	return addrPortOf(a).Addr()
}

// addrPortOf returns the address and port of a TCP or UDP net.Addr, the
// address unmapped, or the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		if a == nil {
			return netip.AddrPort{}
		}
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
