package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// TLS interception happens only for a CONNECT whose rule needs it
// (http_error, rpc_error, tls_fail, or any rule for the host that matches
// methods, paths or request headers: rules.Engine.NeedsContent) and only
// with Config.CA set. The
// proxy answers 200, terminates TLS with a leaf from the CA and serves
// HTTP/1.1 or HTTP/2 on the decrypted connection, sending every request through
// goproxy as an https proxy request: onRequest decides each one again and
// answers or forwards it, to the real upstream over TLS verified against
// Config.UpstreamRoots. Every other CONNECT stays a blind tunnel.
//
// ALPN offers h2 and http/1.1: a client that picks h2 is served HTTP/2
// (each stream decided like an HTTP/1.1 request); the upstream side stays
// HTTP/1.1. WebSocket upgrades (HTTP/1.1 only; RFC 8441 over h2 is not
// supported) are relayed by websocket.go over verified TLS.

// handshakeTimeout bounds the TLS handshake with an intercepted client.
const handshakeTimeout = 10 * time.Second

// wrongName is the name a tls_fail wrong_name certificate is issued for.
const wrongName = "wrong.invalid"

// warnNoCA logs, once, that a rule needs interception but no CA is set.
func (p *Proxy) warnNoCA(d rules.Decision) {
	p.noCA.Do(func() {
		p.log.Warn("a rule needs TLS interception but no CA is configured: tunnelling untouched (run `unicorn ca init`)",
			"action", d.Action.String(), "rule", d.String())
	})
}

// intercept serves a CONNECT to host:port decided d by terminating TLS.
func (p *Proxy) intercept(w http.ResponseWriter, host string, port uint16, d rules.Decision) {
	conn, rw, ok := p.hijack(w)
	if !ok {
		return
	}
	defer p.untrack(conn)
	// A rule change that blocks the host cuts the connection (live.go).
	defer p.watch(conn, d, hostFlow(conn, host, port))()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes behind the CONNECT head (the ClientHello) are in rw.Reader.
	c := &bufConn{Conn: conn, r: rw.Reader}
	cfg := &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	leafFor := func(hello *tls.ClientHelloInfo) string {
		if hello.ServerName != "" {
			return hello.ServerName
		}
		return host
	}
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return p.ca.Leaf(leafFor(hello))
	}
	failing := d.Action == rules.ActionTLSFail
	if failing {
		kind := rules.TLSUntrusted
		if ps := d.Params(); ps != nil {
			kind = ps.TLSFailure
		}
		switch kind {
		case rules.TLSAlert:
			sendHandshakeFailure(c)
			return
		case rules.TLSSelfSigned:
			cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return selfSigned(leafFor(hello))
			}
		case rules.TLSWrongName:
			cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return p.ca.Leaf(wrongName)
			}
		case rules.TLSExpired:
			cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return p.ca.Expired(leafFor(hello))
			}
		default:
			cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return p.untrusted.Leaf(leafFor(hello))
			}
		}
	}
	tc := tls.Server(c, cfg)
	ctx, cancel := context.WithTimeout(p.ctx, handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	target := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if err != nil {
		if failing {
			p.log.Info("tls_fail: client refused the certificate", "target", target, "err", err.Error())
		} else {
			p.log.Info("intercept: TLS handshake failed (does the device trust unicorn's CA?)", "target", target, "err", err.Error())
		}
		return
	}
	if failing {
		p.log.Warn("tls_fail: client ACCEPTED a bad certificate; relaying its requests", "target", target, "rule", d.String())
	}
	p.serveDecrypted(tc, target)
}

// serveDecrypted serves HTTP/1.1 or HTTP/2 on the decrypted connection tc until it
// closes, sending each request through goproxy as an https proxy request
// for target.
func (p *Proxy) serveDecrypted(tc *tls.Conn, target string) {
	l := &oneConnListener{c: tc, done: make(chan struct{})}
	// A hijacked connection (a WebSocket over HTTP/1.1) stops Serve while
	// its handler still relays: wait for it before the caller closes tc.
	var handlers sync.WaitGroup
	defer handlers.Wait()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.URL.Scheme = "https"
			r.URL.Host = target
			if isWebSocket(r) {
				// Counted before the hijack that ends Serve.
				handlers.Add(1)
				defer handlers.Done()
				p.serveWebSocket(w, r)
				return
			}
			p.gp.ServeHTTP(w, r)
		}),
		Protocols:         protos,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          p.srv.ErrorLog,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				l.Close()
			}
		},
	}
	srv.Serve(l)
}

// oneConnListener hands out one connection, then blocks Accept until Close.
type oneConnListener struct {
	mu   sync.Mutex
	c    net.Conn // nil once accepted
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
}

// bufConn reads from r (which holds bytes already read from Conn) first.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// maxHelloRecord bounds the ClientHello record read before an alert.
const maxHelloRecord = 1<<14 + 2048

// sendHandshakeFailure reads the client's first TLS record (the
// ClientHello) and answers with a fatal handshake_failure alert.
func sendHandshakeFailure(c net.Conn) {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	if n := int(binary.BigEndian.Uint16(hdr[3:])); hdr[0] == 22 && n <= maxHelloRecord {
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			return
		}
	}
	// alert record, TLS 1.2 version, length 2: fatal (2), handshake_failure (40)
	c.Write([]byte{21, 3, 3, 0, 2, 2, 40})
}

// selfSigned returns a fresh self-signed certificate for host, valid now.
func selfSigned(host string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"unicorn tls_fail self_signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if a, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = []net.IP{a.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
