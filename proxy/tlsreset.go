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
	"time"

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
// the hello and stops it there: nothing is ever written to c.
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
		return nil, "", err
	}
	return rec.buf.Bytes(), sni, nil
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
