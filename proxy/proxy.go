// Package proxy owns unicorn's HTTP proxy front end: one listener that
// serves plain HTTP proxy requests, CONNECT tunnels and the landing page,
// and turns each rules.Decision into what the device sees on the wire.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/elazarl/goproxy"
)

// Config configures a Proxy. The zero value is invalid: Decider is
// MANDATORY; every other field is OPTIONAL and documented by its default.
type Config struct {
	// Decider answers what happens to each request. MANDATORY.
	Decider rules.Decider
	// Resolver looks up the names of requests the rules let through, so
	// that address and port rules can be asked about the address chosen.
	// Point it at the upstream resolvers, never at unicorn's own DNS
	// front end. If nil, net.DefaultResolver is used.
	Resolver *net.Resolver
	// Lookup, if set, is used instead of Resolver: cmd passes the DNS
	// front end's upstream lookup, which shares its failover and cache.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects to an already-resolved "ip:port". If nil, a
	// net.Dialer with a 10 s timeout is used. CONNECT tunnels are
	// zero-copy only when it returns a *net.TCPConn.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Clients is who may use the proxy. Others get 403 "not allowed" and
	// are logged once per address. If empty, rules.DefaultClients() is used.
	Clients rules.ClientSet
	// BlackholeTimeout is how long a blackholed client is held in silence
	// before its connection is closed. If zero, 60 s is used.
	BlackholeTimeout time.Duration
	// Logger receives decisions and errors, with component "proxy". If
	// nil, slog.Default() is used.
	Logger *slog.Logger
	// Info says what the landing page shows the device at client (the
	// scenarios that apply to it). It is called once per page view and
	// must be safe for concurrent use. If nil, the page shows only how to
	// reach the proxy the device connected to.
	Info func(client netip.Addr) PageInfo
	// CA issues the certificates for TLS interception, which happens only
	// for CONNECT requests whose rule needs it (http_error, rpc_error,
	// tls_fail). If nil, interception is off: such requests are tunnelled
	// untouched and a warning is logged once.
	CA *certs.CA
	// UpstreamRoots verifies the upstreams of intercepted connections. If
	// nil, the system roots are used.
	UpstreamRoots *x509.CertPool
	// OnChange subscribes fn to rule changes; the proxy then decides its
	// open tunnels again and applies each rule's on_existing (live.go).
	// fn must be called after the new rules are in force. If nil, the
	// Decider's own OnChange method is used when it has one
	// (*rules.Engine does); else open tunnels are never re-decided.
	OnChange func(fn func()) (remove func())

	// The transparent listener (ServeTransparent, router mode):
	//
	// Names attributes a destination address to the name a device resolved
	// it from (cmd passes dnsblock.Names.Lookup), so that a connection
	// without SNI or Host is still decided by name. If nil, such
	// connections are decided by address and port alone.
	Names func(netip.Addr) (string, bool)
	// OrigDst returns where a redirected connection was going. If nil,
	// the firewall's record is read (SO_ORIGINAL_DST; Linux only).
	OrigDst func(net.Conn) (netip.AddrPort, error)
	// PeekTimeout bounds the wait for a transparent connection's first
	// bytes (TLS ClientHello, HTTP request head); a client that waits for
	// the server to speak first is decided by address after it. If zero,
	// DefaultPeekTimeout is used.
	PeekTimeout time.Duration
	// EncryptedDNS reports whether a name is a known DNS-over-HTTPS or
	// DNS-over-TLS endpoint, so that a device resolving past unicorn is
	// logged as such. If nil, only port 853 (DNS over TLS) is recognised.
	EncryptedDNS func(host string) bool
}

// Defaults applied by New for zero Config fields.
const (
	// DefaultDialTimeout bounds each upstream dial when Config.Dial is nil.
	DefaultDialTimeout = 10 * time.Second
	// DefaultBlackholeTimeout is the hold when Config.BlackholeTimeout is zero.
	DefaultBlackholeTimeout = 60 * time.Second
	// DefaultPeekTimeout is the peek bound when Config.PeekTimeout is zero.
	DefaultPeekTimeout = time.Second
)

// maxIdlePerHost replaces goproxy's transport default of 2 idle upstream
// connections per host, which halves keep-alive throughput (PERFORMANCE.md).
const maxIdlePerHost = 256

// Proxy is the HTTP proxy front end. Create it with New, run it with
// Serve and stop it with Close. It is safe for concurrent use.
type Proxy struct {
	decider   rules.Decider
	lookup    func(ctx context.Context, host string) ([]netip.Addr, error)
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	clients   rules.ClientSet
	blackhole time.Duration
	log       *slog.Logger
	info      func(netip.Addr) PageInfo

	// ca issues interception leaves; nil disables interception.
	// untrusted is a throwaway CA made by New that no device trusts, for
	// tls_fail untrusted. roots verifies intercepted upstreams.
	ca        *certs.CA
	untrusted *certs.CA
	roots     *x509.CertPool
	noCA      sync.Once // warns once that a rule needs a CA
	gp        *goproxy.ProxyHttpServer

	srv *http.Server
	tr  *http.Transport

	// fb serves the connections the lean path hands back (lean.go), with
	// the same handler as srv; fbq is its listener.
	fb        *http.Server
	fbq       *connQueue
	fbStarted bool // under mu

	// ctx is cancelled by Close; every wait the proxy makes watches it.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // hijacked connections: tunnels and blackholes
	wg     sync.WaitGroup        // one count per entry in conns

	denied  deniedLog
	holding atomic.Int64 // blackholed clients being held now
	stats   stats        // Stats

	// live holds the open tunnels, re-decided on every rule change by
	// watchLoop (live.go); unwatch ends the subscription, watchDone is
	// closed when watchLoop returns. Both nil without a change source.
	live      liveSet
	unwatch   func()
	watchDone chan struct{}
	// The transparent listener's (transparent.go).
	names   func(netip.Addr) (string, bool)
	origDst func(net.Conn) (netip.AddrPort, error)
	peekFor time.Duration
	encDNS  func(string) bool
}

// New returns a Proxy for cfg, ready to Serve. It fails only when cfg is
// invalid.
func New(cfg Config) (*Proxy, error) {
	if cfg.Decider == nil {
		return nil, errors.New("proxy: Config.Decider is required")
	}
	if cfg.BlackholeTimeout < 0 {
		return nil, errors.New("proxy: Config.BlackholeTimeout is negative")
	}
	p := &Proxy{
		decider:   cfg.Decider,
		lookup:    cfg.Lookup,
		dial:      cfg.Dial,
		clients:   cfg.Clients,
		blackhole: cfg.BlackholeTimeout,
		log:       cfg.Logger,
		info:      cfg.Info,
		ca:        cfg.CA,
		roots:     cfg.UpstreamRoots,
		conns:     make(map[net.Conn]struct{}),
		names:     cfg.Names,
		origDst:   cfg.OrigDst,
		peekFor:   cfg.PeekTimeout,
		encDNS:    cfg.EncryptedDNS,
	}
	if p.origDst == nil {
		p.origDst = origDst
	}
	if p.peekFor <= 0 {
		p.peekFor = DefaultPeekTimeout
	}
	if p.ca != nil {
		u, err := certs.New(certs.Options{Host: "untrusted", CacheSize: 64})
		if err != nil {
			return nil, fmt.Errorf("proxy: throwaway CA: %w", err)
		}
		p.untrusted = u
	}
	if p.lookup == nil {
		r := cfg.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		p.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return r.LookupNetIP(ctx, "ip", host)
		}
	}
	if p.dial == nil {
		p.dial = (&net.Dialer{Timeout: DefaultDialTimeout}).DialContext
	}
	// ClientSet hides its prefixes; an empty set prints as "".
	if p.clients.Empty() {
		p.clients = rules.DefaultClients()
	}
	if p.blackhole == 0 {
		p.blackhole = DefaultBlackholeTimeout
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("component", "proxy")
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.watchChanges(cfg.OnChange)
	h := p.chain()
	p.srv = &http.Server{
		Handler: h,
		// A device that opens a connection and never finishes its request
		// head must not hold a goroutine for ever.
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ConnState:         p.stats.connState,
	}
	p.fbq = &connQueue{ch: make(chan net.Conn), done: make(chan struct{}), addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	p.fb = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          p.srv.ErrorLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, replayKey{}, c)
		},
		// A connection handed back while Close runs is closed here if
		// Close no longer sees it.
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew && p.ctx.Err() != nil {
				c.Close()
			}
		},
	}
	return p, nil
}

// chain builds the request path once. The stages, in order:
//
//  1. Client check: first, so that a device outside Config.Clients learns
//     nothing, not even the landing page.
//  2. CONNECT: handled here, before goproxy, because goproxy's own CONNECT
//     path can switch to MITM with its built-in CA, cannot hold a client
//     in silence, and its hijack hook drops bytes the client sent right
//     behind the CONNECT head.
//  3. WebSocket upgrades (websocket.go), decided like any request, then
//     relayed frame by frame, rpc_error applied to JSON-RPC frames. Then
//     the lean path (lean.go) for plain HTTP/1.1 requests the rules let
//     through: it takes the connection over and forwards the rest of the
//     keep-alive session itself, handing back what it does not forward.
//  4. goproxy, for everything else. It sends non-proxy requests (a path
//     without scheme and host) to the landing page, and proxy requests
//     through one request hook that asks the rules (onRequest), then its
//     transport, whose dialer only dials the address the hook decided on,
//     then one response hook that turns upstream errors into a 502.
func (p *Proxy) chain() http.Handler {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = goproxyLogger{p.log}
	gp.NonproxyHandler = http.HandlerFunc(p.servePage)
	// Pass bodies through as they are: goproxy would otherwise drop
	// Accept-Encoding and the transport would then add and undo gzip.
	gp.KeepAcceptEncoding = true
	p.tr = &http.Transport{
		Proxy:               nil, // never chain to the environment's proxy
		DialContext:         p.dialDecided,
		MaxIdleConns:        4 * maxIdlePerHost,
		MaxIdleConnsPerHost: maxIdlePerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
		// https requests (from intercepted connections) go out HTTP/1.1,
		// verified against Config.UpstreamRoots or the system roots.
		TLSClientConfig: &tls.Config{RootCAs: p.roots},
	}
	gp.Tr = p.tr
	p.gp = gp
	// CONNECT never reaches goproxy (stage 2); if it ever did, it must not
	// dial anything on its own.
	gp.ConnectDial = func(string, string) (net.Conn, error) {
		return nil, errors.New("proxy: CONNECT is handled outside goproxy")
	}
	gp.OnRequest().DoFunc(p.onRequest)
	gp.OnResponse().DoFunc(p.onResponse)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.allowClient(w, r) {
			return
		}
		if r.Method == http.MethodConnect {
			p.serveConnect(w, r)
			return
		}
		if rc, ok := r.Context().Value(replayKey{}).(*replayConn); ok {
			if d := rc.take(); d != nil {
				// Decided by the lean path, which handed it back.
				r = r.WithContext(context.WithValue(r.Context(), decidedKey{}, d))
				if isWebSocket(r) && r.URL.IsAbs() {
					p.serveWebSocket(w, r)
					return
				}
				gp.ServeHTTP(w, r)
				return
			}
		}
		if isWebSocket(r) && r.URL.IsAbs() {
			p.serveWebSocket(w, r)
			return
		}
		r, done := p.serveLean(w, r)
		if !done {
			gp.ServeHTTP(w, r)
		}
	})
}

// Serve accepts connections on l until l is closed or Close is called. It
// returns nil after Close, and otherwise the error that stopped it.
func (p *Proxy) Serve(l net.Listener) error {
	err := p.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every Serve, closes the listeners, the client connections
// (including CONNECT tunnels, blackholed clients and lean sessions) and
// the idle upstream connections, and waits until the tunnels, held
// connections and lean sessions are gone.
// Requests still being forwarded end when their client connection closes.
func (p *Proxy) Close() error {
	p.cancel()
	if p.unwatch != nil {
		p.unwatch()
		<-p.watchDone
	}
	err := p.srv.Close()
	p.fb.Close()
	p.fbq.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.tr.CloseIdleConnections()
	p.wg.Wait()
	return err
}

// track registers a hijacked connection so that Close can close it. It
// returns false when the proxy is already closed; the caller then closes c
// itself. Every successful track must be paired with one untrack.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

// untrack closes c and forgets it.
func (p *Proxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// goproxyLogger sends goproxy's own messages to slog at debug level.
type goproxyLogger struct{ log *slog.Logger }

func (g goproxyLogger) Printf(format string, v ...any) {
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("goproxy", "text", fmt.Sprintf(format, v...))
	}
}
