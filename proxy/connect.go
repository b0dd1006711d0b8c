package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// serveConnect answers a CONNECT request. An allowed CONNECT is a blind
// tunnel to the decided address; only a rule that needs the decrypted
// traffic (http_error, rpc_error, tls_fail, or one matching methods, paths
// or request headers) makes it intercept TLS (intercept.go), and only when
// Config.CA is set.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	host, port, err := splitTarget(r.URL.Host, 0)
	if err != nil {
		w.Header().Set("Connection", "close")
		http.Error(w, "unicorn: "+err.Error(), http.StatusBadRequest)
		return
	}
	client := clientAddr(r)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()

	o, err := p.decide(ctx, client, host, port, nil)
	if err != nil {
		p.log.Info("proxy error", "client", client.String(), "target", r.URL.Host, "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "unicorn: "+err.Error(), errStatus(err))
		return
	}

	switch o.decision.Action {
	case rules.ActionReject:
		newBlockPage(http.StatusForbidden, host, o.decision).write(w)
		return
	case rules.ActionSinkhole:
		newBlockPage(http.StatusBadGateway, host, o.decision).write(w)
		return
	case rules.ActionBlackhole:
		// Accept, then silence: no "200 Connection established".
		if conn, _, ok := p.hijack(w); ok {
			p.hold(conn, o.decision, connectFlows(client, host, o)...)
		}
		return
	case rules.ActionTLSReset:
		p.serveTLSReset(ctx, w, client, host, o)
		return
	case rules.ActionHTTPError, rules.ActionRPCError, rules.ActionTLSFail:
		if p.ca != nil {
			p.intercept(w, host, port, o.decision)
			return
		}
		p.warnNoCA(o.decision)
	default:
		// allow, spoof and delay tunnel to o.target after o.delay (decide
		// already chose the target and summed the latency). throttle and
		// cut also tunnel untouched here; later issues map them onto this
		// front end. A rule for this host that matches methods, paths or
		// headers needs the requests: intercept, and each request inside
		// is decided on its own (its delay, spoof or fault applies there).
		if p.needsContent(client, host, o) {
			if p.ca != nil {
				p.intercept(w, host, port, o.decision)
				return
			}
			p.warnNoCA(o.decision)
		}
	}

	if err := p.wait(ctx, connectDelay(o)); err != nil {
		return // the client or the proxy went away; nothing left to answer
	}
	up, err := p.dial(ctx, "tcp", o.target.String())
	if err != nil {
		p.log.Info("proxy error", "client", client.String(), "target", r.URL.Host, "addr", o.target.String(), "err", err)
		w.Header().Set("Connection", "close")
		http.Error(w, "unicorn: cannot reach "+r.URL.Host+": "+err.Error(), http.StatusBadGateway)
		return
	}
	conn, rw, ok := p.hijack(w)
	if !ok {
		up.Close()
		return
	}
	if !p.track(up) {
		up.Close()
		p.untrack(conn)
		return
	}
	defer p.untrack(up)
	defer p.untrack(conn)
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent right behind the CONNECT head (a TLS
	// ClientHello, say) are already in the server's read buffer. When
	// the relay reads the ClientHello first (readsSNI) they stay in front
	// of the connection for it.
	flows := connectFlows(client, host, o)
	var from net.Conn = conn
	if n := rw.Reader.Buffered(); n > 0 && p.readsSNI(flows) {
		from = &bufConn{Conn: conn, r: rw.Reader}
	} else if n > 0 {
		early, _ := rw.Reader.Peek(n)
		if _, err := up.Write(early); err != nil {
			return
		}
		p.stats.bytesUp.Add(uint64(n))
	}
	p.relayBlind(ctx, from, up, o.decision, flows...)
}

// connectDelay is how long a CONNECT or a plain request waits before it
// dials: the summed delay of decide, except for a delay on the first byte
// or on every chunk, which the connection's fault applies to the bytes
// instead.
func connectDelay(o outcome) time.Duration {
	if ps := o.decision.Params(); o.decision.Action == rules.ActionDelay && ps != nil && ps.DelayOn != rules.DelayOnConnect {
		return 0
	}
	return o.delay
}

// connectFlows are the questions decide asked about a CONNECT to host
// from client, decided o: by name (or literal address) at the HTTP
// layer, then by the address dialled at the TCP layer. The live registry
// asks them again when the rules change.
func connectFlows(client netip.Addr, host string, o outcome) []rules.Flow {
	f := rules.Flow{Client: client, Layer: rules.LayerHTTP, Port: o.port, Proto: rules.ProtoTCP}
	if a, err := netip.ParseAddr(host); err == nil {
		f.Addr = a.Unmap()
		return []rules.Flow{f}
	}
	f.Host = host
	flows := []rules.Flow{f}
	if o.target.IsValid() {
		f.Layer, f.Addr = rules.LayerTCP, o.target.Addr()
		flows = append(flows, f)
	}
	return flows
}

// hijack takes the client connection from the HTTP server and tracks it.
// Its reader holds bytes the server read past the request head. ok is
// false when the connection cannot be taken or the proxy is closed; the
// connection is then already closed.
func (p *Proxy) hijack(w http.ResponseWriter) (conn net.Conn, rw *bufio.ReadWriter, ok bool) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Debug("cannot hijack", "err", err)
		return nil, nil, false
	}
	// The server may have set deadlines for reading the request head.
	conn.SetDeadline(time.Time{})
	if !p.track(conn) {
		conn.Close()
		return nil, nil, false
	}
	return conn, rw, true
}

// hold keeps a blackholed client connection open in silence until the
// client closes it, BlackholeTimeout passes or the proxy is closed, then
// closes it. Whatever the client sends is read and dropped. While it
// holds, the connection is in the live registry under d, the decision
// that the questions flows got: a rule change that leaves it to no
// blocking rule closes it, so that the device retries at once (see
// redecide).
func (p *Proxy) hold(conn net.Conn, d rules.Decision, flows ...rules.Flow) {
	defer p.untrack(conn)
	p.holding.Add(1)
	defer p.holding.Add(-1)
	defer p.watch(conn, d, flows...)()
	conn.SetReadDeadline(time.Now().Add(p.blackhole))
	io.Copy(io.Discard, conn)
}
