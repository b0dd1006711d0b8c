package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy/fault"
	"github.com/chaos-unicorn/unicorn/rules"
)

// serveTLSReset answers a CONNECT to host that a tls_reset rule decided o
// the way a censor does: the tunnel is accepted ("200"), the ClientHello
// read, and the flow decided again on its SNI at the TLS layer; if
// tls_reset still decides it, the client gets a RST (or a
// handshake_failure alert, mode: alert) instead of a ServerHello. A
// ClientHello naming another host is decided on that name and, if let
// through, relayed with the hello in front.
func (p *Proxy) serveTLSReset(ctx context.Context, w http.ResponseWriter, client netip.Addr, host string, o outcome) {
	conn, rw, ok := p.hijack(w)
	if !ok {
		return
	}
	defer p.untrack(conn)
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	p.tlsReset(ctx, &bufConn{Conn: conn, r: rw.Reader}, client, host, o)
}

// tlsReset carries out a tls_reset decision o on a tunnel the front end
// has already accepted (a CONNECT answered 200, a SOCKS request granted):
// conn is the device's side, with any bytes the front end read ahead in
// front, host and o.port what the device asked for. It reads the
// ClientHello, decides again on its SNI at the TLS layer and resets (or
// alerts), or relays to o.target (resolving host if need be) with the
// hello in front. The caller closes conn afterwards.
func (p *Proxy) tlsReset(ctx context.Context, conn net.Conn, client netip.Addr, host string, o outcome) {
	hello, sni, err := readClientHello(conn)
	if err != nil {
		p.log.Debug("tls_reset: no ClientHello", "client", client.String(), "target", host, "err", err)
		return
	}
	d := o.decision
	if sni != "" {
		d = p.ask(rules.Flow{Client: client, Layer: rules.LayerTLS, Host: sni, Port: o.port, Proto: rules.ProtoTCP})
	}
	switch {
	case d.Action == rules.ActionTLSReset:
		if ps := d.Params(); ps != nil && ps.Close == rules.CloseAlert {
			conn.Write(handshakeFailureAlert)
			return
		}
		resetOnClose(conn)
		return
	case d.Action.Blocking():
		resetOnClose(conn)
		return
	}
	// The SNI names a host no tls_reset rule holds: relay as a tunnel to
	// where the CONNECT asked.
	if !o.target.IsValid() {
		addrs, err := p.lookup(ctx, host)
		if err != nil || len(addrs) == 0 {
			return
		}
		o.target = netip.AddrPortFrom(addrs[0].Unmap(), o.port)
		if guardTarget(client, o) != nil {
			return
		}
	}
	up, err := p.dial(ctx, "tcp", o.target.String())
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	if _, err := up.Write(hello); err != nil {
		return
	}
	p.stats.bytesUp.Add(uint64(len(hello)))
	// The tunnel's fate now hangs on the SNI (and the address), not on
	// the CONNECT's name, which a tls_reset rule holds.
	p.relayDecided(ctx, conn, up, d,
		rules.Flow{Client: client, Layer: rules.LayerTLS, Host: sni, Port: o.port, Proto: rules.ProtoTCP},
		rules.Flow{Client: client, Layer: rules.LayerTCP, Addr: o.target.Addr(), Port: o.port, Proto: rules.ProtoTCP})
}

// handshakeFailureAlert is a TLS alert record (TLS 1.2 version, length 2):
// fatal (2), handshake_failure (40).
var handshakeFailureAlert = []byte{21, 3, 3, 0, 2, 2, 40}

// errHelloRead stops the TLS server once it has the ClientHello.
var errHelloRead = errors.New("proxy: ClientHello read")

// readClientHello reads the client's ClientHello from c and returns the
// bytes read (to replay upstream) and the SNI. It lets crypto/tls parse
// the hello and stops it there: nothing is ever written to c. When c
// carries no ClientHello, the error says why and the bytes are whatever
// was read before it showed.
func readClientHello(c net.Conn) ([]byte, string, error) {
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetReadDeadline(time.Time{})
	rec := &recordingConn{Conn: c}
	var sni string
	got := false
	err := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, got = h.ServerName, true
			return nil, errHelloRead
		},
	}).Handshake()
	if !got {
		return rec.buf.Bytes(), "", err
	}
	return rec.buf.Bytes(), sni, nil
}

// sniDecider is a Decider that can tell whether some rule may decide
// tls_reset by a ClientHello's SNI (*rules.Engine is one).
type sniDecider interface {
	DecidesBySNI() bool
}

// readsSNI reports whether a tunnel let through after the questions flows
// must show its ClientHello first: a tls_reset rule is on, and no
// question was asked at the TLS layer yet (tlsReset has read the hello).
func (p *Proxy) readsSNI(flows []rules.Flow) bool {
	sd, ok := p.decider.(sniDecider)
	if !ok || len(flows) == 0 || !sd.DecidesBySNI() {
		return false
	}
	for _, f := range flows {
		if f.Layer == rules.LayerTLS {
			return false
		}
	}
	return true
}

// checkSNI reads what the device sends first on a tunnel let through
// blind (a CONNECT or SOCKS request by address, or by a name no tls_reset
// rule holds) and, when it is a ClientHello naming a host the tunnel was
// not asked about, decides again on that SNI at the TLS layer: the
// censor's move is by the name in the hello, not by the address. A
// tls_reset decision resets the tunnel (or alerts) and checkSNI reports
// false; otherwise the bytes read go upstream, the SNI's question joins
// the tunnel's flows (so that a rule change re-decides it by that name),
// and the relay carries on. The server's side is relayed meanwhile, so a
// protocol where the server speaks first is not held up; a device silent
// for longer than handshakeTimeout is relayed as it is.
func (t *tunnel) checkSNI() bool {
	hello, sni, _ := readClientHello(t.client)
	if sni != "" && !askedAbout(t.flows, sni) {
		f := rules.Flow{Client: t.flows[0].Client, Layer: rules.LayerTLS, Host: sni, Port: t.flows[0].Port, Proto: rules.ProtoTCP}
		d := t.p.ask(f)
		if d.Action == rules.ActionTLSReset {
			if ps := d.Params(); ps != nil && ps.Close == rules.CloseAlert {
				t.client.Write(handshakeFailureAlert)
				t.abort(nil)
				return false
			}
			t.abort(fault.ErrReset)
			return false
		}
		t.flows = append(t.flows, f)
	}
	if len(hello) > 0 {
		if _, err := t.current().up.Write(hello); err != nil {
			t.abort(err)
			return false
		}
		t.p.stats.bytesUp.Add(uint64(len(hello)))
	}
	return true
}

// askedAbout reports whether one of flows asked about the name host.
func askedAbout(flows []rules.Flow, host string) bool {
	host = strings.TrimSuffix(host, ".")
	for _, f := range flows {
		if strings.EqualFold(strings.TrimSuffix(f.Host, "."), host) {
			return true
		}
	}
	return false
}

// recordingConn keeps what is read from it and swallows what is written.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.buf.Write(b[:n])
	return n, err
}

func (c *recordingConn) Write(b []byte) (int, error) { return len(b), nil }
