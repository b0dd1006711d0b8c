package dnsblock

import (
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/chaos-unicorn/unicorn/rules"
)

// CanaryDomain is the name Firefox asks before it turns on DNS over HTTPS
// by itself; a network that answers NXDOMAIN for it asks browsers to keep
// using the network's resolver (unicorn), so that the rules apply to them.
const CanaryDomain = "use-application-dns.net"

// canaryRule decides the canary domain, always, before any scenario.
var canaryRule = &rules.Rule{
	Scenario: "unicorn",
	Pos:      rules.Pos{File: "builtin:use-application-dns.net"},
	Action:   rules.ActionReject,
	Params:   rules.Params{RCode: rules.RCodeNXDomain},
}

// isCanary reports whether a question name (any case, with or without
// the trailing dot) is CanaryDomain itself.
func isCanary(name string) bool {
	name = strings.TrimSuffix(name, ".")
	return len(name) == len(CanaryDomain) && strings.EqualFold(name, CanaryDomain)
}

// OnBlocked registers fn, called for every question a rule blocks
// (reject, blackhole, sinkhole), with the client and the name as asked (a
// copy fn may keep). It is called on the query's path: it must not block.
// Router mode uses it to learn, with its own lookup, the addresses of
// blocked names, so that traffic to them by address is blocked too.
// Only one fn is kept; nil removes it.
func (s *Server) OnBlocked(fn func(client netip.Addr, name string, d rules.Decision)) {
	if fn == nil {
		s.onBlocked.Store(nil)
		return
	}
	s.onBlocked.Store(&fn)
}

// hooked applies the built-in answers and the OnBlocked hook to a
// decision for name from client.
func (s *Server) hooked(client netip.Addr, name string, d rules.Decision) rules.Decision {
	if isCanary(name) {
		return rules.Decision{Action: rules.ActionReject, Rule: canaryRule}
	}
	if d.Action.Blocking() {
		if fn := s.onBlocked.Load(); fn != nil {
			(*fn)(client, strings.Clone(name), d)
		}
	}
	return d
}

// blockedHook is the type of Server.onBlocked.
type blockedHook = atomic.Pointer[func(netip.Addr, string, rules.Decision)]
