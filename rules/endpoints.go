package rules

import (
	"net/netip"
	"slices"
)

// Target returns what the rule matches: its service, or the inline one
// made of its own match fields; nil when the rule matches every flow.
// Front ends that compile rules into another form (router mode's
// firewall sets) read the names, prefixes and ports from it.
func (r *Rule) Target() *Service { return r.svc }

// Clients returns the device prefixes the rule is limited to (its
// clients:, device groups resolved); nil means every device.
func (r *Rule) Clients() []netip.Prefix { return slices.Clone(r.clients) }
