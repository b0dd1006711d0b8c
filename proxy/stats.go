package proxy

import (
	"net"
	"net/http"
	"sync/atomic"
)

// stats are the proxy's counters: atomic, no locks or allocation on the
// connection path.
type stats struct {
	conns     atomic.Uint64 // client connections accepted
	open      atomic.Int64  // of those, open in the HTTP server now
	tunnels   atomic.Uint64 // CONNECT tunnels relayed
	bytesUp   atomic.Uint64 // tunnel bytes client -> upstream
	bytesDown atomic.Uint64 // tunnel bytes upstream -> client
}

// connState is the HTTP server's ConnState hook.
func (s *stats) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.conns.Add(1)
		s.open.Add(1)
	case http.StateHijacked, http.StateClosed:
		s.open.Add(-1)
	}
}

// Stats is a snapshot of a proxy's counters since it started.
type Stats struct {
	// Connections counts the client connections accepted.
	Connections uint64
	// Open is the number of client connections open now: those the HTTP
	// server holds plus tunnels, held blackholes and lean sessions.
	Open int64
	// Tunnels counts the CONNECT tunnels relayed blind (not intercepted),
	// and BytesUp and BytesDown the bytes they carried each way, counted
	// when a tunnel ends.
	Tunnels            uint64
	BytesUp, BytesDown uint64
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	tracked := len(p.conns)
	p.mu.Unlock()
	return Stats{
		Connections: p.stats.conns.Load(),
		Open:        p.stats.open.Load() + int64(tracked),
		Tunnels:     p.stats.tunnels.Load(),
		BytesUp:     p.stats.bytesUp.Load(),
		BytesDown:   p.stats.bytesDown.Load(),
	}
}
