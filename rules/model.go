package rules

import (
	"net/netip"
	"regexp"
)

// Set is everything loaded from a group of rule files: scenarios, the
// service catalogue they share, and named device groups. A Set is
// immutable once loaded; the Engine compiles the active part of it.
type Set struct {
	// Scenarios in load order (files in the order given, a directory's
	// files in name order).
	Scenarios []*Scenario
	// Services by name, from catalogue files and scenario files alike.
	Services map[string]*Service
	// Devices are named groups of client prefixes.
	Devices map[string][]netip.Prefix
	// Skipped counts lines of included lists that unicorn cannot express
	// at the network level (adblock exceptions, cosmetic rules, paths).
	Skipped int
}

// Scenario returns the scenario called name, or nil.
func (s *Set) Scenario(name string) *Scenario {
	for _, sc := range s.Scenarios {
		if sc.Name == name {
			return sc
		}
	}
	return nil
}

// Defaults returns the names of the scenarios that are active when none is
// named: every scenario not marked optional.
func (s *Set) Defaults() []string {
	var names []string
	for _, sc := range s.Scenarios {
		if !sc.Optional {
			names = append(names, sc.Name)
		}
	}
	return names
}

// Scenario is one named set of rules, applied in order: the first matching
// rule decides.
type Scenario struct {
	Name        string
	Description string
	// Optional scenarios are loaded but active only when named.
	Optional bool
	Pos      Pos
	Rules    []*Rule
}

// Services returns the names of the services the scenario's rules use, in
// rule order, each once.
func (sc *Scenario) Services() []string {
	var names []string
	seen := map[string]bool{}
	for _, r := range sc.Rules {
		if r.Service != "" && !seen[r.Service] {
			seen[r.Service] = true
			names = append(names, r.Service)
		}
	}
	return names
}

// Service is a named set of endpoints: what a rule matches. A flow matches a
// service when its name or address matches one of the selectors and, if the
// service lists ports, its port is one of them. A service with ports but
// no selectors matches any destination on those ports.
type Service struct {
	Name        string
	Description string
	Pos         Pos
	domains     nameList // suffix match: the name and all its subdomains
	hosts       nameList // exact match
	Regex       []*regexp.Regexp
	Prefixes    []netip.Prefix
	Ports       []PortRange
}

// Domains returns the service's domains (suffix match).
func (s *Service) Domains() []string { return s.domains.strings() }

// Hosts returns the service's exact host names.
func (s *Service) Hosts() []string { return s.hosts.strings() }

// NumNames is the number of domains and hosts, cheap for huge lists.
func (s *Service) NumNames() int { return s.domains.len() + s.hosts.len() }

// selective reports whether the service names any destination (by name or
// address); a service that does not matches by port alone.
func (s *Service) selective() bool {
	return s.domains.len() > 0 || s.hosts.len() > 0 || len(s.Regex) > 0 || len(s.Prefixes) > 0
}

func (s *Service) portMatch(port uint16, proto Proto) bool {
	if len(s.Ports) == 0 {
		return true
	}
	if port == 0 {
		// The layer has no port (a DNS question): names and addresses decide,
		// but a port-only service cannot match.
		return s.selective()
	}
	for _, r := range s.Ports {
		if r.contains(port, proto) {
			return true
		}
	}
	return false
}
