package dnsblock

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/chaos-unicorn/unicorn/rules"
)

// maxRefusedClients bounds how many refused client addresses are
// remembered so that each is logged once.
const maxRefusedClients = 4096

// admission decides whom the server serves, and logs each refused client
// once rather than once per query.
type admission struct {
	set rules.ClientSet
	log *slog.Logger

	mu   sync.Mutex
	seen map[netip.Addr]struct{} // refused clients already logged
}

func newAdmission(set rules.ClientSet, log *slog.Logger) *admission {
	return &admission{set: set, log: log, seen: make(map[netip.Addr]struct{})}
}

// allow reports whether client may be served. An invalid address (an
// unknown transport) is refused.
func (a *admission) allow(client netip.Addr, network string) bool {
	if a.set.Contains(client) {
		return true
	}
	a.mu.Lock()
	_, logged := a.seen[client]
	if !logged {
		if len(a.seen) >= maxRefusedClients {
			// Forget all rather than track age: the set exists only to
			// keep the log readable, and a stranger logged twice per
			// 4096 others is fine.
			clear(a.seen)
		}
		a.seen[client] = struct{}{}
	}
	a.mu.Unlock()
	if !logged {
		a.log.Warn("dns client refused: not in the allowed clients; further queries from it are not logged",
			slog.String("client", client.String()),
			slog.String("net", network),
			slog.String("allowed", a.set.String()))
	}
	return false
}

// clientAddr returns the client's address from a miekg/dns remote address
// and whether it came over TCP. IPv4-mapped addresses become IPv4.
func clientAddr(a net.Addr) (addr netip.Addr, tcp bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		addr, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		addr, _ = netip.AddrFromSlice(a.IP)
		tcp = true
	}
	return addr.Unmap(), tcp
}
