// Package dnsblock owns unicorn's DNS server (UDP on a lean loop of its
// own, TCP on miekg/dns): it applies the DNS decisions of rules/, forwards
// everything else to upstream resolvers through a cache, and remembers
// which names resolved to which addresses so that IP-level front ends can
// attribute an address to a name.
package dnsblock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// Config configures a Server. The zero value is invalid; fill the fields
// marked MANDATORY.
type Config struct {
	// Decider is asked once for every question, with rules.Flow{Client,
	// Layer: rules.LayerDNS, Host: qname as asked}. MANDATORY.
	Decider rules.Decider
	// Upstreams are the resolvers allowed questions are forwarded to, as
	// accepted by NormalizeUpstream; they are tried in order, each
	// failure passing the question to the next. MANDATORY.
	Upstreams []string
	// Timeout bounds the whole upstream exchange of one question, failover
	// included; when it passes the client gets SERVFAIL. OPTIONAL: zero
	// means DefaultTimeout.
	Timeout time.Duration
	// Clients is whom the server answers; everyone else gets REFUSED.
	// OPTIONAL: the zero (empty) set means rules.DefaultClients().
	Clients rules.ClientSet
	// CacheSize is how many upstream answers are cached. OPTIONAL: zero
	// means DefaultCacheSize; a negative value turns the cache off.
	CacheSize int
	// NamesSize is how many address-to-name entries Names keeps.
	// OPTIONAL: zero means DefaultNamesSize.
	NamesSize int
	// Logger receives decisions (repeats folded into summary lines, see
	// decisionLog), refused clients and errors, with the attribute
	// component=dns. OPTIONAL: nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of the cache. OPTIONAL: nil means time.Now.
	Now func() time.Time
}

// Server is unicorn's DNS front end. It implements dns.Handler, so it can
// also be mounted on a dns.Server of the caller's own.
type Server struct {
	decider    rules.Decider
	borrowHost bool // decider keeps no Flow.Host: see decide
	fwd        forwarder
	cache      *cache // nil when caching is off
	names      *Names
	clients    *admission
	refs       *refCache
	log        *slog.Logger
	dlog       *decisionLog
	pendingMax int  // maxPending, smaller in tests
	udpNoBatch bool // tests: see udpServer.noBatch
	now        func() time.Time
	stats      stats       // Stats
	onBlocked  blockedHook // hooks.go

	// ctx is cancelled when the server stops; every wait of a handler
	// (delay, upstream exchange) ends with it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	serving bool
	done    chan struct{} // closed when Serve returns
}

// ErrServerClosed is returned by Serve after Shutdown or a previous Serve.
var ErrServerClosed = errors.New("dnsblock: server closed")

// NewServer checks cfg and returns a server ready to Serve.
func NewServer(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Decider == nil {
		errs = append(errs, errors.New("dnsblock: config: Decider is mandatory"))
	}
	if len(cfg.Upstreams) == 0 {
		errs = append(errs, errors.New("dnsblock: config: Upstreams is mandatory (e.g. 192.0.2.1:53); SystemUpstreams reads them from resolv.conf"))
	}
	ups := make([]string, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		n, err := NormalizeUpstream(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("dnsblock: config: Upstreams: %w", err))
			continue
		}
		ups = append(ups, n)
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("dnsblock: config: Timeout %v is negative", cfg.Timeout))
	}
	if cfg.NamesSize < 0 {
		errs = append(errs, fmt.Errorf("dnsblock: config: NamesSize %d is negative", cfg.NamesSize))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	timeout := orDefault(cfg.Timeout, DefaultTimeout)
	clients := cfg.Clients
	if clients.Empty() {
		clients = rules.DefaultClients()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With(slog.String("component", "dns"))
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	_, borrow := cfg.Decider.(*rules.Engine)
	s := &Server{
		decider:    cfg.Decider,
		borrowHost: borrow,
		fwd:        forwarder{upstreams: ups, timeout: timeout},
		names:      newNames(orDefault(cfg.NamesSize, DefaultNamesSize)),
		clients:    newAdmission(clients, log),
		refs:       newRefCache(),
		log:        log,
		dlog:       newDecisionLog(log, now),
		pendingMax: maxPending,
		now:        now,
		done:       make(chan struct{}),
	}
	if cfg.CacheSize >= 0 {
		s.cache = &cache{c: newClock[cacheKey, *answer](orDefault(cfg.CacheSize, DefaultCacheSize))}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Names returns the server's memory of which name each address was
// resolved for.
func (s *Server) Names() *Names { return s.names }

// shutdownGrace bounds how long stopping waits for handlers to return; all
// their waits end with the server's context, so this is a safety net.
const shutdownGrace = 5 * time.Second

// Serve answers DNS on udp and tcp (either may be nil, not both); it is
// ServeAll with one listener of each.
func (s *Server) Serve(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	var udps []net.PacketConn
	var tcps []net.Listener
	if udp != nil {
		udps = append(udps, udp)
	}
	if tcp != nil {
		tcps = append(tcps, tcp)
	}
	return s.ServeAll(ctx, udps, tcps)
}

// ServeAll answers DNS on every listener given, with one cache and one
// Names memory for all of them, until ctx is done or Shutdown is called,
// then stops cleanly: it closes them all, ends pending delays and upstream
// exchanges, waits for handlers to return and returns nil. It returns an
// error if a listener fails, and ErrServerClosed if the server was already
// used or shut down. It may be called once; it owns the listeners from
// then on. A *net.UDPConn is served by dnsblock's own loop (udp.go); any
// other PacketConn by miekg/dns.
func (s *Server) ServeAll(ctx context.Context, udps []net.PacketConn, tcps []net.Listener) error {
	if len(udps) == 0 && len(tcps) == 0 {
		return errors.New("dnsblock: Serve needs a UDP or a TCP listener")
	}
	s.mu.Lock()
	if s.serving || s.ctx.Err() != nil {
		s.mu.Unlock()
		closeAll(udps, tcps)
		return ErrServerClosed
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.done)
	defer s.cancel()

	logged := make(chan struct{})
	go func() {
		defer close(logged)
		s.dlog.run(s.ctx)
	}()
	var runs []*run
	var attrs []any
	for _, udp := range udps {
		if uc, ok := udp.(*net.UDPConn); ok {
			runs = append(runs, s.startUDP(uc))
		} else {
			runs = append(runs, startRun(&dns.Server{PacketConn: udp, Handler: s, UDPSize: bufSize}))
		}
		attrs = append(attrs, slog.String("udp", udp.LocalAddr().String()))
	}
	for _, tcp := range tcps {
		runs = append(runs, startRun(&dns.Server{Listener: tcp, Handler: s}))
		attrs = append(attrs, slog.String("tcp", tcp.Addr().String()))
	}
	s.log.Info("dns serving", attrs...)

	// Wait for the end, or for the first loop that fails.
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.ctx.Done())},
	}
	for _, r := range runs {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(r.done)})
	}
	var failed error
	if i, v, _ := reflect.Select(cases); i >= 2 {
		runs[i-2].finished = true
		if !v.IsNil() {
			failed = v.Interface().(error)
		}
	}
	// Cancel first: handlers waiting on a delay or an upstream return at
	// once, so that the shutdowns below do not wait for them.
	s.cancel()
	var errs []error
	if failed != nil {
		errs = append(errs, fmt.Errorf("dnsblock: serve: %w", failed))
	}
	for _, r := range runs {
		if err := r.stop(r.finished); err != nil {
			errs = append(errs, fmt.Errorf("dnsblock: shutdown: %w", err))
		}
	}
	closeAll(udps, tcps) // the runs close them too; this covers a run that never started
	<-logged
	s.dlog.flush()
	s.log.Info("dns stopped")
	return errors.Join(errs...)
}

// run is one serving loop of Serve: a miekg/dns server, or the UDP loop.
type run struct {
	done     chan error // receives once, when the loop has ended
	finished bool       // done has been received
	// stop ends the loop, waits for it and its handlers, and returns the
	// loop's error unless finished.
	stop func(finished bool) error
}

// startRun starts a miekg/dns server.
func startRun(srv *dns.Server) *run {
	r := &run{done: make(chan error, 1)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { r.done <- srv.ActivateAndServe() }()
	r.stop = func(finished bool) error {
		if finished {
			return nil
		}
		select {
		case <-started:
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			if err := srv.ShutdownContext(ctx); err != nil {
				return err
			}
		case err := <-r.done: // it never started
			return err
		}
		return <-r.done
	}
	return r
}

func closeAll(udps []net.PacketConn, tcps []net.Listener) {
	for _, u := range udps {
		u.Close()
	}
	for _, t := range tcps {
		t.Close()
	}
}

// Shutdown stops the server: Serve returns, and Shutdown waits for it. It
// may be called before Serve (which then returns ErrServerClosed at once)
// and more than once.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	s.cancel()
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.done
	}
	return nil
}
