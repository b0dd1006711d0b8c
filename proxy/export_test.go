package proxy

import "net/netip"

// Held reports how many blackholed clients the proxy is holding now.
func (p *Proxy) Held() int { return int(p.holding.Load()) }

// GuardTarget exposes the check that keeps devices off the host's loopback.
func GuardTarget(client netip.Addr, target netip.AddrPort) error {
	return guardTarget(client, outcome{target: target})
}

// Tunnels reports how many tunnels are open (the live registry).
func (p *Proxy) Tunnels() int { return p.live.len() }
