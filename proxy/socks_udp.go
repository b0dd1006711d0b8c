package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// UDP ASSOCIATE (RFC 1928 section 7). Each association has two UDP
// sockets and lives exactly as long as the TCP connection that asked for
// it: one socket faces the client (its address is the reply's BND), one
// faces the destinations. Every client datagram is decided by its
// destination at rules.LayerUDP; blocked ones are dropped, and logged once
// per destination and rule, not per packet. Replies come back only from
// destinations the client sent to, with the SOCKS UDP header in front.

// Bounds on what one association remembers.
const (
	// maxUDPPeers bounds the destinations whose replies are relayed back;
	// datagrams to further destinations are dropped.
	maxUDPPeers = 1024
	// maxUDPLogged bounds the destinations remembered as already logged;
	// past it the memory starts afresh.
	maxUDPLogged = 256
	// maxUDPNames bounds the resolved names an association caches.
	maxUDPNames = 64
	// udpNameTTL is how long an association reuses a resolved name.
	udpNameTTL = 30 * time.Second
	// udpLookupTimeout bounds the resolution of a name in a datagram.
	udpLookupTimeout = 5 * time.Second
	// maxDatagram is the largest UDP payload.
	maxDatagram = 65535
)

// udpStats counts what the UDP relay did, for tests.
type udpStats struct {
	open    atomic.Int64 // associations open now
	dropped atomic.Int64 // client datagrams dropped: blocked, malformed, fragments, strangers
}

// association is one UDP ASSOCIATE.
type association struct {
	s      *SOCKS
	c      net.Conn // the TCP connection the association lives on
	client netip.Addr
	// wantPort is the client's UDP source port as the request announced
	// it; 0 means the first datagram from the client's address sets it.
	wantPort uint16
	cpc, upc *net.UDPConn // facing the client, facing the destinations

	mu      sync.Mutex
	from    netip.AddrPort                    // the client's UDP address, once known
	peers   map[netip.AddrPort]netip.AddrPort // destination dialled -> source shown to the client
	logged  map[udpLogKey]struct{}
	names   map[string]udpName
	logFull bool // the peers bound was logged
}

// udpLogKey is what "once" means for the log of a datagram's decision.
type udpLogKey struct {
	host     string
	addr     netip.AddrPort
	action   rules.Action
	scenario string // the rule's, with index: stable across a reload that
	index    int    // compiles new *Rule values for the same rules
}

// udpName is a cached resolution.
type udpName struct {
	addr netip.Addr
	at   time.Time
}

// associate serves a UDP ASSOCIATE request on c until c closes.
func (s *SOCKS) associate(c net.Conn, client netip.Addr, req socksRequest) {
	p := s.p
	local := addrPortOf(c.LocalAddr()).Addr()
	cpc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		p.log.Warn("socks udp relay", "client", client.String(), "err", err)
		s.reply(c, socksGeneralFailure, netip.AddrPort{})
		return
	}
	upc, err := net.ListenUDP("udp", nil)
	if err != nil {
		cpc.Close()
		p.log.Warn("socks udp relay", "client", client.String(), "err", err)
		s.reply(c, socksGeneralFailure, netip.AddrPort{})
		return
	}
	// The sockets end with c, which the Proxy's Close closes.
	defer cpc.Close()
	defer upc.Close()
	a := &association{
		s: s, c: c, client: client, wantPort: req.port, cpc: cpc, upc: upc,
		peers: make(map[netip.AddrPort]netip.AddrPort), logged: make(map[udpLogKey]struct{}), names: make(map[string]udpName),
	}
	if err := s.reply(c, socksSucceeded, addrPortOf(cpc.LocalAddr())); err != nil {
		return
	}
	s.udp.open.Add(1)
	defer s.udp.open.Add(-1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.fromClient()
	}()
	go func() {
		defer wg.Done()
		a.fromPeers()
	}()
	// The association ends when the client closes the TCP connection (or
	// the Proxy closes it); nothing more may come on it.
	io.Copy(io.Discard, c)
	cpc.Close()
	upc.Close()
	wg.Wait()
}

// end stops the association from one of its relay goroutines.
func (a *association) end() {
	a.c.Close()
	a.cpc.Close()
	a.upc.Close()
}

// fromClient relays the client's datagrams that the rules let through.
func (a *association) fromClient() {
	buf := make([]byte, maxDatagram)
	for {
		n, src, err := a.cpc.ReadFromUDPAddrPort(buf)
		if err != nil {
			a.end()
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if !a.fromTheClient(src) {
			a.s.udp.dropped.Add(1)
			continue
		}
		dst, payload, err := parseDatagram(buf[:n])
		if err != nil {
			a.s.udp.dropped.Add(1)
			a.s.p.log.Debug("socks udp datagram dropped", "client", a.client.String(), "err", err)
			continue
		}
		to, shown, ok := a.decide(dst)
		if !ok || !a.addPeer(to, shown) {
			a.s.udp.dropped.Add(1)
			continue
		}
		a.upc.WriteToUDPAddrPort(payload, to)
	}
}

// fromTheClient reports whether a datagram from src is the client's: from
// its address and, once known, its port.
func (a *association) fromTheClient(src netip.AddrPort) bool {
	if src.Addr() != a.client {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.from.IsValid() {
		return src == a.from
	}
	if a.wantPort != 0 && src.Port() != a.wantPort {
		return false
	}
	a.from = src
	return true
}

// addPeer remembers that replies from to go back to the client as coming
// from shown. It reports false when the association has too many peers.
func (a *association) addPeer(to, shown netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.peers[to]; !ok && len(a.peers) >= maxUDPPeers {
		if !a.logFull {
			a.logFull = true
			a.s.p.log.Warn("socks udp association has too many destinations; dropping datagrams to new ones",
				"client", a.client.String(), "max", maxUDPPeers)
		}
		return false
	}
	a.peers[to] = shown
	return true
}

// fromPeers relays replies from the destinations back to the client.
func (a *association) fromPeers() {
	buf := make([]byte, maxDatagramHeader+maxDatagram)
	for {
		n, src, err := a.upc.ReadFromUDPAddrPort(buf[maxDatagramHeader:])
		if err != nil {
			a.end()
			return
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		a.mu.Lock()
		shown, ok := a.peers[src]
		to := a.from
		a.mu.Unlock()
		if !ok || !to.IsValid() {
			continue
		}
		start := putDatagramHeader(buf, shown)
		a.cpc.WriteToUDPAddrPort(buf[start:maxDatagramHeader+n], to)
	}
}

// decide asks the rules about a datagram to dst, as the HTTP proxy's
// decide asks about a CONNECT: a name first, then the address it resolves
// to; an address with the name Config.Names knows for it. It returns where
// to send the datagram and the source its replies show, or false to drop it.
func (a *association) decide(dst socksRequest) (to, shown netip.AddrPort, ok bool) {
	s := a.s
	f := rules.Flow{Client: a.client, Layer: rules.LayerUDP, Port: dst.port, Proto: rules.ProtoUDP}
	o := outcome{host: dst.target(), port: dst.port}
	ask := func() bool {
		d := s.p.decider.Decide(f)
		a.logOnce(f, d)
		return o.steer(d) == nil
	}
	if dst.host != "" {
		f.Host = dst.host
		if !ask() {
			return to, shown, false
		}
		if !o.final() {
			addr, err := a.resolve(dst.host)
			if err != nil {
				s.p.log.Debug("socks udp datagram dropped", "client", a.client.String(), "target", dst.host, "err", err)
				return to, shown, false
			}
			f.Addr = addr
			o.target = netip.AddrPortFrom(addr, dst.port)
			if !ask() {
				return to, shown, false
			}
		}
	} else {
		f.Addr = dst.addr
		o.target = netip.AddrPortFrom(dst.addr, dst.port)
		if s.names != nil {
			f.Host, _ = s.names(dst.addr)
		}
		if !ask() {
			return to, shown, false
		}
	}
	if o.decision.Action.Blocking() || !o.target.IsValid() {
		return to, shown, false
	}
	if guardTarget(a.client, o) != nil {
		return to, shown, false
	}
	shown = o.target
	if dst.addr.IsValid() {
		shown = netip.AddrPortFrom(dst.addr, dst.port) // a spoofed reply shows the address asked for
	}
	return o.target, shown, true
}

// logOnce logs a datagram's decision the first time this association sees
// it for the destination and rule, as Proxy.ask logs a connection's.
func (a *association) logOnce(f rules.Flow, d rules.Decision) {
	if d.Rule == nil {
		return
	}
	k := udpLogKey{host: f.Host, addr: netip.AddrPortFrom(f.Addr, f.Port), action: d.Action, scenario: d.Rule.Scenario, index: d.Rule.Index}
	a.mu.Lock()
	if _, ok := a.logged[k]; ok {
		a.mu.Unlock()
		return
	}
	if len(a.logged) >= maxUDPLogged {
		clear(a.logged)
	}
	a.logged[k] = struct{}{}
	a.mu.Unlock()
	attrs := []slog.Attr{
		slog.String("client", f.Client.String()),
		slog.String("layer", f.Layer.String()),
		slog.String("target", flowTarget(f)),
	}
	if f.Host != "" && f.Addr.IsValid() {
		attrs = append(attrs, slog.String("addr", f.Addr.String()))
	}
	attrs = append(attrs, slog.String("via", "socks"))
	attrs = append(attrs, d.LogAttrs()...)
	a.s.p.log.LogAttrs(context.Background(), slog.LevelInfo, "proxy decision", attrs...)
}

// resolve returns the first address of name, from the association's cache
// or from Config.Lookup.
func (a *association) resolve(name string) (netip.Addr, error) {
	now := time.Now()
	a.mu.Lock()
	if n, ok := a.names[name]; ok && now.Sub(n.at) < udpNameTTL {
		a.mu.Unlock()
		return n.addr, nil
	}
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(a.s.p.ctx, udpLookupTimeout)
	defer cancel()
	addrs, err := a.s.p.lookup(ctx, name)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, &net.DNSError{Err: "no addresses", Name: name, IsNotFound: true}
	}
	addr := addrs[0].Unmap()
	a.mu.Lock()
	if len(a.names) >= maxUDPNames {
		clear(a.names)
	}
	a.names[name] = udpName{addr: addr, at: now}
	a.mu.Unlock()
	return addr, nil
}
