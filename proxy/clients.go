package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// maxDenied bounds how many refused addresses are remembered for logging
// once each; past it, further new addresses are refused without a log line
// so that a scan cannot grow memory or flood the log.
const maxDenied = 4096

// deniedLog remembers which client addresses were already logged as not
// allowed.
type deniedLog struct {
	mu   sync.Mutex
	seen map[netip.Addr]struct{}
}

// first reports whether a is being refused for the first time and should
// be logged.
func (d *deniedLog) first(a netip.Addr) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.seen[a]; ok || len(d.seen) >= maxDenied {
		return false
	}
	if d.seen == nil {
		d.seen = make(map[netip.Addr]struct{})
	}
	d.seen[a] = struct{}{}
	return true
}

// allowClient reports whether the request's client may use the proxy, and
// answers 403 when it may not.
func (p *Proxy) allowClient(w http.ResponseWriter, r *http.Request) bool {
	a := clientAddr(r)
	if p.clients.Contains(a) {
		return true
	}
	if p.denied.first(a) {
		p.log.Warn("client not allowed", "client", a.String(), "allowed", p.clients.String())
	}
	w.Header().Set("Connection", "close")
	http.Error(w, "not allowed", http.StatusForbidden)
	return false
}

// clientAddr returns the device's address, or the zero Addr when the
// server reports none.
func clientAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
