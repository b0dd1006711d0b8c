package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// outcome is what the rules concluded about one request, after at most two
// questions: one by name (or literal address) at the HTTP layer and, for
// a name let through, one by the address it resolved to at the TCP layer.
type outcome struct {
	// decision is the one the front end applies: the first that blocks or
	// spoofs, else the last that matched a rule, else a plain allow.
	decision rules.Decision
	host     string         // the name or literal address the device asked for
	port     uint16         // the port it asked for
	target   netip.AddrPort // where to dial; valid unless decision blocks
	delay    time.Duration  // added latency before dialling or forwarding
}

// decide asks the rules about a request from client for host:port and, if
// they let it through, resolves the name with Config.Resolver and asks again
// about the address chosen, so that address and port rules apply to names
// that resolve there. A literal address is asked about once, directly. The
// error is set only when no decision blocked and the name cannot be
// resolved, or a rule cannot be carried out. req is the HTTP request
// asked about, whose method, path and headers rules may match; nil for a
// CONNECT.
func (p *Proxy) decide(ctx context.Context, client netip.Addr, host string, port uint16, req *http.Request) (o outcome, err error) {
	return p.decideVia(ctx, "", client, host, port, req)
}

// decideVia is decide for the front end via (rules.Flow.Via): "" for the
// HTTP proxy itself.
func (p *Proxy) decideVia(ctx context.Context, via string, client netip.Addr, host string, port uint16, req *http.Request) (o outcome, err error) {
	o = outcome{host: host, port: port}
	defer func() {
		if err == nil {
			err = guardTarget(client, o)
		}
	}()
	f := rules.Flow{Client: client, Layer: rules.LayerHTTP, Port: port, Proto: rules.ProtoTCP, Via: via}
	if req != nil {
		f.Method, f.Path, f.Header = req.Method, req.URL.Path, req.Header.Get
		f.RPCMethods = rpcMethodsOf(req)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		f.Addr = a.Unmap()
		o.target = netip.AddrPortFrom(f.Addr, port)
		return o, o.steer(p.ask(f))
	}
	f.Host = host
	if err := o.steer(p.ask(f)); err != nil || o.final() || p.answered(&o) {
		return o, err
	}
	addrs, err := p.lookup(ctx, host)
	if err != nil {
		return o, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return o, fmt.Errorf("resolve %s: no addresses", host)
	}
	// Lookups put the preferred address first (Go's resolver by RFC 6724,
	// dnsblock's IPv4 first).
	a := addrs[0].Unmap()
	o.target = netip.AddrPortFrom(a, port)
	f.Layer, f.Addr = rules.LayerTCP, a
	f.Method, f.Path, f.Header, f.RPCMethods = "", "", nil, nil // a connection has no request
	return o, o.steer(p.ask(f))
}

// contentDecider is a Decider that can tell whether a connection's fate
// may depend on the HTTP requests inside it (*rules.Engine is one).
type contentDecider interface {
	NeedsContent(rules.Flow) bool
}

// needsContent reports whether a CONNECT to host:port, decided o, must be
// intercepted so that each request inside it is decided by its method,
// path and headers: some rule for the host or its address needs them.
func (p *Proxy) needsContent(client netip.Addr, host string, o outcome) bool {
	nc, ok := p.decider.(contentDecider)
	if !ok {
		return false
	}
	f := rules.Flow{Client: client, Layer: rules.LayerHTTP, Port: o.port, Proto: rules.ProtoTCP}
	if a, err := netip.ParseAddr(host); err == nil {
		f.Addr = a.Unmap()
	} else {
		f.Host = host
		if o.target.IsValid() {
			f.Addr = o.target.Addr()
		}
	}
	return nc.NeedsContent(f)
}

// errLocalTarget refuses a device a destination on unicorn's own machine.
var errLocalTarget = errors.New("the destination is this machine's own loopback or unspecified address, which only clients on this machine may reach")

// guardTarget keeps devices off the unicorn host's loopback services (the
// control API among them) and off tunnels chained through the proxy
// itself: a target that is a loopback or unspecified address, given
// literally, resolved or spoofed, is for clients on this machine only.
func guardTarget(client netip.Addr, o outcome) error {
	if o.decision.Action.Blocking() || !o.target.IsValid() {
		return nil
	}
	a := o.target.Addr()
	if (a.IsLoopback() || a.IsUnspecified()) && !client.Unmap().IsLoopback() {
		return errLocalTarget
	}
	return nil
}

// errStatus is the HTTP status that answers a decide error.
func errStatus(err error) int {
	if errors.Is(err, errLocalTarget) {
		return http.StatusForbidden
	}
	return http.StatusBadGateway
}

// final reports whether no further question may change the outcome: the
// flow is blocked, or a spoof rule already chose where it goes.
func (o *outcome) final() bool {
	return o.decision.Action.Blocking() || o.decision.Action == rules.ActionSpoof
}

// answered reports whether unicorn answers the flow itself, with no
// upstream: an http_error rule, when the proxy can intercept (without a
// CA a CONNECT for it is tunnelled, so the name must resolve). Then the
// name is not even looked up, and the injected error shows even where it
// would not resolve.
func (p *Proxy) answered(o *outcome) bool {
	return o.decision.Action == rules.ActionHTTPError && p.ca != nil
}

// steer folds one decision into o: where the flow goes and how late. What
// the device then sees is up to each protocol's own switch.
func (o *outcome) steer(d rules.Decision) error {
	if d.Rule != nil && d.Rule == o.decision.Rule {
		return nil // the question by address matched the rule the name did: apply it once
	}
	switch d.Action {
	case rules.ActionReject, rules.ActionBlackhole, rules.ActionSinkhole:
		o.decision = d
	case rules.ActionSpoof:
		o.decision = d
		ps := d.Params()
		if ps == nil || len(ps.Addrs) == 0 {
			return errors.New("spoof rule names no address")
		}
		o.target = netip.AddrPortFrom(ps.Addrs[0].Unmap(), o.port)
	case rules.ActionDelay:
		o.decision = d
		if ps := d.Params(); ps != nil {
			o.delay += ps.Delay()
		}
	default:
		// An allow rule that makes an exception, or an action this front
		// end relays untouched: remember it unless a fault came first.
		if d.Matched() && !o.decision.Matched() {
			o.decision = d
		}
	}
	return nil
}

// ask asks the Decider about f and logs every decision that is not a
// plain allow.
func (p *Proxy) ask(f rules.Flow) rules.Decision {
	d := p.decider.Decide(f)
	if d.Rule == nil {
		return d
	}
	attrs := []slog.Attr{
		slog.String("client", f.Client.String()),
		slog.String("layer", f.Layer.String()),
		slog.String("target", flowTarget(f)),
	}
	if f.Via != "" {
		attrs = append(attrs, slog.String("via", f.Via))
	}
	if f.Host != "" && f.Addr.IsValid() {
		attrs = append(attrs, slog.String("addr", f.Addr.String()))
	}
	if f.Method != "" {
		attrs = append(attrs, slog.String("method", f.Method), slog.String("path", f.Path))
	}
	attrs = append(attrs, d.LogAttrs()...)
	p.log.LogAttrs(context.Background(), slog.LevelInfo, "proxy decision", attrs...)
	return d
}

// flowTarget is "host:port", or "addr:port" when the flow has no name.
func flowTarget(f rules.Flow) string {
	h := f.Host
	if h == "" {
		h = f.Addr.String()
	}
	return net.JoinHostPort(h, strconv.Itoa(int(f.Port)))
}

// targetKey is the context key under which onRequest leaves the address
// the transport must dial.
type targetKey struct{}

// dialDecided is the transport's dialer: it dials only the address that
// onRequest decided on, never the name the transport passes in, so that
// no lookup bypasses the rules or goes through unicorn's own DNS.
func (p *Proxy) dialDecided(ctx context.Context, network, addr string) (net.Conn, error) {
	t, ok := ctx.Value(targetKey{}).(netip.AddrPort)
	if !ok || !t.IsValid() {
		return nil, fmt.Errorf("proxy: no decision for dial to %s", addr)
	}
	c, err := p.dial(ctx, network, t.String())
	if d, ok := ctx.Value(faultKey{}).(rules.Decision); ok && err == nil {
		c = p.faultConn(c, d)
	}
	return c, err
}

// wait sleeps for d, and returns early with an error when ctx is done or
// the proxy is closed.
func (p *Proxy) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		return net.ErrClosed
	}
}

// splitTarget splits "host:port" (brackets allowed around IPv6) into a
// host name or address and a nonzero port; a missing port is defPort, or
// an error when defPort is 0.
func splitTarget(hostport string, defPort uint16) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		if defPort == 0 {
			return "", 0, fmt.Errorf("target %q: %w", hostport, err)
		}
		host, ps = hostport, ""
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	if host == "" {
		return "", 0, fmt.Errorf("target %q has no host", hostport)
	}
	port := defPort
	if ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("target %q: bad port", hostport)
		}
		port = uint16(n)
	}
	if port == 0 {
		return "", 0, fmt.Errorf("target %q has no port", hostport)
	}
	return host, port, nil
}
